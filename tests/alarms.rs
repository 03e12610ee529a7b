//! Alarms raised and cleared by real faults, watched the way an operator watches them:
//! through `GET /api/v1/alarms` (each alarm names its camera, kind and state). The
//! faults are real: a camera process killed, a camera that keeps dropping its
//! connection, a GStreamer camera restarted at a lower frame rate or bitrate, cameras
//! with a wrong clock (camsim's fault options), our own Garage stopped, the spool on a
//! small tmpfs filled up, footage on a tmpfs too small for 90 days, a camera whose
//! footage is shorter than the floor, a decommission. Each alarm is raised by the
//! fault and cleared by its going away. Thresholds are shortened through `[watchdog]`
//! so the file runs in a few minutes. The webhook test checks signatures independently
//! (hmac + sha2), a retry after a 500, and raised / acknowledged / cleared deliveries.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::*;

const OPERATOR: &str = "duty-operator";
const PASSWORD: &str = "a long enough password";

/// An operator's session (the role that watches and acknowledges alarms).
async fn operator(spec: &ServerSpec, server: &Server) -> String {
    let out = spec.add_user(OPERATOR, "operator", PASSWORD);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() || err.contains("is taken"), "{err}");
    server.login(OPERATOR, PASSWORD).await
}

/// Every alarm (newest first) matching `query` (`&camera=…&kind=…`), as `token` sees it.
async fn alarms(server: &Server, token: &str, query: &str) -> Vec<Value> {
    let (status, v) = server.call(Method::GET, &format!("/api/v1/alarms?state=all{query}"), Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "GET /api/v1/alarms: {v}");
    v["alarms"].as_array().unwrap().clone()
}

