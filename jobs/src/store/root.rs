//! The storage root as one object store: a local folder (a path or `file://`) or a prefix in
//! an S3-compatible bucket (`s3://bucket/prefix`), behind the same calls. Everything reckon
//! keeps goes through here: uploads stream from the local scratch area (multipart, in parts of
//! `[object_store] upload_part_mib`, 8 MiB by default, two in flight),
//! downloads stream to it, and the few small objects that coordinate runs (leases, the
//! committed pointer) are written with conditional puts.
//!
//! Conditional puts: on S3, `If-None-Match: *` to create and `If-Match: <etag>` to replace
//! (object_store's `PutMode::Create` and `PutMode::Update`). object_store's local file system
//! creates exclusively (a hard link) but cannot replace on a version, so a local replace takes
//! an exclusive `flock` on a sidecar `.<name>.lock`, compares the current version, then renames
//! the new content over: the same guarantee among processes of one host (a shared local root is
//! one host's, or a file system that honours `flock`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
};
use url::Url;

use crate::config::{Locator, ObjectStoreConfig};
use crate::error::{Error, IoContext, Result};

/// The version of an object a conditional put expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The entity tag.
    pub e_tag: Option<String>,
    /// The store's version id, where it keeps versions.
    pub version: Option<String>,
}

impl From<&object_store::ObjectMeta> for Version {
    fn from(m: &object_store::ObjectMeta) -> Self {
        Version {
            e_tag: m.e_tag.clone(),
            version: m.version.clone(),
        }
    }
}

/// What a conditional put expects to find.
#[derive(Debug, Clone)]
pub enum Expect {
    /// No object yet.
    Absent,
    /// The object at this version.
    At(Version),
}

/// The storage root.
#[derive(Debug, Clone)]
pub struct Root {
    store: Arc<dyn ObjectStore>,
    /// The root's prefix inside the store.
    prefix: ObjPath,
    /// What the engine registers the store under: `s3://bucket/`, or `file:///`.
    base: Url,
    /// A local root's folder.
    local: Option<PathBuf>,
    /// How uploads are cut into parts.
    upload: Upload,
}

/// How a streamed upload is cut: parts of `part` bytes, `concurrency` of them in flight.
#[derive(Debug, Clone, Copy)]
struct Upload {
    part: usize,
    concurrency: usize,
}

impl Upload {
    fn of(cfg: &ObjectStoreConfig) -> Upload {
        Upload {
            part: cfg.upload_part_mib.unwrap_or(8).max(5) << 20,
            concurrency: cfg.upload_concurrency.unwrap_or(2).max(1),
        }
    }
}

impl Root {
    /// The root `value` names (`what` names the setting in errors): `s3://bucket/prefix`,
    /// `file:///path`, or a path relative to the config's folder.
    pub fn parse(locator: &Locator, what: &str, value: &str) -> Result<Root> {
        if let Some((store, base, prefix)) = s3_location(locator, what, value)? {
            return Ok(Root {
                store,
                prefix,
                base,
                local: None,
                upload: Upload::of(&locator.object_store),
            });
        }
        let dir = locator.resolve(what, value).map_err(Error::Config)?;
        Root::local(&dir)
    }

    /// A root in the local folder `dir` (created when missing).
    pub fn local(dir: &Path) -> Result<Root> {
        std::fs::create_dir_all(dir).at(dir)?;
        let dir = std::fs::canonicalize(dir).at(dir)?;
        let prefix = ObjPath::from_absolute_path(&dir).map_err(|e| {
            Error::Config(format!(
                "storage root {}: not a usable path: {e}",
                dir.display()
            ))
        })?;
        Ok(Root {
            store: Arc::new(LocalFileSystem::new()),
            prefix,
            base: Url::parse("file:///").map_err(|e| Error::Other(e.to_string()))?,
            local: Some(dir),
            upload: Upload::of(&ObjectStoreConfig::default()),
        })
    }

    /// The root as a user writes it.
    pub fn display(&self) -> String {
        match &self.local {
            Some(d) => d.display().to_string(),
            None => format!("{}{}", self.base, self.prefix),
        }
    }

