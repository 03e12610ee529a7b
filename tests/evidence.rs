//! Police evidence with real parts: Debian's GStreamer RTSP server as the camera, Garage
//! as the bucket, the `cradle` binary, ffprobe/ffmpeg as the independent decoder,
//! openssl and sha256sum as the independent verifier, and headless Chromium playing on
//! the investigator's page.
//!
//! One camera records 4-second segments; halfway it is restarted at another picture
//! size, so the exported range crosses segment boundaries, a gap and a codec-parameter
//! change. The request workflow is database-facing, so it runs on SQLite and
//! PostgreSQL; the browser part runs once (SQLite).

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::*;

on_both_databases!(police_get_exactly_the_approved_footage_as_an_export_anyone_can_verify);

const PASSWORD: &str = "a long enough password";
const NOWHERE: &str = "rtsp://127.0.0.1:9/none";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn us(v: &Value) -> i64 {
    cradle::time::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
}

fn at(us: i64) -> String {
    cradle::time::format_rfc3339(us)
}

struct Api<'a> {
    server: &'a Server,
}

impl Api<'_> {
    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.server.call(method, path, Some(token), body).await
    }

    async fn ok(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method.clone(), path, token, body).await;
        assert!(s.is_success(), "{method} {path}: {s} {v}");
        v
    }

    /// A GET returning the raw response (headers, bytes).
    async fn raw(&self, method: Method, path: &str, token: Option<&str>, range: Option<&str>) -> reqwest::Response {
        let mut req = reqwest::Client::new().request(method, format!("{}{path}", self.server.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        req.send().await.expect("HTTP request")
    }

    async fn bytes(&self, path: &str, token: Option<&str>) -> Vec<u8> {
        let r = self.raw(Method::GET, path, token, None).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.bytes().await.unwrap().to_vec()
    }

    async fn file_request(&self, token: &str, camera: &str, start: i64, end: i64, case_ref: &str) -> Value {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/evidence/requests",
                token,
                Some(json!({ "case_ref": case_ref, "camera_ids": [camera], "start": at(start), "end": at(end),
                             "reason": "a parent's complaint of rough handling" })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["state"], "pending");
        v
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn verify_export(dir: &Path, file: &str, manifest: &str, sig: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["verify-export"])
        .args([dir.join(file), dir.join(manifest), dir.join(sig)])
        .arg("--public-key")
        .arg(dir.join("key.pem"))
        .output()
        .unwrap()
}

/// Segments of `camera` as the admin sees them, oldest first.
async fn segments(server: &Server, camera: &str, from: i64) -> Vec<Value> {
    let v = server.recordings(camera, &at(from), &now_rfc3339()).await;
    v["segments"].as_array().unwrap().clone()
}

async fn police_get_exactly_the_approved_footage_as_an_export_anyone_can_verify(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let size = |w: &'static str, h: &'static str| {
        ["--width", w, "--height", h, "--fps", "25", "--gop-frames", "25", "--bitrate-kbps", "500"]
    };
    let mut camera = gst_camera(cam_port, "cam", "cam-secret", &size("320", "240")).await;
    let mut spec = ServerSpec::new(backend, dir.path()).await;
    spec.storage_toml = garage_storage_toml(&format!("evidence-{}", rand::random::<u32>()));
    spec.segment_seconds = 4;
    spec.cameras.push(CameraSpec::new("door", &format!("rtsp://127.0.0.1:{cam_port}/cam")).creds("cam", "cam-secret"));
    spec.cameras.push(CameraSpec::new("other", NOWHERE));
    for (user, role) in [("police1", "investigator"), ("police2", "investigator"), ("director2", "admin"), ("staff", "operator")] {
        let out = spec.add_user(user, role, PASSWORD);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let server = spec.start().await;
    let api = Api { server: &server };
    let admin = server.token.clone();
    let police = server.login("police1", PASSWORD).await;
    let police2 = server.login("police2", PASSWORD).await;
    let director2 = server.login("director2", PASSWORD).await;
    let staff = server.login("staff", PASSWORD).await;
    server.wait_recording("door", Duration::from_secs(30)).await;
    let began = cradle::time::now_us();

    // Before any request: nothing for the police, and no recorded video for operators.
    let (s, v) = api.call(Method::GET, &format!("/api/v1/cameras/door/recordings?start={}", at(began - 60_000_000)), &police, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no approved"), "{v}");
    let view = |a: i64, b: i64| format!("/api/v1/cameras/door/view.mp4?start={}&end={}", at(a), at(b));
    let (s, _) = api.call(Method::GET, &view(began, began + 1_000_000), &staff, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "operators do not play recorded footage");

    // Three segments at 320×240, then the camera comes back at 640×360: a gap and new
    // codec parameters inside the range.
    wait_until("two segments at 320x240", Duration::from_secs(40), || async {
        segments(&server, "door", began - 10_000_000).await.len() >= 2
    })
    .await;
    camera.kill();
    let _camera2 = gst_camera(cam_port, "cam", "cam-secret", &size("640", "360")).await;
    let restarted = cradle::time::now_us();
    wait_until("two segments at 640x360", Duration::from_secs(60), || async {
        segments(&server, "door", began - 10_000_000).await.iter().filter(|s| us(&s["start"]) > restarted).count() >= 2
    })
    .await;
    let segs = segments(&server, "door", began - 10_000_000).await;
    assert!(segs.len() >= 4, "{segs:?}");
    // Start mid-segment (the export begins at the next keyframe), end inside the last one.
    let start = us(&segs[0]["start"]) + 1_500_000;
    let end = us(&segs[segs.len() - 1]["end"]) - 500_000;

    // The four eyes: an admin's own request cannot be approved by that admin.
    let own = api.file_request(&admin, "door", start, end, "ADMIN-1").await;
    let (s, v) = api.call(Method::POST, &format!("/api/v1/evidence/requests/{}/approve", own["id"]), &admin, Some(json!({}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("four eyes"), "{v}");

    // The investigator's request; they cannot approve it, nor can an operator.
    let req = api.file_request(&police, "door", start, end, "2026-JD-0042").await;
    let rid = req["id"].as_i64().unwrap();
    for t in [&police, &staff] {
        let (s, v) = api.call(Method::POST, &format!("/api/v1/evidence/requests/{rid}/approve"), t, Some(json!({}))).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    }
    let (s, _) = api.call(Method::GET, &format!("/api/v1/cameras/door/recordings?start={}&end={}", at(start), at(end)), &police, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "pending: still nothing");
    let approved = api.ok(Method::POST, &format!("/api/v1/evidence/requests/{rid}/approve"), &director2, Some(json!({ "note": "warrant 17" }))).await;
    assert_eq!(approved["state"], "approved");
    assert_eq!(approved["decided_by"], "director2");

    // Recordings: clamped to the approved range; another camera is refused.
    let day = api
        .ok(Method::GET, &format!("/api/v1/cameras/door/recordings?start={}&end={}", at(start - 3_600_000_000), at(end + 3_600_000_000)), &police, None)
        .await;
    assert_eq!((us(&day["start"]), us(&day["end"])), (start, end), "clamped to the approval");
    assert!(!day["segments"].as_array().unwrap().is_empty());
    assert!(day["gaps"].as_array().unwrap().iter().any(|g| us(&g["start"]) > start), "the restart shows as a gap: {day}");
    let (s, _) = api.call(Method::GET, &format!("/api/v1/cameras/other/recordings?start={}&end={}", at(start), at(end)), &police, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Another investigator sees neither the request nor the footage.
    let (s, _) = api.call(Method::GET, &format!("/api/v1/evidence/requests/{rid}"), &police2, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.call(Method::GET, &view(start, end), &police2, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Playback: outside the range 403; inside, an MP4 with Range support.
    let (s, v) = api.call(Method::GET, &view(start - 10_000_000, end), &police, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("outside your approved range"), "{v}");
    let head = api.raw(Method::HEAD, &view(start, end), Some(&police), None).await;
    assert_eq!(head.status(), StatusCode::OK);
    let len: u64 = head.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let view_start = cradle::time::parse_rfc3339(head.headers()["x-cradle-start"].to_str().unwrap()).unwrap();
    let view_end = cradle::time::parse_rfc3339(head.headers()["x-cradle-end"].to_str().unwrap()).unwrap();
    assert!(view_start >= start && view_start < start + 1_100_000, "starts at the first keyframe after start");
    let part = api.raw(Method::GET, &view(start, end), Some(&police), Some("bytes=100-1099")).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], format!("bytes 100-1099/{len}").as_str());
    let part = part.bytes().await.unwrap();
    let whole = api.bytes(&view(start, end), Some(&police)).await;
    assert_eq!(whole.len() as u64, len);
    assert_eq!(&whole[100..1100], &part[..], "a range is the same bytes as the whole file's");
    let played = dir.path().join("view.mp4");
    std::fs::write(&played, &whole).unwrap();
    let (codec, _, duration) = ffprobe(&played);
    assert_eq!(codec, "h264");
    let want = (view_end - view_start) as f64 / 1e6;
    assert!((duration - want).abs() <= 0.05, "view.mp4 lasts {duration} s, X-Cradle-Start..End is {want} s");

    // The export: outside the range 403; the whole approved range by default.
    let exports = format!("/api/v1/evidence/requests/{rid}/exports");
    let (s, _) = api
        .call(Method::POST, &exports, &police, Some(json!({ "start": at(start - 1_000_000), "end": at(end) })))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api.call(Method::POST, &exports, &police, Some(json!({ "camera_id": "other" }))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) = api.call(Method::POST, &exports, &police, Some(json!({}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{e}");
    let eid = e["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let export = loop {
        let e = api.ok(Method::GET, &format!("/api/v1/evidence/exports/{eid}"), &police, None).await;
        if e["state"] != "pending" || std::time::Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(export["state"], "ready", "{export}\n{}", server.log());

    // Download the three parts and the public key (no account needed for the key).
    let base = format!("/api/v1/evidence/exports/{eid}");
    let out = dir.path().join("evidence");
    std::fs::create_dir_all(&out).unwrap();
    let file = api.bytes(&format!("{base}/file"), Some(&police)).await;
    let manifest_bytes = api.bytes(&format!("{base}/manifest"), Some(&police)).await;
    let sig = api.bytes(&format!("{base}/signature"), Some(&police)).await;
    let pem = api.bytes("/api/v1/evidence/public-key", None).await;
    assert_eq!(sig.len(), 64);
    for (name, data) in [("e.mp4", &file), ("manifest.json", &manifest_bytes), ("manifest.sig", &sig), ("key.pem", &pem)] {
        std::fs::write(out.join(name), data).unwrap();
    }
    let cli_pem = Command::new(BIN).args(["evidence", "public-key", "--config"]).arg(spec.config_path()).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&cli_pem.stdout).as_bytes(), &pem[..], "the CLI prints the same key");

    // The manifest says what the file is and where it came from.
    let m: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(m["case_ref"], "2026-JD-0042");
    assert_eq!(m["camera"], "door");
    assert_eq!(m["request"]["requested_by"], "police1");
    assert_eq!(m["request"]["approved_by"], "director2");
    assert_eq!((us(&m["requested_range"]["start"]), us(&m["requested_range"]["end"])), (start, end));
    assert_eq!(m["file"]["sha256"], sha256_hex(&file));
    assert_eq!(m["file"]["bytes"].as_u64().unwrap(), file.len() as u64);
    assert_eq!(export["sha256"], sha256_hex(&file));
    let msegs = m["segments"].as_array().unwrap();
    assert!(msegs.len() >= 3, "the range crosses at least 3 segments: {m}");
    let indexed: Vec<(String, String)> =
        segs.iter().map(|s| (s["key"].as_str().unwrap().to_owned(), s["sha256"].as_str().unwrap().to_owned())).collect();
    for s in msegs {
        let k = (s["key"].as_str().unwrap().to_owned(), s["sha256"].as_str().unwrap().to_owned());
        assert!(indexed.contains(&k), "manifest segment {s} is the index's");
    }
    let gaps = m["gaps"].as_array().unwrap();
    assert!(gaps.iter().any(|g| us(&g["start"]) > start && g["seconds"].as_f64().unwrap() > 0.5), "the restart's gap is listed: {m}");
    assert!(m["server"]["public_key_sha256"].as_str().unwrap().len() == 64);

    // ffprobe: the expected duration within one frame (25 fps), every frame decodes,
    // across the parameter change.
    let (codec, frames, duration) = ffprobe(&out.join("e.mp4"));
    assert_eq!(codec, "h264");
    let actual = (us(&m["actual_range"]["end"]) - us(&m["actual_range"]["start"])) as f64 / 1e6;
    assert!((duration - actual).abs() <= 0.04 + 1e-6, "export lasts {duration} s; the manifest's actual range is {actual} s");
    assert!((actual - (end - start) as f64 / 1e6).abs() <= 1.1, "actual range within a GOP of the requested");
    assert_eq!(frames, m["file"]["frames"].as_u64().unwrap(), "every frame is there and decodes");
    // Every frame decoded (ffprobe decodes to show frames) without a decoder error.
    let sizes = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "frame=width", "-of", "csv=p=0"])
        .arg(out.join("e.mp4"))
        .output()
        .unwrap();
    if matches!(backend, Backend::Sqlite) {
        let keep = repo("target/test-artifacts/evidence-export.mp4");
        std::fs::create_dir_all(keep.parent().unwrap()).unwrap();
        std::fs::write(&keep, &file).unwrap();
    }
    assert!(sizes.status.success() && sizes.stderr.is_empty(), "decoding the export: {}", String::from_utf8_lossy(&sizes.stderr));
    let widths: Vec<u32> =
        String::from_utf8_lossy(&sizes.stdout).lines().filter_map(|l| l.trim_end_matches(',').parse().ok()).collect();
    assert_eq!(widths.len() as u64, frames, "every frame decodes");
    let widths: std::collections::BTreeSet<String> = widths.iter().map(u32::to_string).collect();
    assert!(widths.contains("320") && widths.contains("640"), "both picture sizes decode: {widths:?}");

    // Verification offline: cradle verify-export, and the standard tools alone.
    let ok = verify_export(&out, "e.mp4", "manifest.json", "manifest.sig");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let openssl = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(out.join("key.pem"))
        .arg("-rawin")
        .arg("-in")
        .arg(out.join("manifest.json"))
        .arg("-sigfile")
        .arg(out.join("manifest.sig"))
        .output()
        .unwrap();
    assert!(openssl.status.success(), "openssl: {}", String::from_utf8_lossy(&openssl.stderr));
    let sum = Command::new("sha256sum").arg(out.join("e.mp4")).output().unwrap();
    assert!(String::from_utf8_lossy(&sum.stdout).starts_with(m["file"]["sha256"].as_str().unwrap()));
    // One changed byte in the file, or in the manifest, fails.
    let mut bad = file.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(out.join("bad.mp4"), &bad).unwrap();
    let r = verify_export(&out, "bad.mp4", "manifest.json", "manifest.sig");
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("altered"), "{}", String::from_utf8_lossy(&r.stderr));
    let mut badm = manifest_bytes.clone();
    let i = badm.windows(4).position(|w| w == b"0042").unwrap();
    badm[i + 3] = b'3';
    std::fs::write(out.join("bad.json"), &badm).unwrap();
    let r = verify_export(&out, "e.mp4", "bad.json", "manifest.sig");
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("signature"), "{}", String::from_utf8_lossy(&r.stderr));

    // The export holds its range while the case is open.
    let holds = api.ok(Method::GET, "/api/v1/holds?active=true", &admin, None).await;
    let held = |h: &Value| h["case_ref"] == "2026-JD-0042" && h["camera_id"] == "door" && h["active"] == true;
    assert!(holds["holds"].as_array().unwrap().iter().any(held), "{holds}");

    // The investigator's page plays the approved footage in a browser (once).
    if matches!(backend, Backend::Sqlite) {
        let shot = repo("target/test-artifacts/evidence-page-phone.png");
        std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
        let page = Command::new("/usr/bin/python3")
            .arg(repo("tests/web/evidence_page.py"))
            .args([&server.base, "police1", PASSWORD, &rid.to_string(), "door"])
            .arg(&shot)
            .args(["--seeks", "4"])
            .output()
            .unwrap();
        assert!(
            page.status.success(),
            "evidence_page.py: {}\n{}",
            String::from_utf8_lossy(&page.stderr),
            String::from_utf8_lossy(&page.stdout)
        );
        // Seeking works (its speed is a benchmark, bench/export.sh, not a test).
        let played: Value = serde_json::from_slice(page.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(played["seek_ms"].as_array().map(Vec::len), Some(4), "{played}");
    }

    // An approval that expires ends access to recordings, playback, exports and downloads.
    let short = api.file_request(&police, "door", start, end, "2026-JD-0043").await;
    let sid = short["id"].as_i64().unwrap();
    let until = cradle::time::now_us() + 3_000_000;
    api.ok(Method::POST, &format!("/api/v1/evidence/requests/{sid}/approve"), &director2, Some(json!({ "valid_until": at(until) }))).await;
    let (s, e2) = api.call(Method::POST, &format!("/api/v1/evidence/requests/{sid}/exports"), &police, Some(json!({}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{e2}");
    tokio::time::sleep(Duration::from_millis((until - cradle::time::now_us()).max(0) as u64 / 1000 + 500)).await;
    let mine = api.ok(Method::GET, &format!("/api/v1/evidence/requests/{sid}"), &police, None).await;
    assert_eq!(mine["state"], "expired");
    let (s, _) = api.call(Method::POST, &format!("/api/v1/evidence/requests/{sid}/exports"), &police, Some(json!({}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no export from an expired request");
    let (s, _) = api.call(Method::GET, &format!("/api/v1/evidence/exports/{}", e2["id"].as_str().unwrap()), &police, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no download from an expired request");

    // Closing the case: access ends and the hold is released.
    let closed = api
        .ok(Method::POST, &format!("/api/v1/evidence/requests/{rid}/close"), &director2, Some(json!({ "reason": "court case concluded" })))
        .await;
    assert_eq!(closed["state"], "closed");
    let (s, _) = api.call(Method::GET, &view(start, end), &police, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "closed and expired: nothing left to see");
    let (s, _) = api.call(Method::GET, &format!("{base}/file"), &police, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let holds = api.ok(Method::GET, "/api/v1/holds?active=true", &admin, None).await;
    assert!(!holds["holds"].as_array().unwrap().iter().any(|h| held(h) && h["reason"].as_str().unwrap().contains(&eid)), "{holds}");

    // Every step is in the audit log, with who did it.
    let audit = api.ok(Method::GET, "/api/v1/audit?limit=500", &admin, None).await;
    let entries = audit["entries"].as_array().unwrap();
    let by = |action: &str, actor: &str| entries.iter().any(|e| e["action"] == action && e["actor"] == actor);
    assert!(by("evidence_requested", "police1"));
    assert!(by("evidence_approved", "director2"));
    assert!(by("playback", "police1"));
    assert!(by("export_created", "police1"));
    assert!(by("export_downloaded", "police1"));
    assert!(by("legal_hold", "police1"));
    assert!(by("evidence_closed", "director2"));
    assert!(by("legal_hold_released", "director2"));
}

/// Evidence is made only from footage proven unaltered: a segment changed in storage
/// behind the server's back fails the export, naming the segment, and leaves no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_refuses_a_segment_altered_in_storage() {
    let dir = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _camera = gst_camera(cam_port, "cam", "cam-secret", &["--width", "320", "--height", "240", "--gop-frames", "25"]).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, dir.path()).await;
    spec.segment_seconds = 2;
    spec.cameras.push(CameraSpec::new("door", &format!("rtsp://127.0.0.1:{cam_port}/cam")).creds("cam", "cam-secret"));
    for (user, role) in [("police1", "investigator"), ("director2", "admin")] {
        assert!(spec.add_user(user, role, PASSWORD).status.success());
    }
    let server = spec.start().await;
    let api = Api { server: &server };
    let police = server.login("police1", PASSWORD).await;
    let director2 = server.login("director2", PASSWORD).await;
    server.wait_recording("door", Duration::from_secs(30)).await;
    let began = cradle::time::now_us();
    wait_until("three stored segments", Duration::from_secs(40), || async {
        segments(&server, "door", began - 10_000_000).await.iter().filter(|s| s["state"] == "stored").count() >= 3
    })
    .await;
    let segs: Vec<Value> =
        segments(&server, "door", began - 10_000_000).await.into_iter().filter(|s| s["state"] == "stored").collect();
    let (start, end) = (us(&segs[0]["start"]), us(&segs[2]["end"]));

    // One byte of the middle segment's video changes in the footage folder.
    let key = segs[1]["key"].as_str().unwrap();
    let path = dir.path().join("footage").join(key);
    let mut data = std::fs::read(&path).unwrap();
    let at = data.len() - 100;
    data[at] ^= 0x40;
    std::fs::write(&path, &data).unwrap();

    let req = api.file_request(&police, "door", start, end, "2026-JD-0099").await;
    let rid = req["id"].as_i64().unwrap();
    api.ok(Method::POST, &format!("/api/v1/evidence/requests/{rid}/approve"), &director2, Some(json!({}))).await;
    let (s, e) = api.call(Method::POST, &format!("/api/v1/evidence/requests/{rid}/exports"), &police, Some(json!({}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{e}");
    let eid = e["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let export = loop {
        let e = api.ok(Method::GET, &format!("/api/v1/evidence/exports/{eid}"), &police, None).await;
        if e["state"] != "pending" || std::time::Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(export["state"], "failed", "{export}");
    let error = export["error"].as_str().unwrap();
    assert!(error.contains(key) && error.contains("altered"), "{error}");
    let (s, _) = api.call(Method::GET, &format!("/api/v1/evidence/exports/{eid}/file"), &police, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "no file for a failed export");
    assert!(!dir.path().join("data/exports").join(eid).exists(), "partial files removed");
    // The footage itself is still held for the case (the hold came first).
    let holds = api.ok(Method::GET, "/api/v1/holds?active=true", &server.token, None).await;
    assert!(holds["holds"].as_array().unwrap().iter().any(|h| h["case_ref"] == "2026-JD-0099"), "{holds}");
}
