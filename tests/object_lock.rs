//! S3 Object Lock against real S3 servers. moto (scripts/moto.sh) implements Object
//! Lock: segments recorded into a locked bucket must carry COMPLIANCE retention until
//! their start plus the 90-day floor, and the server must refuse to delete them. Garage
//! does not implement it: `cradle serve` must refuse to start, and say so. Garage
//! does check SigV4, Content-MD5 and the SHA-256 checksum strictly (moto checks neither),
//! so the locked PUT is also sent to Garage to prove it is signed correctly — and so is
//! the plain segment PUT, which carries the segment's SHA-256 too.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::*;

const FLOOR_US: i64 = 90 * 86_400 * 1_000_000;

fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// moto's S3 server on a free port, stopped on drop.
struct Moto {
    _proc: Proc,
    endpoint: String,
}

async fn moto() -> Moto {
    let port = free_port();
    let child = Command::new("bash")
        .arg(script("moto.sh"))
        .args(["serve", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto (scripts/moto.sh serve)");
    let proc = Proc(Some(child));
    wait_until("moto listening", Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    Moto { _proc: proc, endpoint: format!("http://127.0.0.1:{port}") }
}

/// Runs tests/support/s3_lock.py (boto3, an independent S3 client) and parses its JSON.
fn s3_lock(endpoint: &str, bucket: &str, args: &[&str]) -> Value {
    let py = Command::new("bash").arg(script("moto.sh")).arg("python").output().unwrap();
    assert!(py.status.success(), "moto.sh python: {}", String::from_utf8_lossy(&py.stderr));
    let python = String::from_utf8(py.stdout).unwrap().trim().to_owned();
    let out = Command::new(python)
        .arg(format!("{}/tests/support/s3_lock.py", env!("CARGO_MANIFEST_DIR")))
        .args([endpoint, bucket])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "s3_lock.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn moto_storage_toml(endpoint: &str, bucket: &str) -> String {
    format!(
        "[storage]\nurl = \"s3://{bucket}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
         access_key_id = \"cradle-test\"\nsecret_access_key = \"cradle-test-secret\"\nallow_http = true\nobject_lock = true\n"
    )
}

/// Polls the recordings API until `camera` has at least `n` stored segments; returns them.
async fn stored_segments(server: &Server, camera: &str, since: SystemTime, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rec = server.recordings(camera, &rfc3339(since), &now_rfc3339()).await;
        let stored: Vec<Value> =
            rec["segments"].as_array().unwrap().iter().filter(|s| s["state"] == "stored").cloned().collect();
        if stored.len() >= n {
            return stored;
        }
        assert!(Instant::now() < deadline, "{camera}: {} of {n} segments stored after 60 s; log:\n{}", stored.len(), server.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `cradle serve` expecting it to refuse to start; returns its stderr.
fn serve_refuses(spec: &ServerSpec) -> String {
    let config = spec.write_config();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("cradle serve kept running for 30 s with object_lock on a bucket without Object Lock");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "cradle serve exited 0; stderr:\n{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_in_a_locked_bucket_are_kept_in_compliance_mode_until_start_plus_the_floor() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = moto().await;
    s3_lock(&moto.endpoint, "cradle-locked", &["create-bucket", "--lock"]);
    let cam_port = free_port();
    let _camsim = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.storage_toml = moto_storage_toml(&moto.endpoint, "cradle-locked");
    spec.segment_seconds = 2;
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let t_start = SystemTime::now();
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    let segments = stored_segments(&server, "room-1", t_start, 3).await;

    let keys: Vec<&str> = segments.iter().map(|s| s["key"].as_str().unwrap()).collect();
    let retention = s3_lock(&moto.endpoint, "cradle-locked", &[&["retention"][..], &keys].concat());
    let storage = open_storage(&spec);
    for s in &segments {
        let key = s["key"].as_str().unwrap();
        let r = &retention[key];
        assert_eq!(r["mode"], "COMPLIANCE", "{key}: {r}");
        let until = secs(&r["retain_until"]);
        let want = (cradle::time::parse_rfc3339(s["start"].as_str().unwrap()).unwrap() + FLOOR_US) as f64 / 1e6;
        assert!((until - want).abs() <= 1.0, "{key}: retained until {} — want start + 90 days ({want})", r["retain_until"]);
        // The locked PUT stored the segment itself.
        let data = storage.get(key).await.unwrap();
        assert_eq!(hex::encode(Sha256::digest(&data)), s["sha256"].as_str().unwrap(), "{key}: stored bytes");
    }

    let del = s3_lock(&moto.endpoint, "cradle-locked", &["delete-version", keys[0]]);
    assert_eq!(del["deleted"], false, "a locked version was deleted: {del}");
    assert_eq!(del["error_code"], "AccessDenied", "{del}");
    assert_eq!(del["still_readable"], true, "{del}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_object_lock_on_garage_and_on_a_bucket_created_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.storage_toml = garage_storage_toml(&format!("lock-{}", rand::random::<u32>())) + "object_lock = true\n";
    let err = serve_refuses(&spec);
    assert!(err.contains("does not implement Object Lock"), "{err}");
    assert!(err.contains("Garage does not"), "the message should say Garage cannot lock: {err}");

    let moto = moto().await;
    s3_lock(&moto.endpoint, "cradle-unlocked", &["create-bucket"]);
    spec.storage_toml = moto_storage_toml(&moto.endpoint, "cradle-unlocked");
    let err = serve_refuses(&spec);
    assert!(err.contains("bucket cradle-unlocked does not have Object Lock enabled"), "{err}");
    assert!(err.contains("must be enabled when the bucket is created"), "{err}");
}

/// A Garage bucket prefix of its own (with Object Lock asked for when `lock`), a segment
/// key and a 3 MB "segment" file: its path, bytes and SHA-256 (hex). The PUT of that file
/// with the SHA-256 of other bytes — what a spool file changed after its index row was
/// written would be sent with — has already been refused, storing nothing.
async fn garage_segment(
    dir: &std::path::Path,
    lock: bool,
) -> (cradle::storage::Storage, String, std::path::PathBuf, Vec<u8>, String) {
    let mut spec = ServerSpec::new(Backend::Sqlite, dir).await;
    spec.storage_toml = garage_storage_toml(&format!("sha-put-{}", rand::random::<u32>()));
    if lock {
        spec.storage_toml += "object_lock = true\n";
    }
    spec.write_config();
    let storage = open_storage(&spec);
    assert_eq!(storage.object_lock(), lock);
    let camera = cradle::config::CameraId::parse("room-1").unwrap();
    let key = cradle::storage::segment_key(&camera, cradle::time::now_us());
    let file = dir.join("segment.mp4");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let sha = file_sha256(&file);
    let wrong = hex::encode(Sha256::digest(format!("not {sha}")));
    let err = storage.put_file(&key, &file, &wrong).await.expect_err("a PUT with another SHA-256 is refused");
    assert!(err.to_string().contains("do not match the segment's SHA-256"), "{err}");
    assert!(!storage.exists(&key).await.unwrap(), "the refused PUT stored nothing");
    (storage, key, file, data, sha)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_locked_put_is_signed_well_enough_for_garage() {
    // Garage ignores the lock headers but verifies the presigned signature over them, the
    // Content-MD5 and the SHA-256 checksum; a wrong signature, URL or digest fails the PUT.
    let tmp = tempfile::tempdir().unwrap();
    let (storage, key, file, data, sha) = garage_segment(tmp.path(), true).await;
    storage.put_file(&key, &file, &sha).await.unwrap_or_else(|e| panic!("locked PUT to Garage: {e}"));
    assert_eq!(storage.get(&key).await.unwrap().as_ref(), &data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_put_to_garage_is_checked_against_its_sha256() {
    // Without Object Lock too, a segment's PUT carries the SHA-256 of its index row and
    // the server refuses bytes that do not hash to it (Cradle does not hash them again).
    let tmp = tempfile::tempdir().unwrap();
    let (storage, key, file, data, sha) = garage_segment(tmp.path(), false).await;
    let err = storage.put_file(&key, &file, "not hex").await.expect_err("a malformed SHA-256 is refused");
    assert!(err.to_string().contains("is not a SHA-256 in hex"), "{err}");
    storage.put_file(&key, &file, &sha).await.unwrap_or_else(|e| panic!("PUT to Garage: {e}"));
    assert_eq!(storage.get(&key).await.unwrap().as_ref(), &data[..]);
    // Idempotent: the same segment stored again (a crash between upload and index).
    storage.put_file(&key, &file, &sha).await.unwrap();
    assert_eq!(storage.get(&key).await.unwrap().as_ref(), &data[..]);
}
