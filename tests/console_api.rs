//! The operator console's API against a real server and camsim cameras (a separate
//! process): the overview an operator reads, snapshots audited once per viewer and
//! camera, confirming a camera's view and tuning its tamper thresholds (kept across a
//! restart), "test connection" before adding a camera, and the snapshot cost in
//! /metrics. On SQLite and PostgreSQL (the tamper settings are stored in the database).

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::*;


on_both_databases!(the_console_api_answers_what_an_operator_needs);

async fn the_console_api_answers_what_an_operator_needs(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _camsim = camsim(cam_port, 2).await;
    let mut spec = ServerSpec::new(backend, dir.path()).await;
    spec.segment_seconds = 2;
    spec.extra_toml = "[snapshots]\ninterval_seconds = 1\n".into();
    spec.cameras = vec![
        CameraSpec::new("room-a", &format!("rtsp://127.0.0.1:{cam_port}/cam1")),
        CameraSpec::new("room-b", &format!("rtsp://127.0.0.1:{cam_port}/cam2-h265")),
    ];
    for (user, role) in [("op1", "operator"), ("reg1", "regulator"), ("op2", "operator")] {
        let out = spec.add_user(user, role, "a-long-test-password");
        assert!(out.status.success(), "user add {user}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut server = spec.start().await;
    server.wait_recording("room-a", Duration::from_secs(20)).await;
    server.wait_recording("room-b", Duration::from_secs(20)).await;
    let op = server.login("op1", "a-long-test-password").await;
    let reg = server.login("reg1", "a-long-test-password").await;

    // The overview: every camera with a snapshot, its real rates and today's coverage.
    let started = std::time::Instant::now();
    let ov = loop {
        let (s, v) = server.call(Method::GET, "/api/v1/operator/overview", Some(&op), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let ready = v["cameras"].as_array().unwrap().iter().all(|c| {
            c["snapshot"]["taken"].is_string() && c["bytes_stored"].as_i64().unwrap_or(0) > 0 && c["fps"].is_number()
        });
        if ready {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no snapshot and first segment for both cameras in 30 s: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let cams = ov["cameras"].as_array().unwrap();
    assert_eq!(cams.len(), 2);
    for c in cams {
        let id = c["id"].as_str().unwrap();
        assert_eq!(c["state"], "recording", "{c}");
        let fps = c["fps"].as_f64().unwrap();
        assert!((15.0..=35.0).contains(&fps), "{id}: camsim sends 25 fps, overview says {fps}");
        let mbit = c["bitrate_bps"].as_f64().unwrap() / 1e6;
        let want = if id == "room-a" { 2.0..=7.0 } else { 0.6..=3.0 };
        assert!(want.contains(&mbit), "{id}: bitrate {mbit:.2} Mbit/s, camsim's clip is {want:?}");
        assert!(c["last_frame_age_s"].as_f64().unwrap() < 3.0, "{c}");
        assert!(c["today"]["percent"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["today"]["recorded_s"].as_f64().unwrap() > 0.0, "{c}");
        assert_eq!(c["retention_days"], 90);
        assert!(c["days_kept"].as_f64().unwrap() < 1.0);
        assert_eq!(c["source"], "config");
        assert_eq!(c["snapshot"]["url"], format!("/api/v1/cameras/{id}/snapshot.jpg"));
        assert!(c["tamper"]["active"].as_array().unwrap().is_empty(), "{c}");
    }
    assert_eq!((cams[0]["width"].as_u64(), cams[0]["height"].as_u64()), (Some(1920), Some(1080)), "the camera's size");
    let st = &ov["storage"];
    assert!(st["footage_bytes"].as_i64().unwrap() >= cams.iter().map(|c| c["bytes_stored"].as_i64().unwrap()).sum::<i64>());
    assert!(st["capacity_bytes"].as_i64().unwrap() > 0 && st["bytes_per_day"].as_f64().unwrap() > 0.0, "{st}");
    assert!(st["verdict"].as_str().unwrap().contains("days"), "{st}");
    assert_eq!(ov["floor_days"], 90);
    let (s, _) = server.call(Method::GET, "/api/v1/operator/overview", Some(&reg), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the regulator reads status, not the operator console");

    // Snapshots: a console refreshing every second leaves one audit entry per viewer and camera.
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client.get(format!("{}/api/v1/cameras/room-a/snapshot.jpg", server.base)).bearer_auth(&op).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(&r.bytes().await.unwrap()[..2], &[0xff, 0xd8]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let op2 = server.login("op2", "a-long-test-password").await;
    let r = client.get(format!("{}/api/v1/cameras/room-a/snapshot.jpg", server.base)).bearer_auth(&op2).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let audit = server.get("/api/v1/audit?action=snapshot_viewed&limit=50").await;
    let actors: Vec<&str> = audit["entries"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(actors.iter().filter(|a| **a == "op1").count(), 1, "one entry for op's three looks: {actors:?}");
    assert_eq!(actors.iter().filter(|a| **a == "op2").count(), 1, "another viewer is audited on their own: {actors:?}");

    // Confirm the view and tune a threshold; both survive a restart.
    let (s, v) = server.call(Method::POST, "/api/v1/cameras/room-a/reference", Some(&op), Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["reference"]["confirmed_by"], "op1");
    let (s, v) = server.call(Method::POST, "/api/v1/cameras/room-a/reference", Some(&reg), Some(json!({}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = server.call(Method::PUT, "/api/v1/cameras/room-a/tamper", Some(&op), Some(json!({ "consecutive": 5, "blur_ratio": 0.4 }))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["thresholds"]["consecutive"].as_u64(), v["thresholds"]["blur_ratio"].as_f64()), (Some(5), Some(0.4)));
    assert_eq!(v["thresholds"]["frozen_pictures"], 3, "the others keep their values");
    assert_eq!(v["overridden"], true);
    for (body, want) in [
        (json!({ "blur_ratio": 3 }), "blur_ratio"),
        (json!({ "consecutive": 0 }), "consecutive"),
        (json!({ "sensitivity": 1 }), "sensitivity"),
    ] {
        let (s, v) = server.call(Method::PUT, "/api/v1/cameras/room-a/tamper", Some(&op), Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }
    let (s, _) = server.call(Method::PUT, "/api/v1/cameras/nope/tamper", Some(&op), Some(json!({}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    server.terminate();
    let mut server = spec.start().await;
    server.wait_recording("room-a", Duration::from_secs(20)).await;
    let op = server.login("op1", "a-long-test-password").await;
    let (s, v) = server.call(Method::GET, "/api/v1/cameras/room-a/tamper", Some(&op), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["reference"]["confirmed_by"], "op1", "the confirmed view is kept: {v}");
    assert_eq!(v["thresholds"]["consecutive"], 5, "{v}");
    let (s, v) = server.call(Method::DELETE, "/api/v1/cameras/room-a/tamper", Some(&op), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["overridden"].as_bool(), v["thresholds"]["consecutive"].as_u64()), (Some(false), Some(3)));
    let audit = server.get("/api/v1/audit?action=centre_changed&limit=50").await;
    let tamper_changes = audit["entries"].as_array().unwrap().iter().filter(|e| e["detail"]["tamper_thresholds"].is_object()).count();
    assert_eq!(tamper_changes, 2, "the change and the reset are audited");

    // Test connection: a picture before saving, or why not.
    let test = |body: Value, token: String| {
        let url = format!("{}/api/v1/centre/cameras/test", server.base);
        async move { reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.unwrap() }
    };
    let r = test(json!({ "url": format!("rtsp://127.0.0.1:{cam_port}/cam2") }), op.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-cradle-width"], "1920");
    assert!(r.headers()["x-cradle-codec"].to_str().unwrap().starts_with("avc1"));
    let jpeg = r.bytes().await.unwrap();
    assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
    let r = test(json!({ "url": format!("rtsp://127.0.0.1:{cam_port}/cam9") }), op.clone()).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("check the stream path"), "{e}");
    assert!(!e["error"].as_str().unwrap().contains('\n'), "one line: {e}");
    let r = test(json!({ "url": format!("rtsp://127.0.0.1:{}/cam1", free_port()) }), op.clone()).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("refused"));
    let r = test(json!({ "url": "http://example.com/" }), op.clone()).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "not an RTSP URL");
    let r = test(json!({ "address": "x" }), op.clone()).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = test(json!({ "url": format!("rtsp://127.0.0.1:{cam_port}/cam2") }), reg).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // An operator adds the camera they tested (MISSION: operators add and fix cameras).
    let (s, v) = server
        .call(Method::POST, "/api/v1/centre/cameras", Some(&op), Some(json!({ "id": "hall", "name": "Hall", "url": format!("rtsp://127.0.0.1:{cam_port}/cam2") })))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    server.wait_recording("hall", Duration::from_secs(20)).await;

    // The cost of snapshots is in /metrics.
    wait_until("snapshots counted in /metrics", Duration::from_secs(10), || async {
        let m = server.get_text("/metrics").await;
        let v = |name: &str| -> f64 {
            m.lines()
                .find(|l| l.starts_with(&format!("{name}{{camera=\"room-a\"}}")))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|x| x.parse().ok())
                .unwrap_or(0.0)
        };
        v("cradle_snapshots_total") > 0.0 && v("cradle_snapshot_cpu_seconds_total") > 0.0
    })
    .await;

    // camsim's busy picture raised no tamper alarm in all this time.
    let alarms = server.get("/api/v1/alarms?state=all").await;
    let tamper: Vec<&Value> = alarms["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| ["lens_covered", "picture_frozen", "picture_blurred", "camera_moved"].contains(&a["kind"].as_str().unwrap()))
        .collect();
    assert!(tamper.is_empty(), "a healthy camera raised {tamper:?}");
    let (s, _) = server.call(Method::GET, "/api/v1/alarms/999999/snapshot.jpg", Some(&op), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    server.terminate();
}
