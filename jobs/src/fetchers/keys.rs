//! Secrets and RSA keys for the signed channel APIs: loaded from the variable or file the
//! configuration names, parsed once (PEM, or the bare base64 Alipay's key tool gives), and
//! never printed: `Debug` shows `[redacted]`.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};

use crate::config::Config;
use crate::error::{Error, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A secret's text; shown nowhere.
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Secret {
    /// The secret named by `env` (a variable) or `file` (a path, relative to the config's
    /// folder); exactly one must be set. `what` names the setting in errors.
    pub fn load(
        config: &Config,
        what: &str,
        env: &Option<String>,
        file: &Option<String>,
    ) -> Result<Secret> {
        match (env, file) {
            (Some(var), None) => Self::from_env(what, var),
            (None, Some(path)) => {
                let p = config
                    .resolve(&format!("{what}_file"), path)
                    .map_err(Error::Config)?;
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    Error::Config(format!("{what}_file = {path:?}: {}: {e}", p.display()))
                })?;
                Ok(Secret(text))
            }
            (Some(_), Some(_)) => Err(Error::Config(format!(
                "{what}: set {what}_env or {what}_file, not both"
            ))),
            (None, None) => Err(Error::Config(format!(
                "{what}: set {what}_env (a variable holding it) or {what}_file"
            ))),
        }
    }

    /// The secret in variable `var`; its absence names the setting and the variable.
    pub fn from_env(what: &str, var: &str) -> Result<Secret> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret(v)),
            _ => Err(Error::Config(format!(
                "{what}: the variable {var} is not set (it must hold the secret)"
            ))),
        }
    }

    /// The text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The first PEM section of `text` whose kind is one of `kinds`: `Ok(None)` when there is
/// none, `Err` with the PEM error when the text does not parse.
fn pem_section(
    text: &str,
    kinds: &[SectionKind],
) -> std::result::Result<Option<(SectionKind, Vec<u8>)>, String> {
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(text.as_bytes()) {
        let (kind, der) = item.map_err(|e| format!("PEM: {e}"))?;
        if kinds.contains(&kind) {
            return Ok(Some((kind, der)));
        }
    }
    Ok(None)
}

/// Bare base64 (whitespace ignored), as Alipay's key tool writes keys.
fn bare_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.split_whitespace().collect();
    B64.decode(compact).ok()
}

/// An RSA private key that signs SHA256withRSA (PKCS#1 v1.5).
pub struct PrivateKey(RsaKeyPair);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

impl PrivateKey {
    /// The key in the variable `env` or the file `file` (see [`Secret::load`]), parsed.
    pub fn load(
        config: &Config,
        what: &str,
        env: &Option<String>,
        file: &Option<String>,
    ) -> Result<PrivateKey> {
        Self::parse(&Secret::load(config, what, env, file)?, what)
    }

    /// Parses PEM (`PRIVATE KEY` PKCS#8 or `RSA PRIVATE KEY` PKCS#1) or bare base64 of either.
    pub fn parse(secret: &Secret, what: &str) -> Result<PrivateKey> {
        let text = secret.expose();
        let bad = |why: &str| {
            Error::Config(format!(
                "{what}: not an RSA private key ({why}); expected PEM (PKCS#8 or PKCS#1) or bare base64"
            ))
        };
        let pair = if text.contains("-----BEGIN") {
            match pem_section(text, &[SectionKind::PrivateKey, SectionKind::RsaPrivateKey])
                .map_err(|e| bad(&e))?
            {
                Some((SectionKind::PrivateKey, der)) => RsaKeyPair::from_pkcs8(&der),
                Some((_, der)) => RsaKeyPair::from_der(&der),
                None => return Err(bad("no PRIVATE KEY section")),
            }
            .map_err(|e| bad(&e.to_string()))?
        } else {
            let der = bare_base64(text).ok_or_else(|| bad("not base64"))?;
            RsaKeyPair::from_pkcs8(&der)
                .or_else(|_| RsaKeyPair::from_der(&der))
                .map_err(|e| bad(&e.to_string()))?
        };
        Ok(PrivateKey(pair))
    }