/// Polls until the newest alarm of `kind` for `camera` (None: server-wide) is in one of
/// `states`; answers it. On timeout, panics with what was seen and the log's tail.
async fn wait_alarm(server: &Server, token: &str, camera: Option<&str>, kind: &str, states: &[&str], timeout: Duration) -> Value {
    let query = match camera {
        Some(c) => format!("&camera={c}&kind={kind}"),
        None => format!("&kind={kind}"),
    };
    let start = Instant::now();
    loop {
        let list = alarms(server, token, &query).await;
        let newest = list.iter().find(|a| a["camera_id"].as_str() == camera);
        if let Some(a) = newest {
            assert_eq!(a["kind"], kind, "{a:#}");
            if states.contains(&a["state"].as_str().unwrap()) {
                return a.clone();
            }
        }
        if start.elapsed() > timeout {
            let log = server.log();
            let tail: String = log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            panic!(
                "timed out after {timeout:?} waiting for {kind} of {camera:?} to be {states:?}; newest: {newest:#?}\nlog tail:\n{tail}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The camera's health as the API shows it (the watchdog's state).
async fn health(server: &Server, camera: &str) -> Value {
    server.camera(camera).await["health"].clone()
}

async fn wait_health(server: &Server, camera: &str, state: &str, timeout: Duration) {
    wait_until(&format!("camera {camera} health {state}"), timeout, || async {
        health(server, camera).await["state"] == state
    })
    .await
}

fn secs_between(a: &Value, b: &Value) -> f64 {
    secs(b) - secs(a)
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

async fn wait_port(port: u16) {
    wait_until(&format!("port {port} listening"), Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await
}

/// `cradle camsim` with one camera and camsim's fault options (`--clock-offset-ms`,
/// `--rtp-clock-ppm`, `--drop-after-secs`, `--freeze-after-secs`).
async fn camsim_with(port: u16, faults: &[&str]) -> Proc {
    let child = Command::new(BIN)
        .args(["camsim", "--listen", &format!("127.0.0.1:{port}"), "--streams", "1"])
        .args(faults)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start camsim");
    let p = Proc(Some(child));
    wait_port(port).await;
    p
}

/// A tmpfs mounted for the test (we run as root), lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status().unwrap();
        assert!(st.success(), "mounting a tmpfs at {} (tests run as root)", dir.display());
        Tmpfs(dir.to_owned())
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status().unwrap();
        assert!(st.success(), "remounting {} with size={size}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn watchdog_toml(keys: &str) -> String {
    format!("[watchdog]\n{keys}\n")
}

// ---- camera stopped ---------------------------------------------------------------------

async fn a_stopped_camera_raises_no_frames_within_seconds_and_its_return_clears_it(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let mut cam = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(backend, tmp.path()).await;
    spec.segment_seconds = 4;
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    // The default threshold (10 s): this is the promise operators get.
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    let op = operator(&spec, &server).await;
    wait_health(&server, "room-1", "recording", Duration::from_secs(10)).await;
    assert!(alarms(&server, &op, "&camera=room-1").await.is_empty(), "a healthy start raises nothing");

    let killed = SystemTime::now();
    cam.kill();
    let a = wait_alarm(&server, &op, Some("room-1"), "no_frames", &["raised"], Duration::from_secs(20)).await;
    let after = secs(&a["raised_at"]) - unix_secs(killed);
    assert!((9.0..=12.0).contains(&after), "raised {after:.1} s after the camera died (threshold 10 s): {a:#}");
    assert_eq!(a["camera_id"], "room-1");
    assert_eq!(a["breaks_armed"], true);
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains("no frame for") && detail.contains("threshold 10 s") && detail.contains("room-1"), "{detail}");
    assert_eq!(health(&server, "room-1").await["state"], "offline");

    // Only staff and the regulator read alarms.
    for (user, role) in [("parent-1", "parent"), ("committee-1", "committee")] {
        assert!(spec.add_user(user, role, PASSWORD).status.success());
        let t = server.login(user, PASSWORD).await;
        let (status, body) = server.call(Method::GET, "/api/v1/alarms", Some(&t), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
    }
    // Acknowledging takes a note, once.
    let id = a["id"].as_i64().unwrap();
    let ack = format!("/api/v1/alarms/{id}/ack");
    for body in [json!({}), json!({ "note": "  " })] {
        let (status, v) = server.call(Method::POST, &ack, Some(&op), Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    }
    let (status, v) = server.call(Method::POST, &ack, Some(&op), Some(json!({ "note": "camera unplugged by the cleaner" }))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!((v["alarm"]["state"].as_str(), v["alarm"]["acknowledged_by"].as_str()), (Some("acknowledged"), Some(OPERATOR)));
    let (status, v) = server.call(Method::POST, &ack, Some(&op), Some(json!({ "note": "again" }))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");

    // The camera comes back: the cause is gone, and being acknowledged, the alarm closes.
    let _cam = camsim(cam_port, 1).await;
    let a = wait_alarm(&server, &op, Some("room-1"), "no_frames", &["closed"], Duration::from_secs(45)).await;
    assert_eq!(a["id"].as_i64(), Some(id));
    assert!(a["clear_detail"].as_str().unwrap().contains("frames flow again"), "{a:#}");
    assert!(secs_between(&a["raised_at"], &a["cleared_at"]) > 0.0);
    let (_, open) = server.call(Method::GET, "/api/v1/alarms?state=open", Some(&op), None).await;
    assert!(!open["alarms"].as_array().unwrap().iter().any(|x| x["id"].as_i64() == Some(id)), "{open:#}");
    wait_health(&server, "room-1", "recording", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_left_by_a_camera_taken_out_of_the_config_is_cleared_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.extra_toml = watchdog_toml("no_frames_seconds = 2");
    spec.cameras.push(CameraSpec::new("unplugged", &format!("rtsp://127.0.0.1:{}/cam1", free_port())));
    let mut server = spec.start().await;
    let op = operator(&spec, &server).await;
    wait_alarm(&server, &op, Some("unplugged"), "no_frames", &["raised"], Duration::from_secs(15)).await;
    server.terminate();
    // The camera leaves the configuration; nothing records it, so nothing else would clear it.
    spec.cameras.clear();
    let server = spec.start().await;
    let op = server.login(OPERATOR, PASSWORD).await;
    let a = wait_alarm(&server, &op, Some("unplugged"), "no_frames", &["cleared"], Duration::from_secs(30)).await;
    assert!(a["clear_detail"].as_str().unwrap().contains("no longer recorded by this server"), "{a:#}");
}

// ---- reconnect storm --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_dropping_its_connection_again_and_again_raises_a_reconnect_storm_until_it_settles() {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let mut cam = camsim_with(cam_port, &["--drop-after-secs", "2"]).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.segment_seconds = 4;
    spec.extra_toml = watchdog_toml("reconnect_storm_count = 3\nreconnect_window_seconds = 15");
    spec.cameras.push(CameraSpec::new("flaky", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let server = spec.start().await;
    let op = operator(&spec, &server).await;
    let a = wait_alarm(&server, &op, Some("flaky"), "reconnect_storm", &["raised"], Duration::from_secs(45)).await;
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains("reconnects in the last 15 s") && detail.contains("threshold 3"), "{detail}");
    assert!(server.camera("flaky").await["reconnects"].as_u64().unwrap() >= 3);
    // Short drops are not a dead camera.
    assert!(alarms(&server, &op, "&camera=flaky&kind=no_frames").await.is_empty());

    // The link is fixed: after a whole window without a reconnect, the storm is over.
    cam.kill();
    let _cam = camsim_with(cam_port, &[]).await;
    let fixed = Instant::now();
    let a = wait_alarm(&server, &op, Some("flaky"), "reconnect_storm", &["cleared"], Duration::from_secs(60)).await;
    assert!(fixed.elapsed() >= Duration::from_secs(12), "cleared only after a quiet window: {a:#}");
    assert!(a["clear_detail"].as_str().unwrap().contains("no reconnect for 15 s"), "{a:#}");
    wait_health(&server, "flaky", "recording", Duration::from_secs(10)).await;
}

// ---- frozen encoder ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_whose_video_freezes_while_its_rtcp_goes_on_is_reconnected_and_recording_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    // Every session sends 3 s of video, then only RTCP sender reports (every 5 s).
    let _cam = camsim_with(cam_port, &["--freeze-after-secs", "3"]).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.segment_seconds = 4;
    spec.cameras.push(CameraSpec::new("hung", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let t_start = SystemTime::now();
    let server = spec.start().await;
    server.wait_recording("hung", Duration::from_secs(20)).await;
    // The sender reports keep the RTSP session busy; only video counts as a sign of life.
    wait_until("the hung session to be dropped and reopened", Duration::from_secs(30), || async {
        server.camera("hung").await["reconnects"].as_u64().unwrap() >= 1
    })
    .await;
    let frames_before = server.camera("hung").await["frames"].as_u64().unwrap();
    wait_until("video from the new session", Duration::from_secs(20), || async {
        server.camera("hung").await["frames"].as_u64().unwrap() > frames_before + 25
    })
    .await;
    // The frozen span is a gap that says why, and the new session's footage is indexed
    // once it freezes in turn and is dropped.
    wait_until("a segment after the frozen span", Duration::from_secs(40), || async {
        let rec = server.recordings("hung", &rfc3339(t_start), &now_rfc3339()).await;
        let gap_end = rec["gaps"].as_array().unwrap().iter().find(|g| g["cause"] == "camera_offline").map(|g| secs(&g["end"]));
        gap_end.is_some_and(|end| rec["segments"].as_array().unwrap().iter().any(|s| secs(&s["start"]) >= end - 0.1))
    })
    .await;
    let rec = server.recordings("hung", &rfc3339(t_start), &now_rfc3339()).await;
    let gap = rec["gaps"].as_array().unwrap().iter().find(|g| g["cause"] == "camera_offline").unwrap();
    assert!(gap["detail"].as_str().unwrap().contains("no frames for 10 s"), "{gap:#}");
    assert!(secs_between(&gap["start"], &gap["end"]) >= 9.0, "the frozen span is the gap: {gap:#}");
}

// ---- frame-rate and bitrate collapse ----------------------------------------------------

/// A small GStreamer camera (third-party RTSP server) with the given encoder settings.
async fn gst(port: u16, args: &[&str]) -> Proc {
    let mut all = vec!["--width", "320", "--height", "240"];
    all.extend_from_slice(args);
    gst_camera(port, "cam", "cam-password", &all).await
}

/// Short windows: rates over 2 s against the median of the last 20 s.
const RATE_WINDOWS: &str = "rate_window_seconds = 2\nbaseline_seconds = 20";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_whose_frame_rate_collapses_raises_an_alarm_until_it_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cam = gst(port, &["--fps", "25"]).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.segment_seconds = 4;
    spec.extra_toml = watchdog_toml(RATE_WINDOWS);
    spec.cameras.push(CameraSpec::new("nursery", &format!("rtsp://127.0.0.1:{port}/cam")).creds("cam", "cam-password"));
    let server = spec.start().await;
    server.wait_recording("nursery", Duration::from_secs(30)).await;
    let op = operator(&spec, &server).await;
    // Half the baseline (10 s of 25 fps) must be known before anything is judged.
    wait_until("14 s of frames", Duration::from_secs(40), || async {
        server.camera("nursery").await["frames"].as_u64().unwrap() >= 14 * 25
    })
    .await;
    assert!(alarms(&server, &op, "&camera=nursery&kind=frame_rate_collapse").await.is_empty(), "no alarm at start-up");

    cam.kill();
    let mut cam = gst(port, &["--fps", "5"]).await;
    let a = wait_alarm(&server, &op, Some("nursery"), "frame_rate_collapse", &["raised"], Duration::from_secs(40)).await;
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains("fps") && detail.contains("below 50 %"), "{detail}");
    wait_health(&server, "nursery", "degraded", Duration::from_secs(10)).await;
    // Fewer frames of the same picture: the keyframes keep their size, so no bitrate alarm.
    assert!(alarms(&server, &op, "&camera=nursery&kind=bitrate_collapse").await.is_empty());

    cam.kill();
    let _cam = gst(port, &["--fps", "25"]).await;
    let a = wait_alarm(&server, &op, Some("nursery"), "frame_rate_collapse", &["cleared"], Duration::from_secs(40)).await;
    assert!(a["clear_detail"].as_str().unwrap().contains("frame rate back to"), "{a:#}");
    wait_health(&server, "nursery", "recording", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_whose_bitrate_collapses_raises_an_alarm_until_it_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // Noise: the encoder spends all the bitrate it is given, keyframes included.
    let busy = ["--pattern", "snow", "--bitrate-kbps", "2000"];
    let mut cam = gst(port, &busy).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.segment_seconds = 4;
    spec.extra_toml = watchdog_toml(RATE_WINDOWS);
    spec.cameras.push(CameraSpec::new("toddlers", &format!("rtsp://127.0.0.1:{port}/cam")).creds("cam", "cam-password"));
    let server = spec.start().await;
    server.wait_recording("toddlers", Duration::from_secs(30)).await;
    let op = operator(&spec, &server).await;
    wait_until("14 s of frames", Duration::from_secs(40), || async {
        server.camera("toddlers").await["frames"].as_u64().unwrap() >= 14 * 25
    })
    .await;

    cam.kill();
    let mut cam = gst(port, &["--pattern", "snow", "--bitrate-kbps", "150"]).await;
    let a = wait_alarm(&server, &op, Some("toddlers"), "bitrate_collapse", &["raised"], Duration::from_secs(40)).await;
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains("kbit/s") && detail.contains("keyframes"), "{detail}");
    assert!(alarms(&server, &op, "&camera=toddlers&kind=frame_rate_collapse").await.is_empty(), "the frame rate is intact");

    cam.kill();
    let _cam = gst(port, &busy).await;
    let a = wait_alarm(&server, &op, Some("toddlers"), "bitrate_collapse", &["cleared"], Duration::from_secs(40)).await;
    assert!(a["clear_detail"].as_str().unwrap().contains("bitrate back to"), "{a:#}");
}

// ---- clock drift ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_with_a_wrong_wall_clock_or_a_fast_rtp_clock_raise_clock_drift_until_set_right() {
    let tmp = tempfile::tempdir().unwrap();
    let (wall_port, rtp_port) = (free_port(), free_port());
    // One camera's clock is 20 s ahead (its RTCP sender reports say so); the other's
    // RTP clock runs 5 % fast (0.5 s gained in 10 s).
    let mut wall = camsim_with(wall_port, &["--clock-offset-ms", "20000"]).await;
    let mut rtp = camsim_with(rtp_port, &["--rtp-clock-ppm", "50000"]).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.segment_seconds = 4;
    spec.extra_toml = watchdog_toml("max_clock_skew_ms = 300\nclock_window_seconds = 10");
    spec.cameras.push(CameraSpec::new("wall-clock", &format!("rtsp://127.0.0.1:{wall_port}/cam1")));
    spec.cameras.push(CameraSpec::new("rtp-clock", &format!("rtsp://127.0.0.1:{rtp_port}/cam1")));
    let server = spec.start().await;
    let op = operator(&spec, &server).await;
    let a = wait_alarm(&server, &op, Some("wall-clock"), "clock_drift", &["raised"], Duration::from_secs(30)).await;
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains("20.0 s ahead of the server's") && detail.contains("sender report"), "{detail}");
    let a = wait_alarm(&server, &op, Some("rtp-clock"), "clock_drift", &["raised"], Duration::from_secs(40)).await;
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains("RTP clock gained"), "{detail}");
    wait_health(&server, "rtp-clock", "degraded", Duration::from_secs(5)).await;

    // Clocks set right (the cameras restart): cleared after a whole window in step.
    wall.kill();
    rtp.kill();
    let _wall = camsim_with(wall_port, &[]).await;
    let _rtp = camsim_with(rtp_port, &[]).await;
    for cam in ["wall-clock", "rtp-clock"] {
        let a = wait_alarm(&server, &op, Some(cam), "clock_drift", &["cleared"], Duration::from_secs(45)).await;
        assert!(a["clear_detail"].as_str().unwrap().contains("kept the server's pace"), "{a:#}");
    }
}

// ---- storage down -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_stopped_raises_upload_failing_and_spool_backlog_and_both_clear_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let garage = OwnGarage::start(&tmp.path().join("garage"), None);
    let cam_port = free_port();
    let _cam = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.storage_toml = garage.storage_toml();
    spec.segment_seconds = 2;
    spec.extra_toml = watchdog_toml("upload_failing_seconds = 3\nspool_backlog_seconds = 6");
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    let op = operator(&spec, &server).await;
    wait_until("a segment uploaded", Duration::from_secs(30), || async {
        server.status().await["spool"]["uploaded_segments"].as_u64().unwrap() >= 1
    })
    .await;

    garage.stop();
    let a = wait_alarm(&server, &op, None, "upload_failing", &["raised"], Duration::from_secs(60)).await;
    assert!(a["camera_id"].is_null(), "storage is server-wide: {a:#}");
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains("threshold 3 s") && detail.contains("last error"), "{detail}");
    let b = wait_alarm(&server, &op, None, "spool_backlog", &["raised"], Duration::from_secs(60)).await;
    assert!(b["detail"].as_str().unwrap().contains("threshold 6 s"), "{b:#}");
    // Footage is still recorded (into the spool): degraded, not stalled.
    wait_health(&server, "room-1", "degraded", Duration::from_secs(5)).await;

    let _garage = OwnGarage::start(&tmp.path().join("garage"), Some(garage.ports));
    let a = wait_alarm(&server, &op, None, "upload_failing", &["cleared"], Duration::from_secs(90)).await;
    assert!(a["clear_detail"].as_str().unwrap().contains("succeed again"), "{a:#}");
    wait_alarm(&server, &op, None, "spool_backlog", &["cleared"], Duration::from_secs(60)).await;
    wait_until("the backlog to drain", Duration::from_secs(60), || async {
        server.status().await["spool"]["backlog_segments"].as_u64().unwrap() <= 1
    })
    .await;
    wait_health(&server, "room-1", "recording", Duration::from_secs(10)).await;
}

// ---- spool disk full --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_raises_spool_full_and_freeing_it_clears_the_alarm_and_recording_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let _tmpfs = Tmpfs::mount(&spool, "16m");
    let cam_port = free_port();
    let _cam = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.segment_seconds = 2;
    spec.extra_toml = format!("[spool]\ndir = \"{}\"\nmin_free_mb = 4\n", spool.display());
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    let op = operator(&spec, &server).await;

    // Something else fills the disk.
    let filler = spool.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let mb = vec![0x5au8; 1 << 20];
        while f.write_all(&mb).is_ok() {}
        let _ = f.sync_all();
    }
    let a = wait_alarm(&server, &op, Some("room-1"), "spool_full", &["raised"], Duration::from_secs(30)).await;
    assert!(a["detail"].as_str().unwrap().contains("spool is full"), "{a:#}");
    assert_eq!(a["breaks_armed"], true);
    wait_health(&server, "room-1", "stalled", Duration::from_secs(5)).await;

    std::fs::remove_file(&filler).unwrap();
    let a = wait_alarm(&server, &op, Some("room-1"), "spool_full", &["cleared"], Duration::from_secs(30)).await;
    let cleared = a["cleared_at"].as_str().unwrap().to_owned();
    wait_until("a segment recorded after the spool had room again", Duration::from_secs(30), || async {
        let rec = server.recordings("room-1", &cleared, &now_rfc3339()).await;
        rec["segments"].as_array().unwrap().iter().any(|s| secs(&s["start"]) >= secs(&json!(cleared)))
    })
    .await;
    wait_health(&server, "room-1", "recording", Duration::from_secs(10)).await;
}

// ---- storage forecast -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_too_small_for_ninety_days_raises_the_storage_forecast_until_it_grows() {
    let tmp = tempfile::tempdir().unwrap();
    let footage = tmp.path().join("footage-disk");
    let disk = Tmpfs::mount(&footage, "64m");
    let cam_port = free_port();
    let _cam = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.storage_toml = format!("[storage]\nurl = \"file://{}\"\n", footage.display());
    spec.segment_seconds = 2;
    spec.extra_toml = watchdog_toml("storage_check_seconds = 1");
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let server = spec.start().await;
    let op = operator(&spec, &server).await;
    // camsim's 1080p at ~4 Mbit/s is ~43 GB a day: 90 days need ~3.9 TB.
    let a = wait_alarm(&server, &op, None, "storage_forecast", &["raised"], Duration::from_secs(40)).await;
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains("90 days of footage need") && detail.contains("TB") && detail.contains("cannot keep"), "{detail}");

    disk.resize("8t");
    let a = wait_alarm(&server, &op, None, "storage_forecast", &["cleared"], Duration::from_secs(20)).await;
    assert!(a["clear_detail"].as_str().unwrap().contains("90 days need"), "{a:#}");
}

