//! Who may use the desk: the users file (argon2 password hashes and roles), the API tokens
//! file (SHA-256 of each token, never the token), and the reverse proxy's trusted header.
//! Both files are plain text, one entry per line, `#` comments, so an operator can read and
//! diff them; reckon writes them with `reckon desk user add` and `reckon desk token add`.
//!
//! ```text
//! # desk-users: name:role:hash (an empty hash: the user logs in through the proxy only)
//! alice:resolver:$argon2id$v=19$m=19456,t=2,p=1$…
//! bob:approver:
//! # desk-tokens: name:role:sha256 of the token
//! nightly-export:viewer:9f86d081884c7d65…
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{Role, User};
use crate::error::{Error, Result};

/// The users file beside the config, when `[desk] users` is not set.
pub const DEFAULT_USERS: &str = "desk-users";
/// The tokens file beside the config, when `[desk] tokens` is not set.
pub const DEFAULT_TOKENS: &str = "desk-tokens";
/// The header a trusted proxy names its user in, when `[desk] proxy_header` is not set.
pub const DEFAULT_PROXY_HEADER: &str = "x-forwarded-user";

/// Every API token starts with this, so a leaked one is easy to find in a repository scan.
const TOKEN_PREFIX: &str = "reckon_";

/// One line of the users file.
#[derive(Debug, Clone)]
struct Account {
    role: Role,
    /// A PHC string (`$argon2id$…`); None: no password login.
    hash: Option<String>,
}

/// The desk's users, tokens and trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct Access {
    users: HashMap<String, Account>,
    /// By the hex SHA-256 of the token.
    tokens: HashMap<String, User>,
    proxies: Vec<IpAddr>,
    proxy_header: String,
}

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A login session (a cookie).
    Session,
    /// An API token (`Authorization: Bearer …`).
    Token,
    /// The header of a trusted reverse proxy.
    Proxy,
}

fn read_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim().to_string()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::Other(format!("{}: {e}", path.display()))),
    }
}

/// `name:role:rest` of line `n` of `path`.
fn fields(path: &Path, n: usize, line: &str) -> Result<(String, Role, String)> {
    let bad = |why: String| Error::Other(format!("{}:{n}: {why}", path.display()));
    let mut parts = line.splitn(3, ':');
    let (Some(name), Some(role), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected name:role:hash".into()));
    };
    if name.is_empty() {
        return Err(bad("an empty user name".into()));
    }
    let role = role.parse::<Role>().map_err(bad)?;
    Ok((name.to_string(), role, rest.to_string()))
}

impl Access {
    /// Reads the users and tokens files (a missing file: nobody), and the proxy settings.
    pub fn load(
        users: &Path,
        tokens: &Path,
        proxies: Vec<IpAddr>,
        proxy_header: &str,
    ) -> Result<Access> {
        let mut access = Access {
            proxies,
            proxy_header: proxy_header.to_ascii_lowercase(),
            ..Access::default()
        };
        for (n, line) in read_lines(users)? {
            let (name, role, hash) = fields(users, n, &line)?;
            let hash = (!hash.is_empty()).then_some(hash);
            if let Some(h) = &hash {
                PasswordHash::new(h).map_err(|e| {
                    Error::Other(format!(
                        "{}:{n}: the hash of {name:?} is not a PHC string: {e}",
                        users.display()
                    ))
                })?;
            }
            if access
                .users
                .insert(name.clone(), Account { role, hash })
                .is_some()
            {
                return Err(Error::Other(format!(
                    "{}:{n}: user {name:?} is listed twice",
                    users.display()
                )));
            }
        }
        for (n, line) in read_lines(tokens)? {
            let (name, role, sha) = fields(tokens, n, &line)?;
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Other(format!(
                    "{}:{n}: expected the token's SHA-256 in hex",
                    tokens.display()
                )));
            }
            access
                .tokens
                .insert(sha.to_ascii_lowercase(), User { name, role });
        }
        Ok(access)
    }

    /// The user whose password this is (argon2 verification; slow on purpose: call it off
    /// the request threads). None for an unknown user, a proxy-only user or a wrong password,
    /// alike.
    pub fn login(&self, name: &str, password: &str) -> Option<User> {
        let account = self.users.get(name)?;
        let hash = PasswordHash::new(account.hash.as_deref()?).ok()?;
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .ok()?;
        Some(User {
            name: name.to_string(),
            role: account.role,
        })
    }

    /// The user an API token belongs to.
    pub fn token(&self, token: &str) -> Option<User> {
        self.tokens.get(&token_sha(token)).cloned()
    }

    /// The user a proxy named in `header`, when the request came from a trusted proxy and the
    /// user is in the users file; None otherwise (a header from anywhere else is ignored).
    pub fn proxied(&self, peer: IpAddr, header: Option<&str>) -> Option<User> {
        let name = header.map(str::trim).filter(|n| !n.is_empty())?;
        if !self.proxies.contains(&peer) {
            return None;
        }
        let account = self.users.get(name)?;
        Some(User {
            name: name.to_string(),
            role: account.role,
        })
    }

    /// The header name a trusted proxy sets (lower case).
    pub fn proxy_header(&self) -> &str {
        &self.proxy_header
    }

    /// Whether anyone can log in at all (a desk without users serves nobody).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.tokens.is_empty()
    }
}