    /// The local folder of a local root.
    pub fn local_dir(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    /// The local path of `rel` on a local root.
    pub fn local_path(&self, rel: &str) -> Option<PathBuf> {
        self.local.as_ref().map(|d| d.join(rel))
    }

    /// The object store and the URL it is registered under, for an engine session.
    pub fn registration(&self) -> Option<(&Url, Arc<dyn ObjectStore>)> {
        self.local
            .is_none()
            .then(|| (&self.base, self.store.clone()))
    }

    /// The URL of `rel` for the engine (a folder's ends with `/`).
    pub fn url(&self, rel: &str) -> String {
        match &self.local {
            Some(d) => d.join(rel).display().to_string(),
            None => format!("{}{}", self.base, self.path(rel)),
        }
    }

    fn path(&self, rel: &str) -> ObjPath {
        let rel = rel.trim_matches('/');
        if rel.is_empty() {
            return self.prefix.clone();
        }
        rel.split('/')
            .fold(self.prefix.clone(), |p, part| p.join(part))
    }

    fn rel(&self, p: &ObjPath) -> String {
        p.prefix_match(&self.prefix)
            .map(|parts| {
                parts
                    .map(|x| x.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| p.to_string())
    }

    fn fail(&self, rel: &str, e: object_store::Error) -> Error {
        Error::Store {
            what: format!("{}/{rel}", self.display().trim_end_matches('/')),
            source: e,
        }
    }

    /// [`Root::fail`] for a write. A write answered "not found" means the bucket is not there
    /// (a write creates its object): a configuration error (exit 2) that says so.
    fn fail_write(&self, rel: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } if self.local.is_none() => no_bucket(
                &self.base,
                &format!("{}/{rel}", self.display().trim_end_matches('/')),
            ),
            e => self.fail(rel, e),
        }
    }

    /// The object `rel` with its version; `None` when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<(Bytes, Version)>> {
        match self.store.get(&self.path(rel)).await {
            Ok(r) => {
                let v = Version::from(&r.meta);
                let bytes = r.bytes().await.map_err(|e| self.fail(rel, e))?;
                Ok(Some((bytes, v)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// Whether `rel` exists.
    pub async fn exists(&self, rel: &str) -> Result<bool> {
        match self.store.head(&self.path(rel)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// Writes `bytes` to `rel` whole (a reader sees the old object or the new one).
    pub async fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&self.path(rel), PutPayload::from(bytes))
            .await
            .map_err(|e| self.fail_write(rel, e))?;
        Ok(())
    }

    /// Writes `bytes` to `rel` only if it is as `expect` says; `Ok(None)` when it is not (the
    /// object exists, or changed since that version). Returns the new version.
    pub async fn put_if(
        &self,
        rel: &str,
        bytes: Vec<u8>,
        expect: Expect,
    ) -> Result<Option<Version>> {
        let path = self.path(rel);
        if let (Some(_), Expect::At(v)) = (&self.local, &expect) {
            return self.local_replace(rel, bytes, v).await;
        }
        let mode = match expect {
            Expect::Absent => PutMode::Create,
            Expect::At(v) => PutMode::Update(UpdateVersion {
                e_tag: v.e_tag,
                version: v.version,
            }),
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(r) => Ok(Some(Version {
                e_tag: r.e_tag,
                version: r.version,
            })),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(self.fail_write(rel, e)),
        }
    }

    async fn local_replace(
        &self,
        rel: &str,
        bytes: Vec<u8>,
        v: &Version,
    ) -> Result<Option<Version>> {
        let file = self
            .local_path(rel)
            .ok_or_else(|| Error::Other(format!("{rel}: not a local root")))?;
        let lock_path = file.with_file_name(format!(
            ".{}.lock",
            file.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let lock = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .at(&lock_path)?;
            f.lock().at(&lock_path)?;
            Ok(f)
        })
        .await
        .map_err(|e| Error::Other(format!("lock: {e}")))??;
        let current = match self.store.head(&self.path(rel)).await {
            Ok(m) => Some(Version::from(&m)),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(self.fail(rel, e)),
        };
        let out = if current.as_ref() == Some(v) {
            let r = self
                .store
                .put(&self.path(rel), PutPayload::from(bytes))
                .await
                .map_err(|e| self.fail(rel, e))?;
            Some(Version {
                e_tag: r.e_tag,
                version: r.version,
            })
        } else {
            None
        };
        drop(lock);
        Ok(out)
    }

    /// Removes `rel` (nothing when it is not there).
    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// Every object below the folder `rel`, as paths relative to the root, in name order.
    pub async fn list(&self, rel: &str) -> Result<Vec<String>> {
        if let Some(d) = &self.local {
            if !d.join(rel).is_dir() {
                return Ok(Vec::new());
            }
        }
        let prefix = self.path(rel);
        let mut out: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| self.rel(&m.location))
            .try_collect()
            .await
            .map_err(|e| self.fail(rel, e))?;
        out.sort();
        Ok(out)
    }

    /// The names of the folders directly below the folder `rel` (one listing, not recursive).
    pub async fn folders(&self, rel: &str) -> Result<Vec<String>> {
        if let Some(d) = &self.local {
            if !d.join(rel).is_dir() {
                return Ok(Vec::new());
            }
        }
        let listed = self
            .store
            .list_with_delimiter(Some(&self.path(rel)))
            .await
            .map_err(|e| self.fail(rel, e))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(String::from))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Streams the local file `from` to `rel` (multipart past one part); a local root moves it
    /// with a rename when it can. Returns the size.
    pub async fn upload(&self, from: &Path, rel: &str) -> Result<u64> {
        let size = std::fs::metadata(from).at(from)?.len();
        if let Some(to) = self.local_path(rel) {
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).at(dir)?;
            }
            if std::fs::rename(from, &to).is_err() {
                // Another file system: copy aside, then rename into place.
                let aside = to.with_extension("reckon-upload");
                std::fs::copy(from, &aside).at(&aside)?;
                std::fs::rename(&aside, &to).at(&to)?;
            }
            return Ok(size);
        }
        let file = tokio::fs::File::open(from).await.at(from)?;
        self.upload_file(file, from, rel).await
    }

    /// Streams the open local file `file` (read from `from`, named in errors) to `rel` on an
    /// object store. Returns the size.
    pub async fn upload_file(
        &self,
        mut file: tokio::fs::File,
        from: &Path,
        rel: &str,
    ) -> Result<u64> {
        use tokio::io::AsyncReadExt;
        let mut size = 0u64;
        let mut sink = self.sink(rel);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await.at(from)?;
            if n == 0 {
                break;
            }
            sink.write(&buf[..n]).await?;
            size += n as u64;
        }
        sink.finish().await?;
        Ok(size)
    }

    /// The chunks of `rel`, streamed.
    async fn chunks(
        &self,
        rel: &str,
    ) -> Result<impl futures::Stream<Item = Result<Bytes>> + use<'_>> {
        let stream = self
            .store
            .get(&self.path(rel))
            .await
            .map_err(|e| self.fail(rel, e))?
            .into_stream();
        let rel = rel.to_string();
        Ok(stream.map_err(move |e| self.fail(&rel, e)))
    }

