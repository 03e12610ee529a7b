//! The operator console with real parts: the `cradle` binary recording two camsim
//! processes (one with two cameras, one with a camera the test stops), and a member of
//! staff on a phone in headless Debian Chromium (tests/web/operator_page.py) who sees every
//! camera's snapshot and health, plays one live, acknowledges the alarm the stopped camera
//! raises, and adds a camera after a test connection. Screenshots are kept in
//! target/test-artifacts/.

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use support::*;
use tokio::process::Command;

const PASSWORD: &str = "a long enough password";
const OPERATOR: &str = "operator1";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A block of 20 UDP ports nobody holds now, for the server's `[live] udp_ports`.
fn udp_ports() -> (u16, u16) {
    loop {
        let lo = 40_000 + 20 * rand::random_range(0..1_000u16);
        let held: Vec<_> = (lo..lo + 20).map_while(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).ok()).collect();
        if held.len() == 20 {
            return (lo, lo + 19);
        }
    }
}

/// tests/web/operator_page.py in headless Chromium, printing one JSON event per line.
struct Page;

impl Page {
    fn start(base: &str, user: &str, args: &[&str]) -> Events {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(repo("tests/web/operator_page.py")).args([base, user, PASSWORD]).args(args);
        Events::spawn("operator_page.py", cmd)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_every_camera_and_acknowledges_the_alarm_of_a_stopped_camera() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let _sim_a = camsim(port_a, 2).await;
    let mut sim_b = camsim(port_b, 1).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, dir.path()).await;
    spec.cameras.push(CameraSpec::new("infant-room", &format!("rtsp://127.0.0.1:{port_a}/cam1")));
    spec.cameras.push(CameraSpec::new("toddler-room", &format!("rtsp://127.0.0.1:{port_a}/cam2")));
    spec.cameras.push(CameraSpec::new("entrance", &format!("rtsp://127.0.0.1:{port_b}/cam1")));
    let (lo, hi) = udp_ports();
    spec.extra_toml = format!(
        "[snapshots]\ninterval_seconds = 1\n[watchdog]\nno_frames_seconds = 3\n\
         [live]\nudp_ports = \"{lo}-{hi}\"\nbind = [\"127.0.0.1\"]\n"
    );
    for (user, role) in [(OPERATOR, "operator"), ("police1", "investigator")] {
        let out = spec.add_user(user, role, PASSWORD);
        assert!(out.status.success(), "cradle user add {user}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let server = spec.start().await;
    for id in ["infant-room", "toddler-room", "entrance"] {
        server.wait_recording(id, Duration::from_secs(30)).await;
    }

    let shot = repo("target/test-artifacts/operator-console.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let add_url = format!("rtsp://127.0.0.1:{port_a}/cam1");
    let mut page = Page::start(
        &server.base,
        OPERATOR,
        &[
            "--cameras",
            "infant-room,toddler-room,entrance",
            "--killed",
            "entrance",
            "--add-id",
            "hall",
            "--add-url",
            &add_url,
            "--screenshot",
            shot.to_str().unwrap(),
        ],
    );
    let grid = page.event("grid", Duration::from_secs(120)).await;
    for id in ["infant-room", "toddler-room", "entrance"] {
        assert!(grid["cameras"][id][0].as_u64().unwrap_or(0) > 0, "a decoded snapshot of {id}: {grid}");
    }

    // The camera stops: its camsim process goes away, the recorder stays.
    sim_b.kill();

    let reference = page.event("reference", Duration::from_secs(30)).await;
    let live = page.event("live", Duration::from_secs(60)).await;
    let acked = page.event("acknowledged", Duration::from_secs(120)).await;
    let added = page.event("added", Duration::from_secs(120)).await;
    let done = page.event("done", Duration::from_secs(60)).await;
    page.finish().await;
    for p in done["screenshots"].as_array().unwrap() {
        println!("screenshot: {}", p.as_str().unwrap());
    }
    assert!(shot.exists(), "the screenshot {} was written", shot.display());

    // The server agrees with what the page showed.
    let alarm_id = acked["alarm"].as_i64().unwrap();
    let alarms = server.get("/api/v1/alarms?state=all&kind=no_frames&camera=entrance").await;
    let alarm = alarms["alarms"].as_array().unwrap().iter().find(|a| a["id"] == alarm_id).unwrap_or_else(|| panic!("{alarms}"));
    assert_eq!(alarm["acknowledged_by"], OPERATOR, "{alarm}");
    assert_eq!(alarm["ack_note"], acked["note"], "{alarm}");
    assert!(alarm["cleared_at"].is_null(), "the camera is still stopped: {alarm}");

    let overview = server.get("/api/v1/operator/overview").await;
    let cam = |id: &str| overview["cameras"].as_array().unwrap().iter().find(|c| c["id"] == id).cloned().unwrap_or_else(|| panic!("{id}: {overview}"));
    assert_eq!(cam(reference["camera"].as_str().unwrap())["tamper"]["reference"]["confirmed_by"], OPERATOR, "{overview}");
    assert_eq!(cam("hall")["source"], "database", "{overview}");
    let tamper = server.get(&format!("/api/v1/cameras/{}/tamper", reference["camera"].as_str().unwrap())).await;
    assert_eq!((tamper["overridden"].as_bool(), tamper["thresholds"]["consecutive"].as_u64()), (Some(true), Some(4)), "set on the page: {tamper}");
    assert_eq!(tamper["thresholds"]["blur_ratio"], 0.5, "the refused value was not stored: {tamper}");
    assert!(added["width"].as_u64().unwrap_or(0) > 0, "{added}");

    // Staff viewing, acknowledging and adding a camera are in the audit log, by name.
    for action in ["alarm_acknowledged", "live_view_start", "snapshot_viewed", "centre_changed", "camera_tested"] {
        let audit = server.get(&format!("/api/v1/audit?actor={OPERATOR}&action={action}&limit=5")).await;
        assert!(!audit["entries"].as_array().unwrap().is_empty(), "no {action} by {OPERATOR} in the audit log (live: {live})");
    }

    // Another role is told the console is not for them.
    let mut denied = Page::start(&server.base, "police1", &["--expect-denied"]);
    denied.event("denied", Duration::from_secs(60)).await;
    denied.finish().await;
    let (status, _) = server.call(Method::GET, "/api/v1/operator/overview", Some(&server.login("police1", PASSWORD).await), None).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "the overview is for operators and admins");
}
