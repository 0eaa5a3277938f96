//! Signed commits: with `[signing]`, the report signs each day's `committed.json` with an
//! Ed25519 key (ring), and `reckon verify` checks it against the configured public key (never
//! against the key the pointer names: anyone could sign with a key of their own).
//!
//! What is signed: the pointer as a JSON value without its `signature` field, written compact
//! by serde_json; the check parses what it read and writes it the same way.
//! Keys: a PKCS#8 Ed25519 private key (`openssl genpkey -algorithm ed25519`), an SPKI public
//! key (`openssl pkey -pubout`), PEM or bare base64, from a variable or a file; never logged.

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::config::{Locator, SigningConfig};
use crate::error::{Error, Result};
use crate::fetchers::keys::{blocks, Secret};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A pointer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's public key (raw 32 bytes, base64): which key signed, for people.
    pub public_key: String,
    /// The signature (base64).
    pub value: String,
}

/// The key that signs.
pub struct Signer(Ed25519KeyPair);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

/// The key that checks.
#[derive(Debug, Clone)]
pub struct Verifier(Vec<u8>);

fn ed25519_private(secret: &Secret, what: &str) -> Result<Ed25519KeyPair> {
    let found = blocks(secret.expose()).map_err(|e| Error::Config(format!("{what}: {e}")))?;
    for b in &found {
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&b.der) {
            return Ok(k);
        }
    }
    let labels: Vec<&str> = found.iter().map(|b| b.label.as_str()).collect();
    Err(Error::Config(format!(
        "{what}: not an Ed25519 private key in PKCS#8 (found {}); make one with `openssl genpkey -algorithm ed25519`",
        if labels.iter().all(|l| l.is_empty()) {
            "base64 that is not one".to_string()
        } else {
            labels.join(", ")
        }
    )))
}

fn ed25519_public(secret: &Secret, what: &str) -> Result<Vec<u8>> {
    let found = blocks(secret.expose()).map_err(|e| Error::Config(format!("{what}: {e}")))?;
    for b in &found {
        if b.der.len() == 44 && b.der[..12] == SPKI_PREFIX {
            return Ok(b.der[12..].to_vec());
        }
        if b.der.len() == 32 && b.label.is_empty() {
            return Ok(b.der.clone());
        }
    }
    Err(Error::Config(format!(
        "{what}: not an Ed25519 public key (SPKI, `openssl pkey -pubout`)"
    )))
}

impl Signer {
    /// The signer `[signing]` names, if it names a private key.
    pub fn of(cfg: Option<&SigningConfig>, locator: &Locator) -> Result<Option<Signer>> {
        let Some(cfg) = cfg.filter(|c| c.private_key_env.is_some() || c.private_key_file.is_some())
        else {
            return Ok(None);
        };
        let what = "signing.private_key";
        let secret = Secret::load(locator, what, &cfg.private_key_env, &cfg.private_key_file)?;
        Ok(Some(Signer(ed25519_private(&secret, what)?)))
    }

    /// Signs `body` (the canonical bytes).
    pub fn sign(&self, body: &[u8]) -> Signature {
        Signature {
            algorithm: "ed25519".into(),
            public_key: B64.encode(self.0.public_key().as_ref()),
            value: B64.encode(self.0.sign(body).as_ref()),
        }
    }

    /// Its public half.
    pub fn verifier(&self) -> Verifier {
        Verifier(self.0.public_key().as_ref().to_vec())
    }
}

impl Verifier {
    /// The key `[signing]` checks with: its public key, else the public half of its private
    /// key; `None` without `[signing]`.
    pub fn of(cfg: Option<&SigningConfig>, locator: &Locator) -> Result<Option<Verifier>> {
        let Some(cfg) = cfg else {
            return Ok(None);
        };
        if cfg.public_key_env.is_some() || cfg.public_key_file.is_some() {
            let what = "signing.public_key";
            let secret = Secret::load(locator, what, &cfg.public_key_env, &cfg.public_key_file)?;
            return Ok(Some(Verifier(ed25519_public(&secret, what)?)));
        }
        Ok(Signer::of(Some(cfg), locator)?.map(|s| s.verifier()))
    }

    /// Whether `sig` signs `body` with this key.
    pub fn check(&self, body: &[u8], sig: &Signature) -> std::result::Result<(), String> {
        if sig.algorithm != "ed25519" {
            return Err(format!("signed with {:?}, not ed25519", sig.algorithm));
        }
        let value = B64
            .decode(&sig.value)
            .map_err(|_| "the signature is not base64".to_string())?;
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(body, &value)
            .map_err(|_| {
                if B64.encode(&self.0) == sig.public_key {
                    "the signature does not match the pointer's content (it was changed after signing)".to_string()
                } else {
                    format!(
                        "signed by another key ({}) than the configured one ({})",
                        sig.public_key,
                        B64.encode(&self.0)
                    )
                }
            })
    }
}

/// The canonical bytes of a pointer without its signature (what is signed).
pub fn canonical(pointer: &serde_json::Value) -> Result<Vec<u8>> {
    let mut v = pointer.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("signature");
    }
    Ok(serde_json::to_vec(&v)?)
}