// ---- retention horizon ------------------------------------------------------------------

const DAY_US: i64 = 86_400_000_000;

fn backdated_segment(camera: &str, start_us: i64) -> cradle::db::SegmentRow {
    cradle::db::SegmentRow {
        camera_id: camera.into(),
        start_us,
        end_us: start_us + 60_000_000,
        duration_90k: 60 * 90_000,
        bytes: 30_000_000,
        frames: 1500,
        codec: "avc1.640028".into(),
        object_key: cradle::storage::segment_key(&cradle::config::CameraId::parse(camera).unwrap(), start_us),
        sha256: "0".repeat(64),
        run_id: "backdated".into(),
        drift_us: 0,
        state: "stored".into(),
    }
}

async fn a_camera_recording_for_100_days_with_1_day_of_footage_raises_retention_short_until_it_is_back(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(backend, tmp.path()).await;
    spec.extra_toml = watchdog_toml("storage_check_seconds = 1");
    // No camera process needed: the horizon is a fact of the index.
    spec.cameras.push(CameraSpec::new("old-room", &format!("rtsp://127.0.0.1:{}/cam1", free_port())));
    let server = spec.start().await;
    let op = operator(&spec, &server).await;
    let db = cradle::db::Db::connect(&spec.database_url).await.unwrap();
    let now = cradle::time::now_us();
    // The camera was first recorded 100 days ago (the watchdog's own record), but the
    // index holds only yesterday: 89 days of footage are gone. The segment goes in first,
    // so the watchdog never sees a camera with a history and no footage at all (it may
    // note the segment as the first recording meanwhile; the older date then wins).
    db.upsert_segment(&backdated_segment("old-room", now - DAY_US)).await.unwrap();
    sqlx::query(
        "INSERT INTO camera_first_recorded (camera_id, first_start_us, noted_at_us) VALUES ($1, $2, $3)
         ON CONFLICT (camera_id) DO UPDATE SET first_start_us = excluded.first_start_us, noted_at_us = excluded.noted_at_us",
    )
    .bind("old-room")
    .bind(now - 100 * DAY_US)
    .bind(now - 100 * DAY_US)
    .execute(db.pool())
    .await
    .unwrap();
    let a = wait_alarm(&server, &op, Some("old-room"), "retention_short", &["raised"], Duration::from_secs(20)).await;
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains("100.0 days ago") && detail.contains("days short of the 90-day floor"), "{detail}");
    assert_eq!(a["breaks_armed"], true);

    // The missing footage is found again (a reindex would insert these rows): 89.5 days,
    // younger than the floor, so the sweeper keeps it.
    db.upsert_segment(&backdated_segment("old-room", now - 89 * DAY_US - DAY_US / 2)).await.unwrap();
    let a = wait_alarm(&server, &op, Some("old-room"), "retention_short", &["cleared"], Duration::from_secs(20)).await;
    assert!(a["clear_detail"].as_str().unwrap().contains("keeps 89.5 days of footage"), "{a:#}");
    db.close().await;
}

