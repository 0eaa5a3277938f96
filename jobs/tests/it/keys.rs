//! RSA keys as merchants have them, made by two independent libraries (python-rsa and
//! pyca/cryptography, from PyPI) in every form: PKCS#1 and PKCS#8 private keys, PKCS#1 and SPKI
//! public keys, a certificate, bare base64. reckon signs with each private key and the other
//! library verifies; reckon verifies what the other library signed. Keys that are not RSA, or
//! the wrong half of a pair, are refused with the setting named and the key described.

use std::collections::BTreeMap;
use std::process::Command;

use reckon::fetchers::keys::{PrivateKey, PublicKey, Secret};

/// Makes the keys: one JSON object of named texts. python-rsa's `newkeys` picks primes of
/// different lengths on purpose (for 2048 bits: 1152 and 896), the case ring refused.
const MAKE: &str = r#"
import base64, datetime, json
import rsa
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa as crsa

msg = b"app_id=2021000000000000&biz_content={}&method=alipay.data.dataservice.bill.downloadurl.query"
out = {"msg": base64.b64encode(msg).decode()}

pub, priv = rsa.newkeys(2048)
out["pyrsa_p_bits"] = priv.p.bit_length()
out["pyrsa_q_bits"] = priv.q.bit_length()
out["pyrsa_pkcs1_private"] = priv.save_pkcs1().decode()
out["pyrsa_pkcs1_public"] = pub.save_pkcs1().decode()
out["pyrsa_sig"] = base64.b64encode(rsa.sign(msg, priv, "SHA-256")).decode()

key = crsa.generate_private_key(public_exponent=65537, key_size=2048)
P, PF, E = serialization.PrivateFormat, serialization.PublicFormat, serialization.Encoding
none = serialization.NoEncryption()
out["crypto_pkcs8_private"] = key.private_bytes(E.PEM, P.PKCS8, none).decode()
out["crypto_pkcs1_private"] = key.private_bytes(E.PEM, P.TraditionalOpenSSL, none).decode()
out["crypto_pkcs8_bare"] = base64.b64encode(key.private_bytes(E.DER, P.PKCS8, none)).decode()
out["crypto_pkcs1_bare"] = base64.b64encode(key.private_bytes(E.DER, P.TraditionalOpenSSL, none)).decode()
out["crypto_encrypted"] = key.private_bytes(
    E.PEM, P.PKCS8, serialization.BestAvailableEncryption(b"secret")).decode()
public = key.public_key()
out["crypto_spki"] = public.public_bytes(E.PEM, PF.SubjectPublicKeyInfo).decode()
out["crypto_pkcs1_public"] = public.public_bytes(E.PEM, PF.PKCS1).decode()
out["crypto_spki_bare"] = base64.b64encode(public.public_bytes(E.DER, PF.SubjectPublicKeyInfo)).decode()
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "channel test")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(public).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256()))
out["crypto_cert"] = cert.public_bytes(E.PEM).decode()
out["crypto_cert_bare"] = base64.b64encode(cert.public_bytes(E.DER)).decode()
out["crypto_sig"] = base64.b64encode(key.sign(msg, padding.PKCS1v15(), hashes.SHA256())).decode()
ec_key = ec.generate_private_key(ec.SECP256R1())
out["ec_private"] = ec_key.private_bytes(E.PEM, P.PKCS8, none).decode()
out["ec_public"] = ec_key.public_key().public_bytes(E.PEM, PF.SubjectPublicKeyInfo).decode()
print(json.dumps(out))
"#;

/// Verifies reckon's signatures with the other libraries: reads
/// `[[public key PEM, message b64, signature b64, library], ...]`, prints one verdict each.
const VERIFY: &str = r#"
import base64, json, sys
import rsa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
for pem, msg, sig, lib in json.load(sys.stdin):
    msg, sig = base64.b64decode(msg), base64.b64decode(sig)
    try:
        if lib == "python-rsa":
            rsa.verify(msg, sig, rsa.PublicKey.load_pkcs1(pem.encode()))
        else:
            k = serialization.load_pem_public_key(pem.encode())
            k.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
        print("ok")
    except Exception as e:
        print("bad:", type(e).__name__)
"#;

fn python() -> Option<std::path::PathBuf> {
    match crate::services::venv("keys", &["rsa==4.9.*", "cryptography>=42,<47"]) {
        Ok(dir) => Some(dir.join("bin/python")),
        Err(e) => {
            crate::services::unavailable("python-rsa and cryptography", &e);
            None
        }
    }
}

