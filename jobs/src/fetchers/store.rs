//! The listing fetchers: a drop folder the channel (or an SFTP mirror) writes into, and a
//! prefix in an object store. Both list one folder, take the one file whose name matches the
//! day's pattern, and copy it.

use super::{expand, only_match, Fetched, Fetcher, Request};
use crate::config::Locator;
use crate::error::{Error, Result};
use crate::objstore::Location;

pub(crate) struct Listing {
    kind: &'static str,
    locator: Locator,
    what: String,
    location: String,
    pattern: String,
}

impl Listing {
    /// A local folder (`drop_folder`): a path or `file://`.
    pub(crate) fn drop_folder(
        locator: &Locator,
        what: &str,
        path: &str,
        pattern: &str,
    ) -> Result<Self> {
        if path.contains("://") && !path.starts_with("file://") {
            return Err(Error::Config(format!(
                "{what} = {path:?}: a drop folder is a local path; use kind = \"object_store\" for {path}"
            )));
        }
        Ok(Self::new("drop_folder", locator, what, path, pattern))
    }

    /// A prefix in an object store (`object_store`): `s3://bucket/prefix/` or `file://`.
    pub(crate) fn object_store(
        locator: &Locator,
        what: &str,
        url: &str,
        pattern: &str,
    ) -> Result<Self> {
        Ok(Self::new("object_store", locator, what, url, pattern))
    }

    fn new(
        kind: &'static str,
        locator: &Locator,
        what: &str,
        location: &str,
        pattern: &str,
    ) -> Self {
        Self {
            kind,
            locator: locator.clone(),
            what: what.to_string(),
            location: location.to_string(),
            pattern: pattern.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Fetcher for Listing {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn fetch(&self, req: &Request<'_>) -> Result<Fetched> {
        let location =
            Location::parse(&self.locator, &self.what, &expand(&self.location, req.date))?;
        let place = location.display();
        let wanted = expand(&self.pattern, req.date);
        let name =
            only_match(location.file_names().await?, &wanted, &place).map_err(|e| match e {
                Error::NotReady(m) => {
                    Error::NotReady(format!("no bill for {} {} yet: {m}", req.channel, req.date))
                }
                other => other,
            })?;
        location.copy_out(&name, &req.dir.join(&name)).await?;
        Ok(Fetched {
            source: format!("{}/{name}", place.trim_end_matches('/')),
            file: name,
            detail: serde_json::json!({}),
        })
    }
}