    /// The base64 SHA256withRSA signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<String> {
        let mut sig = vec![0u8; self.0.public().modulus_len()];
        self.0
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
            .map_err(|_| Error::Other("signing the request failed".into()))?;
        Ok(B64.encode(sig))
    }
}

/// A channel's public key that verifies its answers: a bare public key (SPKI) or a certificate.
#[derive(Debug)]
pub enum PublicKey {
    /// DER of a SubjectPublicKeyInfo.
    Spki(Vec<u8>),
    /// DER of an X.509 certificate.
    Certificate(Vec<u8>),
}

impl PublicKey {
    /// The key in the variable `env` or the file `file` (see [`Secret::load`]), parsed.
    pub fn load(
        config: &Config,
        what: &str,
        env: &Option<String>,
        file: &Option<String>,
    ) -> Result<PublicKey> {
        Self::parse(&Secret::load(config, what, env, file)?, what)
    }

    /// Parses PEM (`PUBLIC KEY` or `CERTIFICATE`) or bare base64 of either.
    pub fn parse(secret: &Secret, what: &str) -> Result<PublicKey> {
        let text = secret.expose();
        let bad = |why: &str| {
            Error::Config(format!(
                "{what}: not an RSA public key or certificate ({why}); expected PEM or bare base64"
            ))
        };
        let key = if text.contains("-----BEGIN") {
            match pem_section(text, &[SectionKind::PublicKey, SectionKind::Certificate])
                .map_err(|e| bad(&e))?
            {
                Some((SectionKind::PublicKey, der)) => PublicKey::Spki(der),
                Some((_, der)) => PublicKey::Certificate(der),
                None => return Err(bad("no PUBLIC KEY or CERTIFICATE section")),
            }
        } else {
            let der = bare_base64(text).ok_or_else(|| bad("not base64"))?;
            let cert = CertificateDer::from(der.as_slice());
            if webpki::EndEntityCert::try_from(&cert).is_ok() {
                PublicKey::Certificate(der)
            } else {
                PublicKey::Spki(der)
            }
        };
        // Fail now, naming the setting, rather than at the first answer.
        key.check().map_err(|e| bad(&e))?;
        Ok(key)
    }

    fn check(&self) -> std::result::Result<(), String> {
        match self {
            PublicKey::Spki(der) => {
                let spki = SubjectPublicKeyInfoDer::from(der.as_slice());
                webpki::RawPublicKeyEntity::try_from(&spki)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            PublicKey::Certificate(der) => {
                let cert = CertificateDer::from(der.as_slice());
                webpki::EndEntityCert::try_from(&cert)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Whether `sig_b64` is a valid SHA256withRSA signature of `msg` by this key.
    pub fn verifies(&self, msg: &[u8], sig_b64: &str) -> bool {
        let Ok(sig) = B64.decode(sig_b64.trim()) else {
            return false;
        };
        let alg = webpki::ring::RSA_PKCS1_2048_8192_SHA256;
        match self {
            PublicKey::Spki(der) => {
                let spki = SubjectPublicKeyInfoDer::from(der.as_slice());
                webpki::RawPublicKeyEntity::try_from(&spki)
                    .is_ok_and(|k| k.verify_signature(alg, msg, &sig).is_ok())
            }
            PublicKey::Certificate(der) => {
                let cert = CertificateDer::from(der.as_slice());
                webpki::EndEntityCert::try_from(&cert)
                    .is_ok_and(|c| c.verify_signature(alg, msg, &sig).is_ok())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
    }

    #[test]
    fn keys_that_do_not_parse_name_the_setting() {
        let e = PrivateKey::parse(&Secret("not a key".into()), "channel x source.private_key")
            .expect_err("bad key");
        assert!(e.to_string().contains("source.private_key"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = PublicKey::parse(
            &Secret("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into()),
            "channel x source.platform_key",
        )
        .expect_err("bad key");
        assert!(e.to_string().contains("source.platform_key"), "{e}");
    }
}
