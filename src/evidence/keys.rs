//! The server's evidence-signing key (Ed25519, RFC 8032) and offline verification.
//!
//! The private key lives in `DATA_DIR/keys/evidence-ed25519.pem` (PKCS#8, mode 0600),
//! created at first start; an admin may put their own there instead (`openssl genpkey
//! -algorithm ed25519`). The public key is published as PEM SubjectPublicKeyInfo
//! (RFC 8410), the form `openssl pkeyutl -verify -pubin` and Python's `cryptography`
//! read, so anyone can check an export without Cradle.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

/// DER of an Ed25519 SubjectPublicKeyInfo up to the key bytes (RFC 8410 §4):
/// SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) … }.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("evidence key {path}: {reason}")]
    File { path: String, reason: String },
    #[error("public key: {0}")]
    PublicKey(String),
}

pub struct Signer {
    pair: Ed25519KeyPair,
    pub path: PathBuf,
}

impl Signer {
    /// Loads the key at `DATA_DIR/keys/evidence-ed25519.pem`, creating it if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<Signer, KeyError> {
        let path = data_dir.join("keys").join("evidence-ed25519.pem");
        let err = |reason: String| KeyError::File { path: path.display().to_string(), reason };
        if !path.exists() {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| err("cannot generate a key".into()))?;
            write_new_private(&path, &pem("PRIVATE KEY", pkcs8.as_ref())).map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %path.display(), "created the evidence-signing key (Ed25519)");
        }
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let der = unpem(&text, "PRIVATE KEY").map_err(err)?;
        // `maybe_unchecked` also takes PKCS#8 v1 (no public key inside), which is what
        // `openssl genpkey -algorithm ed25519` writes.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| err(format!("not an Ed25519 PKCS#8 private key ({e})")))?;
        Ok(Signer { pair, path })
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig = self.pair.sign(message);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        out
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    pub fn public_key_pem(&self) -> String {
        public_key_pem(&self.public_key())
    }

    /// SHA-256 of the SubjectPublicKeyInfo DER, hex: the key's fingerprint in manifests
    /// (`openssl pkey -pubin -in key.pem -outform DER | sha256sum` prints the same).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key())
    }
}

fn spki_der(key: &[u8; 32]) -> Vec<u8> {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(key);
    der
}

pub fn public_key_pem(key: &[u8; 32]) -> String {
    pem("PUBLIC KEY", &spki_der(key))
}

pub fn fingerprint(key: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(spki_der(key)))
}

/// Reads a PEM SubjectPublicKeyInfo holding an Ed25519 key.
pub fn parse_public_key_pem(text: &str) -> Result<[u8; 32], KeyError> {
    let der = unpem(text, "PUBLIC KEY").map_err(KeyError::PublicKey)?;
    if der.len() != 44 || der[..12] != SPKI_PREFIX {
        return Err(KeyError::PublicKey("not an Ed25519 public key (SubjectPublicKeyInfo, RFC 8410)".into()));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&der[12..]);
    Ok(key)
}

/// Whether `signature` is `key`'s Ed25519 signature of exactly `message`.
pub fn verify(key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, key).verify(message, signature).is_ok()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).ok_or_else(|| format!("no '{begin}' line (PEM expected)"))? + begin.len();
    let stop = text[start..].find(&end).ok_or_else(|| format!("no '{end}' line"))? + start;
    let b64: String = text[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("bad base64 in PEM: {e}"))
}

/// Creates `path` (and its folder) readable by the owner only; never overwrites.
fn write_new_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_signs_and_its_pem_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::load_or_create(dir.path()).unwrap();
        let again = Signer::load_or_create(dir.path()).unwrap();
        assert_eq!(s.public_key(), again.public_key(), "the key is kept, not regenerated");
        let pem = s.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        let key = parse_public_key_pem(&pem).unwrap();
        let sig = s.sign(b"manifest bytes");
        assert!(verify(&key, b"manifest bytes", &sig));
        assert!(!verify(&key, b"manifest bytez", &sig));
        let mode = std::fs::metadata(&s.path).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    /// openssl, if present, verifies our signature with our PEM public key: the README's
    /// recipe works.
    #[test]
    fn openssl_verifies_a_signature_with_the_published_key() {
        if std::process::Command::new("openssl").arg("version").output().is_err() {
            eprintln!("openssl not installed; skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::load_or_create(dir.path()).unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("pub.pem"), s.public_key_pem()).unwrap();
        std::fs::write(p("m.json"), b"{\"x\":1}\n").unwrap();
        std::fs::write(p("m.sig"), s.sign(b"{\"x\":1}\n")).unwrap();
        let run = |msg: &str| {
            std::fs::write(p("m.json"), msg).unwrap();
            std::process::Command::new("openssl")
                .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
                .arg(p("pub.pem"))
                .arg("-rawin")
                .arg("-in")
                .arg(p("m.json"))
                .arg("-sigfile")
                .arg(p("m.sig"))
                .output()
                .unwrap()
        };
        let ok = run("{\"x\":1}\n");
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        assert!(!run("{\"x\":2}\n").status.success());
        // The fingerprint is what openssl computes from the same PEM.
        let der = std::process::Command::new("openssl")
            .args(["pkey", "-pubin", "-outform", "DER", "-in"])
            .arg(p("pub.pem"))
            .output()
            .unwrap();
        assert_eq!(hex::encode(Sha256::digest(&der.stdout)), s.fingerprint());
    }

    #[test]
    fn a_key_written_by_openssl_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("keys").join("evidence-ed25519.pem");
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        let out = std::process::Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&key).output();
        match out {
            Ok(o) if o.status.success() => {}
            _ => {
                eprintln!("openssl not usable; skipped");
                return;
            }
        }
        let s = Signer::load_or_create(dir.path()).unwrap();
        assert!(verify(&s.public_key(), b"x", &s.sign(b"x")));
    }

    #[test]
    fn garbage_keys_are_refused_with_the_reason() {
        assert!(parse_public_key_pem("hello").unwrap_err().to_string().contains("PEM"));
        let rsa_like = pem("PUBLIC KEY", &[0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(parse_public_key_pem(&rsa_like).unwrap_err().to_string().contains("Ed25519"));
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("keys").join("evidence-ed25519.pem");
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        std::fs::write(&key, pem("PRIVATE KEY", b"nonsense")).unwrap();
        let e = Signer::load_or_create(dir.path()).err().unwrap().to_string();
        assert!(e.contains("evidence-ed25519.pem") && e.contains("Ed25519"), "{e}");
    }
}