    /// A streamed upload to `rel` (multipart past one part; the object appears whole at the end).
    fn sink(&self, rel: &str) -> Sink {
        Sink {
            base: self.base.clone(),
            writer: object_store::buffered::BufWriter::with_capacity(
                self.store.clone(),
                self.path(rel),
                self.upload.part,
            )
            .with_max_concurrency(self.upload.concurrency),
            what: format!("{}/{rel}", self.display().trim_end_matches('/')),
        }
    }

    /// The hex SHA-256 and size of `rel`, read in a stream.
    pub async fn sha256(&self, rel: &str) -> Result<(String, u64)> {
        use sha2::Digest;
        let mut stream = std::pin::pin!(self.chunks(rel).await?);
        let mut h = sha2::Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            h.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok((hex::encode(h.finalize()), size))
    }

    /// Streams `rel` from this root to the same place on `to` (multipart past one part; a reader
    /// of `to` sees the whole object or none). Returns the SHA-256 of what was sent.
    pub async fn copy_to(&self, rel: &str, to: &Root) -> Result<String> {
        use sha2::Digest;
        let mut stream = std::pin::pin!(self.chunks(rel).await?);
        let mut sink = to.sink(rel);
        let mut h = sha2::Sha256::new();
        while let Some(chunk) = stream.try_next().await? {
            h.update(&chunk);
            sink.write(&chunk).await?;
        }
        sink.finish().await?;
        Ok(hex::encode(h.finalize()))
    }

    /// Copies `from` to `to` on this root, in the store (a server-side copy on S3): a reader of
    /// `to` sees the whole object or none.
    pub async fn copy(&self, from: &str, to: &str) -> Result<()> {
        if let Some(p) = self
            .local_path(to)
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_owned))
        {
            std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
        self.store
            .copy(&self.path(from), &self.path(to))
            .await
            .map_err(|e| self.fail_write(to, e))
    }

    /// The size of `rel`, `None` when it is not there.
    pub async fn size(&self, rel: &str) -> Result<Option<u64>> {
        match self.store.head(&self.path(rel)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// Streams `rel` to the local file `to`; returns its size.
    pub async fn download(&self, rel: &str, to: &Path) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let mut stream = std::pin::pin!(self.chunks(rel).await?);
        let mut out = tokio::fs::File::create(to).await.at(to)?;
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            out.write_all(&chunk).await.at(to)?;
            size += chunk.len() as u64;
        }
        out.flush().await.at(to)?;
        Ok(size)
    }
}