// ---- decommission and the webhook -------------------------------------------------------

/// One POST the test's webhook receiver got.
#[derive(Clone, Debug)]
struct Delivery {
    answered: u16,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Checks `x-cradle-signature` the way a receiver would, without Cradle's code.
    fn verify(&self, secret: &str) {
        use hmac::{Hmac, Mac};
        let hex_sig = self.signature.strip_prefix("sha256=").unwrap_or_else(|| panic!("signature {:?}", self.signature));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(self.timestamp.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        mac.verify_slice(&hex::decode(hex_sig).unwrap()).expect("HMAC-SHA256 signature matches");
        let ts: f64 = self.timestamp.parse().unwrap();
        assert!((unix_secs(SystemTime::now()) - ts).abs() < 300.0, "timestamp {ts} is fresh");
    }
}

/// A webhook receiver that answers 500 to the first POST and 200 afterwards.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Delivery>>>) {
    use axum::http::{HeaderMap, StatusCode as Code};
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let state = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let got = state.clone();
            async move {
                let mut got = got.lock().unwrap();
                let answered = if got.is_empty() { 500 } else { 200 };
                let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                got.push(Delivery { answered, timestamp: h("x-cradle-timestamp"), signature: h("x-cradle-signature"), body: body.to_vec() });
                Code::from_u16(answered).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

async fn decommissioning_raises_an_alarm_with_the_reason_that_closes_when_acknowledged_and_the_webhook_gets_it_signed(
    backend: Backend,
) {
    let tmp = tempfile::tempdir().unwrap();
    let (url, got) = webhook_receiver().await;
    let secret = "webhook secret for the test";
    let mut spec = ServerSpec::new(backend, tmp.path()).await;
    spec.extra_toml = format!("[alarms]\nwebhook_url = \"{url}\"\nwebhook_secret = \"{secret}\"\n");
    spec.cameras.push(CameraSpec::new("hall", &format!("rtsp://127.0.0.1:{}/cam1", free_port())));
    let server = spec.start().await;
    let op = operator(&spec, &server).await;

    let reason = "moved to the storeroom while the hall is rebuilt";
    let (status, v) = server
        .call(Method::POST, "/api/v1/centre/cameras/hall/decommission", Some(&server.token), Some(json!({ "reason": reason })))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let a = wait_alarm(&server, &op, Some("hall"), "decommissioned", &["raised"], Duration::from_secs(15)).await;
    let detail = a["detail"].as_str().unwrap();
    assert!(detail.contains(reason) && detail.contains(TEST_ADMIN) && detail.contains("kept at least 90 days"), "{detail}");
    wait_health(&server, "hall", "decommissioned", Duration::from_secs(5)).await;
    let id = a["id"].as_i64().unwrap();
    let for_this = |event: &str| -> Vec<Delivery> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|d| {
                let v = d.json();
                v["event"] == event && v["alarm"]["id"].as_i64() == Some(id)
            })
            .cloned()
            .collect()
    };
    // The receiver refused the first delivery; it came again and was taken.
    wait_until("the raised alarm delivered after a retry", Duration::from_secs(20), || async {
        for_this("raised").iter().any(|d| d.answered == 200)
    })
    .await;
    let raised = for_this("raised");
    assert_eq!(raised[0].answered, 500, "{raised:?}");
    assert_eq!(raised[0].body, raised[1].body, "the retry is the same notification");