fn secret(text: &str) -> Secret {
    Secret::new(text.to_string())
}

#[test]
fn every_valid_rsa_key_form_from_two_libraries_signs_and_verifies() {
    let Some(py) = python() else { return };
    let out = Command::new(&py)
        .args(["-c", MAKE])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let k: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let text = |n: &str| k[n].as_str().unwrap_or_else(|| panic!("{n}")).to_string();
    // The case that was refused: primes of different lengths.
    assert_ne!(k["pyrsa_p_bits"], k["pyrsa_q_bits"], "python-rsa's primes");

    use base64::Engine as _;
    let msg = base64::engine::general_purpose::STANDARD
        .decode(text("msg"))
        .expect("msg");

    // Each private key form signs; the other library verifies against its public key.
    let private = [
        ("pyrsa_pkcs1_private", "pyrsa_pkcs1_public", "python-rsa"),
        ("crypto_pkcs8_private", "crypto_spki", "cryptography"),
        ("crypto_pkcs1_private", "crypto_spki", "cryptography"),
        ("crypto_pkcs8_bare", "crypto_spki", "cryptography"),
        ("crypto_pkcs1_bare", "crypto_spki", "cryptography"),
    ];
    let mut checks = Vec::new();
    for (name, public, lib) in private {
        let key =
            PrivateKey::parse(&secret(&text(name)), name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sig = key.sign(&msg).expect("sign");
        checks.push(serde_json::json!([text(public), text("msg"), sig, lib]));
    }
    let mut child = Command::new(&py)
        .args(["-c", VERIFY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::Value::Array(checks).to_string().as_bytes())
        .expect("write");
    let verdicts = child.wait_with_output().expect("verify");
    let verdicts = String::from_utf8_lossy(&verdicts.stdout);
    let verdicts: Vec<&str> = verdicts.lines().collect();
    assert_eq!(verdicts.len(), private.len(), "{verdicts:?}");
    for ((name, _, lib), v) in private.iter().zip(&verdicts) {
        assert_eq!(
            *v, "ok",
            "{lib} does not verify what reckon signed with {name}"
        );
    }

    // Each public key form verifies what the other library signed, and nothing else.
    let public = [
        ("pyrsa_pkcs1_public", "pyrsa_sig"),
        ("crypto_spki", "crypto_sig"),
        ("crypto_pkcs1_public", "crypto_sig"),
        ("crypto_spki_bare", "crypto_sig"),
        ("crypto_cert", "crypto_sig"),
        ("crypto_cert_bare", "crypto_sig"),
    ];
    for (name, sig) in public {
        let key =
            PublicKey::parse(&secret(&text(name)), name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(key.verifies(&msg, &text(sig)), "{name} verifies {sig}");
        let other = if sig == "pyrsa_sig" {
            "crypto_sig"
        } else {
            "pyrsa_sig"
        };
        assert!(!key.verifies(&msg, &text(other)), "{name} refuses {other}");
        assert!(
            !key.verifies(b"another message", &text(sig)),
            "{name} refuses a signature of another message"
        );
    }

    // What is not an RSA key of the right half says what it is, naming the setting.
    let refused = [
        (
            PrivateKey::parse(&secret(&text("ec_private")), "channel a source.private_key"),
            "EC",
        ),
        (
            PrivateKey::parse(
                &secret(&text("crypto_spki")),
                "channel a source.private_key",
            ),
            "public key",
        ),
        (
            PrivateKey::parse(
                &secret(&text("crypto_cert")),
                "channel a source.private_key",
            ),
            "public key",
        ),
        (
            PrivateKey::parse(
                &secret(&text("crypto_encrypted")),
                "channel a source.private_key",
            ),
            "encrypted",
        ),
    ];
    for (r, says) in refused {
        let e = r.expect_err("refused").to_string();
        assert!(e.contains("channel a source.private_key"), "{e}");
        assert!(e.contains(says), "{e} (should say {says})");
        assert!(!e.contains("InconsistentComponents"), "{e}");
    }
    for (name, says) in [
        ("ec_public", "EC"),
        ("crypto_pkcs8_private", "private key"),
        ("pyrsa_pkcs1_private", "private key"),
    ] {
        let e = PublicKey::parse(&secret(&text(name)), "channel b source.alipay_public_key")
            .expect_err(name)
            .to_string();
        assert!(e.contains("channel b source.alipay_public_key"), "{e}");
        assert!(e.contains(says), "{name}: {e} (should say {says})");
        assert!(!e.contains("BEGIN"), "no key text in errors: {e}");
    }
}