/// A streamed upload: its errors name the object.
struct Sink {
    /// The store's URL (`s3://bucket/`).
    base: Url,
    writer: object_store::buffered::BufWriter,
    what: String,
}

impl Sink {
    /// The store's own error where the writer carries one (its kind decides exit code and
    /// retry: a refused upload is not retried), else the I/O error as a generic one.
    fn failed(&self, e: std::io::Error) -> Error {
        let generic = |source| object_store::Error::Generic {
            store: "upload",
            source,
        };
        let source = match e.get_ref().is_some_and(|i| i.is::<object_store::Error>()) {
            true => match e.into_inner().map(|i| i.downcast::<object_store::Error>()) {
                Some(Ok(inner)) => *inner,
                Some(Err(other)) => generic(other),
                None => generic("the upload failed".into()),
            },
            false => generic(Box::new(e)),
        };
        match source {
            object_store::Error::NotFound { .. } => no_bucket(&self.base, &self.what),
            source => Error::Store {
                what: self.what.clone(),
                source,
            },
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let written = tokio::io::AsyncWriteExt::write_all(&mut self.writer, bytes).await;
        written.map_err(|e| self.failed(e))
    }

    async fn finish(mut self) -> Result<()> {
        let done = tokio::io::AsyncWriteExt::shutdown(&mut self.writer).await;
        done.map_err(|e| self.failed(e))
    }
}

/// The error of a write to `what` in the store at `base` answered "not found".
fn no_bucket(base: &Url, what: &str) -> Error {
    let bucket = base.host_str().unwrap_or_default();
    Error::Config(format!(
        "{what}: the bucket {bucket:?} does not exist (the write was answered \"not found\"); \
         create it, or correct the setting that names {base}"
    ))
}

/// An S3 location: its store, the URL the store is registered under (`s3://bucket/`), and
/// the prefix inside the bucket.
pub type S3Location = (Arc<dyn ObjectStore>, Url, ObjPath);

/// An `s3://bucket/prefix` setting (`what` names it in errors) as an [`S3Location`]; `None`
/// for any other value.
pub fn s3_location(locator: &Locator, what: &str, value: &str) -> Result<Option<S3Location>> {
    if !value.starts_with("s3://") {
        return Ok(None);
    }
    let bad = |e: &dyn std::fmt::Display| Error::Config(format!("{what} = {value:?}: {e}"));
    let url = Url::parse(value).map_err(|e| bad(&e))?;
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad(&"no bucket"))?;
    let store = s3_store(&locator.object_store, bucket).map_err(|e| bad(&e))?;
    let base = Url::parse(&format!("s3://{bucket}/")).map_err(|e| bad(&e))?;
    Ok(Some((
        store,
        base,
        ObjPath::from(url.path().trim_matches('/')),
    )))
}

/// An S3 store for `bucket`: the config's settings over the `AWS_*` environment, with
/// object_store's retries (5xx, 429, timeouts and broken connections, with backoff).
pub fn s3_store(
    cfg: &ObjectStoreConfig,
    bucket: &str,
) -> std::result::Result<Arc<dyn ObjectStore>, String> {
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(RetryConfig {
            max_retries: cfg.max_retries.unwrap_or(10),
            retry_timeout: Duration::from_secs(cfg.retry_timeout_secs.unwrap_or(180)),
            ..Default::default()
        });
    if let Some(t) = cfg.timeout_secs {
        // Only the timeout: the other client options (allow_http from AWS_ALLOW_HTTP, …) stay.
        b = b.with_config(
            object_store::aws::AmazonS3ConfigKey::Client(object_store::ClientConfigKey::Timeout),
            format!("{}s", t.max(1)),
        );
    }
    if let Some(e) = &cfg.endpoint {
        b = b.with_endpoint(e);
    }
    if let Some(r) = &cfg.region {
        b = b.with_region(r);
    }
    if cfg.allow_http {
        b = b.with_allow_http(true);
    }
    // As the AWS SDKs do: the body's SHA-256 is signed over plain HTTP only.
    let https = cfg
        .endpoint
        .as_deref()
        .is_none_or(|e| e.starts_with("https://"));
    if let Some(unsigned) = cfg.unsigned_payload.or(https.then_some(true)) {
        b = b.with_unsigned_payload(unsigned);
    }
    Ok(Arc::new(b.build().map_err(|e| e.to_string())?))
}
