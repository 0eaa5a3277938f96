//! Secrets and RSA keys for the signed channel APIs: loaded from the variable or file the
//! configuration names, parsed once (PEM, or the bare base64 Alipay's key tool gives), and
//! never printed: `Debug` shows `[redacted]`. Every valid RSA key form is taken (PKCS#1 and
//! PKCS#8 private keys, PKCS#1 and SPKI public keys, certificates), on the `rsa` crate: it
//! checks a key by its arithmetic, so keys whose primes differ in length (python-rsa's
//! `newkeys`, some HSM exports) load as OpenSSL loads them.

use base64::Engine as _;
use rsa::pkcs1v15::{SigningKey, VerifyingKey};
use rsa::pkcs8::ObjectIdentifier;
use rsa::sha2::Sha256;
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use rustls_pki_types::CertificateDer;

use crate::config::Locator;
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
    /// A secret already in memory (from a vault client, or a test).
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    /// The secret named by `env` (a variable) or `file` (a path, relative to the config's
    /// folder); exactly one must be set. `what` names the setting in errors.
    pub fn load(
        locator: &Locator,
        what: &str,
        env: &Option<String>,
        file: &Option<String>,
    ) -> Result<Secret> {
        match (env, file) {
            (Some(var), None) => Self::from_env(what, var),
            (None, Some(path)) => {
                let p = locator
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

/// One block of key material: its PEM label (empty for bare base64) and its DER.
pub(crate) struct Block {
    pub(crate) label: String,
    pub(crate) der: Vec<u8>,
}

/// The blocks of `text`: every PEM section in it, or the whole text as bare base64 (as
/// Alipay's key tool writes keys). Errors say what is wrong with the text, never its content.
pub(crate) fn blocks(text: &str) -> std::result::Result<Vec<Block>, String> {
    if !text.contains("-----BEGIN ") {
        let compact: String = text.split_whitespace().collect();
        return B64
            .decode(compact)
            .map(|der| {
                vec![Block {
                    label: String::new(),
                    der,
                }]
            })
            .map_err(|_| "neither PEM nor base64".into());
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("-----BEGIN ") {
        let section = &rest[at..];
        let label_end = section["-----BEGIN ".len()..]
            .find("-----")
            .ok_or("a PEM BEGIN line without its closing dashes")?;
        let label = &section["-----BEGIN ".len().."-----BEGIN ".len() + label_end];
        let end_line = format!("-----END {label}-----");
        let end = section
            .find(&end_line)
            .ok_or_else(|| format!("a PEM \"{label}\" section without its END line"))?;
        let pem = &section[..end + end_line.len()];
        let (_, der) = rsa::pkcs8::der::pem::decode_vec(pem.as_bytes())
            .map_err(|e| format!("the PEM \"{label}\" section does not decode: {e}"))?;
        out.push(Block {
            label: label.to_string(),
            der,
        });
        rest = &section[end + end_line.len()..];
    }
    Ok(out)
}

/// What a block of key material holds.
enum KeyMaterial {
    Private(Box<RsaPrivateKey>),
    Public(RsaPublicKey),
    /// Anything else, described for the error ("an EC private key (PKCS#8)").
    Other(String),
}

/// The name of a key algorithm's object identifier, for errors.
fn algorithm_name(oid: &ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA".into(),
        "1.2.840.10045.2.1" => "EC (id-ecPublicKey; SM2 keys use it too)".into(),
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        "1.2.156.10197.1.301" => "SM2".into(),
        other => format!("OID {other}"),
    }
}

/// Classifies one block by its content (its label only where the DER cannot tell).
fn classify(block: &Block) -> KeyMaterial {
    use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
    let der = block.der.as_slice();
    if block.label == "ENCRYPTED PRIVATE KEY" {
        return KeyMaterial::Other(
            "an encrypted PKCS#8 private key (decrypt it first: openssl pkcs8 -in KEY -out PLAIN)"
                .into(),
        );
    }
    if let Ok(info) = rsa::pkcs8::PrivateKeyInfo::try_from(der) {
        if info.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
            return KeyMaterial::Other(format!(
                "a PKCS#8 private key of algorithm {}, not RSA",
                algorithm_name(&info.algorithm.oid)
            ));
        }
        return match RsaPrivateKey::try_from(info) {
            Ok(k) => KeyMaterial::Private(Box::new(k)),
            Err(e) => KeyMaterial::Other(format!(
                "a PKCS#8 RSA private key whose numbers do not make a valid key ({e})"
            )),
        };
    }
    if rsa::pkcs1::RsaPrivateKey::try_from(der).is_ok() {
        return match RsaPrivateKey::from_pkcs1_der(der) {
            Ok(k) => KeyMaterial::Private(Box::new(k)),
            Err(e) => KeyMaterial::Other(format!(
                "a PKCS#1 RSA private key whose numbers do not make a valid key ({e})"
            )),
        };
    }
    if let Ok(spki) = rsa::pkcs8::spki::SubjectPublicKeyInfoRef::try_from(der) {
        if spki.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
            return KeyMaterial::Other(format!(
                "a public key of algorithm {}, not RSA",
                algorithm_name(&spki.algorithm.oid)
            ));
        }
        return match RsaPublicKey::try_from(spki) {
            Ok(k) => KeyMaterial::Public(k),
            Err(e) => KeyMaterial::Other(format!(
                "an RSA public key (SPKI) that does not parse ({e})"
            )),
        };
    }
    if let Ok(k) = RsaPublicKey::from_pkcs1_der(der) {
        return KeyMaterial::Public(k);
    }
    let cert = CertificateDer::from(der);
    if let Ok(c) = webpki::EndEntityCert::try_from(&cert) {
        let spki = c.subject_public_key_info();
        return match classify(&Block {
            label: String::new(),
            der: spki.as_ref().to_vec(),
        }) {
            KeyMaterial::Public(k) => KeyMaterial::Public(k),
            KeyMaterial::Other(what) => {
                KeyMaterial::Other(format!("an X.509 certificate holding {what}"))
            }
            KeyMaterial::Private(_) => KeyMaterial::Other("an X.509 certificate".into()),
        };
    }
    match block.label.as_str() {
        "EC PRIVATE KEY" => KeyMaterial::Other("an EC private key (SEC1), not RSA".into()),
        "" => KeyMaterial::Other(
            "base64 of something that is no key, certificate or key form reckon knows".into(),
        ),
        label => KeyMaterial::Other(format!(
            "a PEM \"{label}\" section that is no RSA key or certificate"
        )),
    }
}

/// The first block of `secret` that `pick` takes; else a configuration error naming the
/// setting `what`, what each block was instead, and what the setting `wanted`.
fn first_key<T>(
    secret: &Secret,
    what: &str,
    wanted: &str,
    pick: impl Fn(KeyMaterial) -> std::result::Result<T, String>,
) -> Result<T> {
    let found =
        blocks(secret.expose()).map_err(|e| Error::Config(format!("{what}: {e}; {wanted}")))?;
    let mut seen = Vec::new();
    for b in &found {
        match pick(classify(b)) {
            Ok(key) => return Ok(key),
            Err(instead) => seen.push(instead),
        }
    }
    let seen = if seen.is_empty() {
        "nothing".to_string()
    } else {
        seen.join(", then ")
    };
    Err(Error::Config(format!("{what}: found {seen}; {wanted}")))
}

/// The bits of a key's modulus, for descriptions.
fn bits(k: &impl PublicKeyParts) -> usize {
    k.n().bits()
}

/// An RSA private key that signs SHA256withRSA (RSASSA-PKCS1-v1_5). Any valid RSA key is taken:
/// PKCS#1 or PKCS#8, PEM or bare base64, primes of any lengths.
pub struct PrivateKey(SigningKey<Sha256>);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

impl PrivateKey {
    /// The key in the variable `env` or the file `file` (see [`Secret::load`]), parsed.
    pub fn load(
        locator: &Locator,
        what: &str,
        env: &Option<String>,
        file: &Option<String>,
    ) -> Result<PrivateKey> {
        Self::parse(&Secret::load(locator, what, env, file)?, what)
    }

    /// Parses PEM (`PRIVATE KEY` PKCS#8 or `RSA PRIVATE KEY` PKCS#1) or bare base64 of either.
    /// An error names the setting and says what was found instead.
    pub fn parse(secret: &Secret, what: &str) -> Result<PrivateKey> {
        let wanted = "this setting needs an RSA private key: PKCS#1 (RSA PRIVATE KEY) or PKCS#8 (PRIVATE KEY), PEM or bare base64";
        let key = first_key(secret, what, wanted, |m| match m {
            KeyMaterial::Private(k) => Ok(*k),
            KeyMaterial::Public(k) => Err(format!(
                "an RSA public key ({} bits), not the private key",
                bits(&k)
            )),
            KeyMaterial::Other(d) => Err(d),
        })?;
        Ok(PrivateKey(SigningKey::<Sha256>::new(key)))
    }

    /// The base64 SHA256withRSA signature of `msg` (blinded against timing).
    pub fn sign(&self, msg: &[u8]) -> Result<String> {
        use rsa::signature::{RandomizedSigner, SignatureEncoding};
        let sig = self
            .0
            .try_sign_with_rng(&mut rand::thread_rng(), msg)
            .map_err(|e| Error::Other(format!("signing the request failed: {e}")))?;
        Ok(B64.encode(sig.to_bytes()))
    }
}

/// A channel's public key that verifies its answers, from a bare public key (SPKI or PKCS#1)
/// or a certificate.
#[derive(Debug)]
pub struct PublicKey(VerifyingKey<Sha256>);

impl PublicKey {
    /// The key in the variable `env` or the file `file` (see [`Secret::load`]), parsed.
    pub fn load(
        locator: &Locator,
        what: &str,
        env: &Option<String>,
        file: &Option<String>,
    ) -> Result<PublicKey> {
        Self::parse(&Secret::load(locator, what, env, file)?, what)
    }

    /// Parses PEM (`PUBLIC KEY`, `RSA PUBLIC KEY` or `CERTIFICATE`; the first of a chain) or
    /// bare base64 of any of them. An error names the setting and says what was found.
    pub fn parse(secret: &Secret, what: &str) -> Result<PublicKey> {
        let wanted = "this setting needs the channel's RSA public key (PUBLIC KEY, RSA PUBLIC KEY) or certificate, PEM or bare base64";
        let key = first_key(secret, what, wanted, |m| {
            match m {
            KeyMaterial::Public(k) => Ok(k),
            KeyMaterial::Private(_) => Err(
                "a private key (the channel's public key belongs here; keep private keys out of it)"
                    .to_string(),
            ),
            KeyMaterial::Other(d) => Err(d),
        }
        })?;
        Ok(PublicKey(VerifyingKey::<Sha256>::new(key)))
    }

    /// Whether `sig_b64` is a valid SHA256withRSA signature of `msg` by this key.
    pub fn verifies(&self, msg: &[u8], sig_b64: &str) -> bool {
        use rsa::signature::Verifier;
        let Ok(sig) = B64.decode(sig_b64.trim()) else {
            return false;
        };
        rsa::pkcs1v15::Signature::try_from(sig.as_slice())
            .is_ok_and(|sig| self.0.verify(msg, &sig).is_ok())
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