/// The hex SHA-256 of a token, as the tokens file keeps it.
fn token_sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// A fresh random secret of 32 bytes, hex.
pub fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The argon2id hash (PHC string, default parameters) of a password.
pub fn hash_password(password: &str) -> Result<String> {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let salt = SaltString::encode_b64(&bytes)
        .map_err(|e| Error::Other(format!("a password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Other(format!("hashing the password: {e}")))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains([':', '\n', '\r']) || name.trim() != name {
        return Err(Error::Other(format!(
            "user name {name:?}: not empty, no ':' or line breaks, no spaces around it"
        )));
    }
    Ok(())
}

/// Replaces `name`'s line in `path` (or appends it), keeping every other line as it was.
fn put_line(path: &Path, name: &str, line: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::Other(format!("{}: {e}", path.display()))),
    };
    let prefix = format!("{name}:");
    let mut lines: Vec<&str> = old.lines().filter(|l| !l.starts_with(&prefix)).collect();
    lines.push(line);
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, lines.join("\n") + "\n")
        .and_then(|()| restrict(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

/// Readable by its owner only: the hashes are not secrets, but they need not be public.
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Adds or replaces a user (`password` None: proxy login only).
pub fn add_user(path: &Path, name: &str, role: Role, password: Option<&str>) -> Result<()> {
    check_name(name)?;
    let hash = password.map(hash_password).transpose()?.unwrap_or_default();
    put_line(path, name, &format!("{name}:{}:{hash}", role.name()))
}

/// Makes a token for `name` with `role`, keeps its SHA-256 in `path`, and returns the token
/// (shown once: reckon keeps no copy).
pub fn add_token(path: &Path, name: &str, role: Role) -> Result<String> {
    check_name(name)?;
    let token = format!("{TOKEN_PREFIX}{}", secret());
    put_line(
        path,
        name,
        &format!("{name}:{}:{}", role.name(), token_sha(&token)),
    )?;
    Ok(token)
}

/// `value` (a setting) as a path: relative ones to the config's folder; `default` when unset.
pub fn beside(base: &Path, value: Option<&str>, default: &str) -> PathBuf {
    base.join(value.unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_tokens_and_the_proxy_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (users, tokens) = (dir.path().join("u"), dir.path().join("t"));
        add_user(&users, "alice", Role::Resolver, Some("correct horse")).expect("alice");
        add_user(&users, "bob", Role::Approver, None).expect("bob");
        add_user(&users, "alice", Role::Approver, Some("battery staple")).expect("again");
        let token = add_token(&tokens, "script", Role::Viewer).expect("token");
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let a = Access::load(&users, &tokens, vec![proxy], "X-Remote-User").expect("load");

        let alice = a.login("alice", "battery staple").expect("alice logs in");
        assert_eq!(
            alice.role,
            Role::Approver,
            "the second add replaced the first"
        );
        assert!(a.login("alice", "correct horse").is_none());
        assert!(a.login("bob", "").is_none(), "bob has no password");
        assert!(a.login("carol", "x").is_none());

        assert_eq!(a.token(&token).map(|u| u.name), Some("script".into()));
        assert!(a.token("reckon_00").is_none());
        let kept = std::fs::read_to_string(&tokens).expect("tokens");
        assert!(
            !kept.contains(&token),
            "the file keeps a hash, not the token"
        );

        let elsewhere: IpAddr = "10.0.0.6".parse().expect("ip");
        assert_eq!(
            a.proxied(proxy, Some("bob")).map(|u| u.role),
            Some(Role::Approver)
        );
        assert!(a.proxied(elsewhere, Some("bob")).is_none());
        assert!(a.proxied(proxy, Some("mallory")).is_none());
        assert_eq!(a.proxy_header(), "x-remote-user");

        std::fs::write(&users, "alice:chief:\n").expect("write");
        let e = Access::load(&users, &tokens, vec![], "h").expect_err("bad role");
        assert!(e.to_string().contains(":1: unknown role"), "{e}");
    }
}
