//! `cradle centre …` against a real database: the centre's rules hold from the command
//! line too, failures exit 2 with the reason, and every change is audited; a running
//! server takes up the cameras the command line changes at once.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn centre(spec: &ServerSpec, args: &[&str]) -> (i32, Value, String) {
    let config = spec.write_config();
    let out = Command::new(BIN).args(["centre", "--config"]).arg(&config).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v, String::from_utf8_lossy(&out.stderr).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_centre_is_managed_from_the_command_line_under_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(Backend::Sqlite, dir.path()).await;
    spec.cameras.push(CameraSpec::new("room-1", "rtsp://127.0.0.1:9/none"));
    spec.cameras.push(CameraSpec::new("nappy", "rtsp://127.0.0.1:9/none"));

    let (code, room, err) = centre(&spec, &["classroom-add", "--json", r#"{"name":"向日葵 Sunflowers","kind":"toddler"}"#]);
    assert_eq!(code, 0, "{err}");
    let room_id = room["id"].as_i64().unwrap();
    assert_eq!(room["capacity"], 15);
    let (code, _, err) = centre(&spec, &["classroom-add", "--json", r#"{"name":"Too big","kind":"infant","capacity":11}"#]);
    assert_eq!(code, 2);
    assert!(err.contains("10"), "{err}");

    for i in 0..15 {
        let body = format!(r#"{{"name":"Child {i}","classroom_id":{room_id}}}"#);
        let (code, _, err) = centre(&spec, &["child-add", "--json", &body]);
        assert_eq!(code, 0, "{err}");
    }
    let body = format!(r#"{{"name":"Child 16","classroom_id":{room_id}}}"#);
    let (code, _, err) = centre(&spec, &["child-add", "--json", &body]);
    assert_eq!(code, 2);
    assert!(err.contains("is full: 15 of 15"), "{err}");

    let (code, area, _) = centre(&spec, &["area-add", "--json", r#"{"name":"换尿布间 Nappy room","private":true}"#]);
    assert_eq!(code, 0);
    let placed = format!(r#"{{"placement":{{"kind":"area","area_id":{}}},"parent_viewable":true}}"#, area["id"]);
    let (code, _, err) = centre(&spec, &["camera-set", "--camera", "nappy", "--json", &placed]);
    assert_eq!(code, 2, "a private-area camera must never be viewable");
    assert!(err.contains("private"), "{err}");
    let (code, _, err) = centre(&spec, &["camera-set", "--camera", "not-configured", "--json", "{}"]);
    assert_eq!(code, 2);
    assert!(err.contains("not in"), "{err}");
    let placed = format!(r#"{{"placement":{{"kind":"classroom","classroom_id":{room_id}}},"parent_viewable":true}}"#);
    let (code, _, err) = centre(&spec, &["camera-set", "--camera", "room-1", "--json", &placed]);
    assert_eq!(code, 0, "{err}");

    let (code, g, err) = centre(&spec, &["guardian-add", "--json", r#"{"username":"ms.wang","display_name":"王妈妈"}"#]);
    assert_eq!(code, 0, "{err}");
    let (code, shown, _) = centre(&spec, &["show"]);
    assert_eq!(code, 0);
    let child = shown["children"][0]["id"].to_string();
    let guardian = g["id"].to_string();
    assert_eq!(centre(&spec, &["guardian-link", "--guardian", &guardian, "--child", &child, "--relationship", "mother"]).0, 0);
    let (code, _, err) = centre(&spec, &["consent", "--guardian", &guardian, "--child", &child, "--state", "maybe"]);
    assert_eq!(code, 2);
    assert!(err.contains("given or withdrawn"), "{err}");
    assert_eq!(centre(&spec, &["consent", "--guardian", &guardian, "--child", &child, "--state", "given"]).0, 0);

    // The guardian's account now sees exactly that camera.
    let db = cradle::db::Db::connect(&spec.database_url).await.unwrap();
    let ids: Vec<String> = db.cameras_viewable_by_guardian("ms.wang").await.unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(ids, vec!["room-1"]);
    // Every change is in the audit log, attributed to the command line.
    let q = cradle::audit::AuditQuery { actor: None, limit: Some(1000), ..Default::default() };
    let entries = cradle::audit::list(&db, &q).await.unwrap();
    let changes = entries.iter().filter(|e| e.action == "centre_changed").count();
    let consents = entries.iter().filter(|e| e.action == "consent_changed").count();
    assert_eq!((changes, consents), (1 + 15 + 1 + 1 + 1 + 1, 1), "{entries:?}");
    assert!(entries.iter().all(|e| e.actor.as_deref().is_some_and(|a| a.starts_with("cli:"))));
}

/// The CLI writes the database directly, then tells a server running on the same data
/// directory (a file it watches): the server looks at the cameras at once, not at its
/// once-a-minute poll, which only catches what nobody told it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_takes_up_cameras_changed_by_the_cli_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _cameras = camsim(cam_port, 2).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, dir.path()).await;
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(30)).await;
    // Past the server's first looks at the database, which run at start.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let added = format!(r#"{{"id":"room-2","name":"Room 2","url":"rtsp://127.0.0.1:{cam_port}/cam2"}}"#);
    let (code, _, err) = centre(&spec, &["camera-add", "--json", &added]);
    assert_eq!(code, 0, "{err}");
    server.wait_recording("room-2", Duration::from_secs(20)).await;

    let (code, _, err) = centre(&spec, &["camera-decommission", "--camera", "room-1", "--reason", "moved to the new wing"]);
    assert_eq!(code, 0, "{err}");
    wait_until("room-1 decommissioned on the server", Duration::from_secs(10), || async {
        server.camera("room-1").await["health"]["state"] == "decommissioned"
    })
    .await;
    assert!(server.log().contains("cameras changed by another process"), "{}", server.log());
}
