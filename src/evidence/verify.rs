//! `cradle verify-export FILE MANIFEST SIGNATURE --public-key PEM`: checks an export
//! offline, with nothing but the three files and the centre's published public key.
//!
//! 1. The signature is the key's Ed25519 signature of the manifest's exact bytes (so
//!    nothing in the manifest was changed, and this server made it).
//! 2. The file's size and SHA-256 are the manifest's `file.bytes` and `file.sha256` (so
//!    not one byte of the video was changed).
//!
//! The same two checks with standard tools are in the README ("Verifying an export").

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::keys;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Key(#[from] keys::KeyError),
    #[error("the signature is {0} bytes; an Ed25519 signature is 64")]
    SignatureLength(usize),
    #[error("the signature does not match the manifest for this public key: the manifest was altered, or another key signed it")]
    BadSignature,
    #[error("the manifest is not a Cradle evidence manifest: {0}")]
    Manifest(String),
    #[error("the file is {actual} bytes; the manifest says {expected}: it is not the exported file")]
    Size { expected: u64, actual: u64 },
    #[error("the file's SHA-256 is {actual}; the manifest says {expected}: the file was altered")]
    Hash { expected: String, actual: String },
}

#[derive(Deserialize)]
struct Manifest {
    format: String,
    case_ref: String,
    camera: String,
    actual_range: Range,
    file: File,
    server: Server,
}

#[derive(Deserialize)]
struct Range {
    start: String,
    end: String,
}

#[derive(Deserialize)]
struct File {
    bytes: u64,
    sha256: String,
}

#[derive(Deserialize)]
struct Server {
    public_key_sha256: String,
}

/// What a successful check established.
#[derive(Debug)]
pub struct Verified {
    pub case_ref: String,
    pub camera: String,
    pub start: String,
    pub end: String,
    pub bytes: u64,
    pub sha256: String,
    pub key_sha256: String,
}

fn read(path: &Path) -> Result<Vec<u8>, VerifyError> {
    std::fs::read(path).map_err(|e| VerifyError::Read { path: path.display().to_string(), reason: e.to_string() })
}

pub fn verify_export(file: &Path, manifest: &Path, signature: &Path, public_key: &Path) -> Result<Verified, VerifyError> {
    let pem = String::from_utf8(read(public_key)?)
        .map_err(|_| VerifyError::Read { path: public_key.display().to_string(), reason: "not PEM text".into() })?;
    let key = keys::parse_public_key_pem(&pem)?;
    let manifest_bytes = read(manifest)?;
    let sig = read(signature)?;
    if sig.len() != 64 {
        return Err(VerifyError::SignatureLength(sig.len()));
    }
    if !keys::verify(&key, &manifest_bytes, &sig) {
        return Err(VerifyError::BadSignature);
    }
    let m: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| VerifyError::Manifest(e.to_string()))?;
    if !m.format.starts_with("cradle-evidence-manifest/") {
        return Err(VerifyError::Manifest(format!("format {:?}", m.format)));
    }
    let (bytes, sha256) = hash_file(file)?;
    if bytes != m.file.bytes {
        return Err(VerifyError::Size { expected: m.file.bytes, actual: bytes });
    }
    if !sha256.eq_ignore_ascii_case(&m.file.sha256) {
        return Err(VerifyError::Hash { expected: m.file.sha256, actual: sha256 });
    }
    let key_sha256 = keys::fingerprint(&key);
    if m.server.public_key_sha256 != key_sha256 {
        // The signature checked with this key, so the manifest's own note of the key is
        // merely stale (a key replaced after signing would not verify); say so anyway.
        tracing::warn!("the manifest names key {}, verified with {key_sha256}", m.server.public_key_sha256);
    }
    Ok(Verified {
        case_ref: m.case_ref,
        camera: m.camera,
        start: m.actual_range.start,
        end: m.actual_range.end,
        bytes,
        sha256,
        key_sha256,
    })
}

fn hash_file(path: &Path) -> Result<(u64, String), VerifyError> {
    let err = |e: std::io::Error| VerifyError::Read { path: path.display().to_string(), reason: e.to_string() };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(sha.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signed manifest over a small file; then one changed byte in either fails.
    #[test]
    fn one_changed_byte_in_the_file_or_the_manifest_fails() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let signer = keys::Signer::load_or_create(dir.path()).unwrap();
        let video = b"pretend this is an MP4".to_vec();
        std::fs::write(p("v.mp4"), &video).unwrap();
        let manifest = serde_json::to_vec_pretty(&serde_json::json!({
            "format": "cradle-evidence-manifest/1", "case_ref": "C-1", "camera": "room-1",
            "actual_range": {"start": "2026-01-01T08:00:00Z", "end": "2026-01-01T08:01:00Z"},
            "file": {"bytes": video.len(), "sha256": hex::encode(Sha256::digest(&video))},
            "server": {"public_key_sha256": signer.fingerprint()},
        }))
        .unwrap();
        std::fs::write(p("m.json"), &manifest).unwrap();
        std::fs::write(p("m.sig"), signer.sign(&manifest)).unwrap();
        std::fs::write(p("k.pem"), signer.public_key_pem()).unwrap();
        let check = || verify_export(&p("v.mp4"), &p("m.json"), &p("m.sig"), &p("k.pem"));
        let ok = check().unwrap();
        assert_eq!((ok.case_ref.as_str(), ok.camera.as_str()), ("C-1", "room-1"));

        let mut v2 = video.clone();
        v2[3] ^= 1;
        std::fs::write(p("v.mp4"), &v2).unwrap();
        assert!(matches!(check(), Err(VerifyError::Hash { .. })), "{:?}", check());
        std::fs::write(p("v.mp4"), &video).unwrap();

        let mut m2 = manifest.clone();
        let i = m2.iter().position(|&b| b == b'C').unwrap();
        m2[i] = b'D';
        std::fs::write(p("m.json"), &m2).unwrap();
        assert!(matches!(check(), Err(VerifyError::BadSignature)));
        std::fs::write(p("m.json"), &manifest).unwrap();

        // Another key (say, a forger's) does not verify this server's signature.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(p("k.pem"), keys::Signer::load_or_create(other.path()).unwrap().public_key_pem()).unwrap();
        assert!(matches!(check(), Err(VerifyError::BadSignature)));
    }
}
