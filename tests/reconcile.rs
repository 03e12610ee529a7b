//! The reconciler against real storage (Garage, a local directory) and both databases:
//! a camsim camera records real segments, then the test tampers with the bucket behind
//! the server's back — deletes a segment's object, plants a valid segment without a row,
//! plants objects that are not segments — and checks what the server (a pass every
//! second: `[retention] reconcile_seconds = 1`) and `cradle reconcile` make of it.

#[macro_use]
mod support;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cradle::config::CameraId;
use cradle::storage::segment_key;
use cradle::time::{format_day, parse_rfc3339};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::*;

on_both_databases!(garage_rows_without_objects_alarm_and_objects_without_rows_are_indexed);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_directory_is_reconciled_by_the_server_itself() {
    scenario(Backend::Sqlite, true).await
}

async fn garage_rows_without_objects_alarm_and_objects_without_rows_are_indexed(backend: Backend) {
    scenario(backend, false).await
}

/// Polls the recordings API until `camera` has at least `n` stored segments; returns them.
async fn stored_segments(server: &Server, camera: &str, since: SystemTime, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored: Vec<Value> = segments(server, camera, since).await.into_iter().filter(|s| s["state"] == "stored").collect();
        if stored.len() >= n {
            return stored;
        }
        assert!(Instant::now() < deadline, "{camera}: {} of {n} segments stored after 60 s; log:\n{}", stored.len(), server.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn segments(server: &Server, camera: &str, since: SystemTime) -> Vec<Value> {
    server.recordings(camera, &rfc3339(since), &now_rfc3339()).await["segments"].as_array().unwrap().clone()
}

async fn segment_with_key(server: &Server, since: SystemTime, key: &str) -> Option<Value> {
    segments(server, "room-1", since).await.into_iter().find(|s| s["key"] == key)
}

/// Polls GET /api/v1/alarms?kind=footage_missing&state=all until `pick` finds an alarm.
async fn wait_alarm(server: &Server, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = server.get("/api/v1/alarms?kind=footage_missing&state=all").await;
        if let Some(a) = v["alarms"].as_array().unwrap().iter().find(|a| pick(a)) {
            return a.clone();
        }
        assert!(Instant::now() < deadline, "no {what} within 30 s; alarms: {v}\nlog:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `cradle reconcile`: (exit code, stdout).
fn reconcile_cli(spec: &ServerSpec, min_age_seconds: Option<u64>) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["reconcile", "--config"]).arg(spec.config_path());
    if let Some(s) = min_age_seconds {
        cmd.args(["--min-age-seconds", &s.to_string()]);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code(), format!("{stdout}\n--- stderr:\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// The same segment as `data` (which starts at `start`), restamped to start at
/// `new_start`: its Cradle metadata (moov/udta/crdl JSON) names its start, and the
/// number keeps its width, so no box size changes.
fn restamped(data: &[u8], start: i64, new_start: i64) -> Vec<u8> {
    let (old, new) = (format!("\"start_us\":{start}"), format!("\"start_us\":{new_start}"));
    assert_eq!(old.len(), new.len());
    let at = data.windows(old.len()).position(|w| w == old.as_bytes()).expect("crdl metadata with start_us");
    let mut out = data.to_vec();
    out[at..at + new.len()].copy_from_slice(new.as_bytes());
    out
}

/// For a local directory: makes objects look written two minutes ago, older than the
/// reconciler's one-minute grace for uploads in flight.
fn backdate(spec: &ServerSpec, keys: &[&str]) {
    for k in keys {
        let f = std::fs::File::options().write(true).open(spec.dir.join("footage").join(k)).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(120)).unwrap();
    }
}

async fn scenario(backend: Backend, local: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _camsim = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(backend, tmp.path()).await;
    if !local {
        spec.storage_toml = garage_storage_toml(&format!("reconcile-{backend:?}-{}", rand::random::<u32>()));
    }
    spec.segment_seconds = 2;
    spec.extra_toml = "[retention]\nreconcile_seconds = 1\n".into();
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    // The planted segment is an hour older than the recording.
    let since = SystemTime::now() - Duration::from_secs(2 * 3600);
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    let recorded = stored_segments(&server, "room-1", since, 3).await;
    let storage = open_storage(&spec);
    let camera = CameraId::parse("room-1").unwrap();

    // Plant a valid segment without a row (a copy of the first, an hour earlier), an
    // object under a segment key that is no segment, and a key outside the scheme.
    let first_key = recorded[0]["key"].as_str().unwrap();
    let first_start = parse_rfc3339(recorded[0]["start"].as_str().unwrap()).unwrap();
    let extra_start = first_start - 3_600_000_000;
    let extra = restamped(&storage.get(first_key).await.unwrap(), first_start, extra_start);
    let extra_key = segment_key(&camera, extra_start);
    let garbage_key = segment_key(&camera, first_start + 1);
    let notes_key = format!("room-1/{}/notes.txt", format_day(first_start));
    storage.put_bytes(&extra_key, Bytes::from(extra.clone())).await.unwrap();
    storage.put_bytes(&garbage_key, Bytes::from_static(b"not a video")).await.unwrap();
    storage.put_bytes(&notes_key, Bytes::from_static(b"a note someone left")).await.unwrap();

    if local {
        // The server's own passes index the planted segment once it is a minute old.
        backdate(&spec, &[&extra_key, &garbage_key]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while segment_with_key(&server, since, &extra_key).await.is_none() {
            assert!(Instant::now() < deadline, "{extra_key} not indexed by the server within 30 s; log:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    // A stored segment's object disappears behind the server's back.
    let victim = &recorded[1];
    let victim_key = victim["key"].as_str().unwrap();
    let victim_data = storage.get(victim_key).await.unwrap();
    storage.delete_many(&[victim_key.to_owned()]).await.unwrap();
    assert!(!storage.exists(victim_key).await.unwrap());
    let alarm = wait_alarm(&server, "footage_missing alarm for room-1", |a| {
        a["camera_id"] == "room-1" && a["state"] == "raised"
    })
    .await;
    let detail = alarm["detail"].as_str().unwrap();
    assert!(detail.starts_with(&format!("1 segment indexed as stored is missing from storage: {victim_key}")), "{detail}");
    assert!(detail.contains(victim["start"].as_str().unwrap()), "the alarm names the time range: {detail}");
    assert_eq!(alarm["breaks_armed"], true);
    // The row stays: it is the proof the footage existed.
    let row = segment_with_key(&server, since, victim_key).await.expect("the missing segment's row is kept");
    assert_eq!(row["state"], "stored");

    // Reported by the server (once): the key outside the scheme at once, the unreadable
    // segment once it is old enough to be read (local: backdated).
    let log = server.log();
    assert!(log.contains(&format!("{notes_key} in")) && log.contains("is not a Cradle segment"), "{log}");
    if local {
        assert!(log.contains(&format!("{garbage_key} in")), "{log}");
    }
    if !local {
        // The pass that raised the alarm started after the plant, and skipped the planted
        // segment: it is younger than a minute (an upload may be racing its row).
        assert!(
            segment_with_key(&server, since, &extra_key).await.is_none(),
            "a fresh object was indexed at once; log:\n{}",
            server.log()
        );
    }

    // The one-shot full pass: reports the loss (exit 3) and the objects that are not segments.
    let (code, out) = reconcile_cli(&spec, if local { None } else { Some(0) });
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(&format!("FOOTAGE MISSING: camera room-1: 1 segment indexed as stored is missing from storage: {victim_key}")),
        "{out}"
    );
    assert!(out.contains(&format!("  {garbage_key}: ")) && out.contains(&format!("  {notes_key}: ")), "{out}");
    if local {
        assert!(!out.contains("re-indexed"), "the server had indexed everything already: {out}");
    } else {
        assert!(out.contains(&format!("re-indexed 1 objects found in the bucket without index rows:\n  {extra_key}\n")), "{out}");
    }

    // Indexed exactly as recorded: the same bytes, frames and duration as the copy's source.
    let row = segment_with_key(&server, since, &extra_key).await.expect("the planted segment is indexed");
    assert_eq!(row["state"], "stored");
    assert_eq!(row["sha256"].as_str().unwrap(), hex::encode(Sha256::digest(&extra)));
    assert_eq!(row["frames"], recorded[0]["frames"]);
    assert_eq!(row["duration_seconds"], recorded[0]["duration_seconds"]);

    // The object comes back (from a backup): the alarm clears by itself.
    storage.put_bytes(victim_key, victim_data).await.unwrap();
    let id = alarm["id"].clone();
    let cleared = wait_alarm(&server, "the footage_missing alarm cleared", |a| a["id"] == id && a["state"] == "cleared").await;
    assert!(cleared["clear_detail"].as_str().unwrap().contains("in storage again"), "{cleared}");

    // Not segments: reported every full pass, never indexed, never deleted.
    let (code, out) = reconcile_cli(&spec, Some(0));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("every indexed segment is in storage"), "{out}");
    assert!(out.contains(&format!("  {garbage_key}: ")) && out.contains(&format!("  {notes_key}: ")), "{out}");
    assert!(!out.contains("re-indexed"), "{out}");
    for k in [&garbage_key, &notes_key] {
        assert!(storage.exists(k).await.unwrap(), "{k} was deleted");
    }
    assert!(segment_with_key(&server, since, &garbage_key).await.is_none(), "garbage was indexed");

    // A row the sweeper has claimed (`deleting`: its object is being deleted) is its
    // business: neither re-indexed back to `stored` while the object is there, nor
    // footage missing once the object is gone.
    let claimed = recorded[2]["key"].as_str().unwrap();
    let db = cradle::db::Db::connect(&spec.database_url).await.unwrap();
    sqlx::query("UPDATE segments SET state = 'deleting' WHERE object_key = $1")
        .bind(claimed)
        .execute(db.pool())
        .await
        .unwrap();
    let (code, out) = reconcile_cli(&spec, Some(0));
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("re-indexed"), "{out}");
    assert_eq!(db.segment_state(claimed).await.unwrap().as_deref(), Some("deleting"));
    storage.delete_many(&[claimed.to_owned()]).await.unwrap();
    let (code, out) = reconcile_cli(&spec, Some(0));
    assert_eq!(code, Some(0), "a deleting row's object is not missing footage: {out}");
    db.close().await;
}