    // The cause never goes away, so acknowledging it is what closes it.
    let (status, v) = server
        .call(Method::POST, &format!("/api/v1/alarms/{id}/ack"), Some(&op), Some(json!({ "note": "planned; see work order 17" })))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let a = wait_alarm(&server, &op, Some("hall"), "decommissioned", &["closed"], Duration::from_secs(15)).await;
    assert!(a["clear_detail"].as_str().unwrap().contains("acknowledged by"), "{a:#}");
    wait_until("acknowledged and cleared delivered", Duration::from_secs(20), || async {
        !for_this("acknowledged").is_empty() && !for_this("cleared").is_empty()
    })
    .await;
    for event in ["raised", "acknowledged", "cleared"] {
        for d in for_this(event) {
            d.verify(secret);
            let v = d.json();
            assert_eq!((v["alarm"]["camera_id"].as_str(), v["alarm"]["kind"].as_str()), (Some("hall"), Some("decommissioned")));
        }
    }
    assert_eq!(for_this("cleared")[0].json()["alarm"]["state"], "closed");
    // Not watched any more: a camera that never connected raises no no_frames.
    assert!(alarms(&server, &op, "&camera=hall&kind=no_frames").await.is_empty());
}

on_both_databases!(
    a_stopped_camera_raises_no_frames_within_seconds_and_its_return_clears_it,
    a_camera_recording_for_100_days_with_1_day_of_footage_raises_retention_short_until_it_is_back,
    decommissioning_raises_an_alarm_with_the_reason_that_closes_when_acknowledged_and_the_webhook_gets_it_signed,
);
