//! Recording end to end, against real parts: the GStreamer RTSP server and camsim as
//! cameras, Garage as S3, SQLite and PostgreSQL as the index.

#[macro_use]
mod support;

use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use support::*;

on_both_databases!(
    gstreamer_camera_with_digest_auth_records_into_garage_for_minutes,
    kill_dash_nine_mid_segment_loses_at_most_one_keyframe_interval,
    sigterm_stores_the_segment_in_progress_within_30_seconds,
    reindex_rebuilds_the_index_from_the_bucket_alone,
);

/// Checks every indexed segment of `camera` against its object: present, same bytes,
/// same SHA-256, and plays in ffprobe with the indexed frame count.
async fn verify_objects(spec: &ServerSpec, segments: &[serde_json::Value], probe_all: bool) {
    let storage = open_storage(spec);
    for (i, s) in segments.iter().enumerate() {
        let key = s["key"].as_str().unwrap();
        assert_eq!(s["state"], "stored", "segment {key} not stored");
        let data = storage.get(key).await.unwrap_or_else(|e| panic!("object {key} missing: {e}"));
        assert_eq!(data.len() as i64, s["bytes"].as_i64().unwrap(), "{key} size");
        assert_eq!(hex::encode(Sha256::digest(&data)), s["sha256"].as_str().unwrap(), "{key} sha256");
        if probe_all || i == 0 || i == segments.len() - 1 {
            let f = spec.dir.join("probe.mp4");
            std::fs::write(&f, &data).unwrap();
            let (codec, frames, duration) = ffprobe(&f);
            assert!(codec == "h264" || codec == "hevc", "{key}: codec {codec}");
            assert_eq!(frames as i64, s["frames"].as_i64().unwrap(), "{key}: frames played by ffprobe");
            let indexed = s["duration_seconds"].as_f64().unwrap();
            assert!((duration - indexed).abs() < 0.1, "{key}: ffprobe {duration} s vs index {indexed} s");
        }
    }
}

async fn gstreamer_camera_with_digest_auth_records_into_garage_for_minutes(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _camera = gst_camera(cam_port, "cradle", "s3cret-digest", &["--width", "640", "--height", "360"]).await;
    let mut spec = ServerSpec::new(backend, tmp.path()).await;
    spec.storage_toml = garage_storage_toml(&format!("gst-{:?}-{}", backend, rand::random::<u32>()));
    spec.segment_seconds = 20;
    spec.cameras.push(
        CameraSpec::new("classroom", &format!("rtsp://127.0.0.1:{cam_port}/cam")).creds("cradle", "s3cret-digest"),
    );
    let mut server = spec.start().await;
    let t_start = SystemTime::now();
    server.wait_recording("classroom", Duration::from_secs(30)).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(150)).await;
    let wall = t0.elapsed().as_secs_f64();
    server.terminate();

    // Restart briefly to read the index through the API (the process that recorded is gone).
    let server = spec.start().await;
    let rec = server.recordings("classroom", &rfc3339(t_start), &now_rfc3339()).await;
    let segments = rec["segments"].as_array().unwrap();
    assert!(segments.len() >= 7, "expected ≥ 7 segments of 20 s in 150 s, got {}", segments.len());
    let recorded: f64 = segments.iter().map(|s| s["duration_seconds"].as_f64().unwrap()).sum();
    // Recording starts at the camera's first keyframe (≤ one 2 s GOP after "recording").
    assert!(
        (recorded - wall).abs() <= wall * 0.01 + 2.0,
        "recorded {recorded:.2} s of {wall:.2} s wall time (more than 1% + one GOP apart)"
    );
    // Consecutive segments of one run are contiguous on the wall clock.
    for w in segments.windows(2) {
        let hole = secs(&w[1]["start"]) - secs(&w[0]["end"]);
        assert!(hole.abs() < 0.25, "hole of {hole} s between {} and {}", w[0]["key"], w[1]["key"]);
    }
    // Index and bucket agree: every row has its object, and no object lacks a row.
    verify_objects(&spec, segments, false).await;
    let objects = open_storage(&spec).list(Some("classroom")).await.unwrap();
    assert_eq!(objects.len(), segments.len(), "objects in the bucket vs index rows");
    assert!(segments.iter().all(|s| s["codec"].as_str().unwrap().starts_with("avc1")));
}

async fn kill_dash_nine_mid_segment_loses_at_most_one_keyframe_interval(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _camsim = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(backend, tmp.path()).await;
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let t_start = SystemTime::now();
    let mut server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let last_frame = secs(&server.camera("room-1").await["last_frame_at"]);
    server.kill9();
    let killed_at = SystemTime::now();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let server = spec.start().await;
    wait_until("the recovered segment to be stored", Duration::from_secs(30), || async {
        server.status().await["spool"]["backlog_segments"] == 0
    })
    .await;
    let rec = server.recordings("room-1", &rfc3339(t_start), &rfc3339(killed_at)).await;
    let segments = rec["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "the one segment in progress at kill -9 is recovered: {rec:#}");
    let end = secs(&segments[0]["end"]);
    let lost = last_frame - end;
    // The GOP being collected (≤ 2 s at camsim's 50-frame GOP) plus the frame in flight.
    assert!(lost <= 2.1, "lost {lost:.2} s of footage at kill -9 (more than one keyframe interval)");
    assert!(segments[0]["duration_seconds"].as_f64().unwrap() >= 6.0, "{:#}", segments[0]);
    verify_objects(&spec, segments, true).await;

    // The restart leaves a gap whose cause is the crash.
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    let rec = server.recordings("room-1", &rfc3339(t_start), &now_rfc3339()).await;
    let crash_gap = rec["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| secs(&g["start"]) >= end - 0.5 && secs(&g["start"]) <= end + 0.5)
        .unwrap_or_else(|| panic!("no gap starting at the crash: {rec:#}"));
    assert_eq!(crash_gap["cause"], "server_crashed", "{crash_gap:#}");
}

async fn sigterm_stores_the_segment_in_progress_within_30_seconds(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _camsim = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(backend, tmp.path()).await;
    spec.storage_toml = garage_storage_toml(&format!("term-{:?}-{}", backend, rand::random::<u32>()));
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let t_start = SystemTime::now();
    let mut server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let took = server.terminate();
    assert!(took < Duration::from_secs(30), "SIGTERM took {took:?}");
    let spool = spec.dir.join("data/spool/room-1");
    let left: Vec<_> = std::fs::read_dir(&spool).map(|d| d.collect()).unwrap_or_default();
    assert!(left.is_empty(), "spool not drained at exit: {left:?}");

    let server = spec.start().await;
    let rec = server.recordings("room-1", &rfc3339(t_start), &now_rfc3339()).await;
    let segments = rec["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "{rec:#}");
    let d = segments[0]["duration_seconds"].as_f64().unwrap();
    assert!((5.0..=10.0).contains(&d), "segment in progress stored with {d} s");
    verify_objects(&spec, segments, true).await;
}

async fn reindex_rebuilds_the_index_from_the_bucket_alone(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _camsim = camsim(cam_port, 2).await;
    let mut spec = ServerSpec::new(backend, tmp.path()).await;
    spec.storage_toml = garage_storage_toml(&format!("reindex-{:?}-{}", backend, rand::random::<u32>()));
    spec.segment_seconds = 4;
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    spec.cameras.push(CameraSpec::new("hall", &format!("rtsp://127.0.0.1:{cam_port}/cam2-h265")));
    let t_start = SystemTime::now();
    let mut server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    server.wait_recording("hall", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(13)).await;
    server.terminate();
    let server = spec.start().await;
    let before_1 = server.recordings("room-1", &rfc3339(t_start), &now_rfc3339()).await;
    let before_h = server.recordings("hall", &rfc3339(t_start), &now_rfc3339()).await;
    drop(server);
    assert!(before_1["segments"].as_array().unwrap().len() >= 3);
    assert!(before_h["segments"].as_array().unwrap()[0]["codec"].as_str().unwrap().starts_with("hvc1"));
    verify_objects(&spec, before_h["segments"].as_array().unwrap(), false).await;

    // A brand-new, empty index; only the bucket is left.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    spec.database_url = fresh_database(backend, &fresh).await;
    spec.write_config();
    let out = std::process::Command::new(BIN)
        .args(["reindex", "--config"])
        .arg(spec.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "reindex failed: {}", String::from_utf8_lossy(&out.stderr));
    let server = spec.start().await;
    for (cam, before) in [("room-1", &before_1), ("hall", &before_h)] {
        let after = server.recordings(cam, &rfc3339(t_start), &now_rfc3339()).await;
        let pick = |v: &serde_json::Value| -> Vec<(String, String, i64, i64)> {
            v["segments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["key"].as_str().unwrap().to_owned(),
                        s["sha256"].as_str().unwrap().to_owned(),
                        s["frames"].as_i64().unwrap(),
                        s["bytes"].as_i64().unwrap(),
                    )
                })
                .collect()
        };
        let mut a = pick(&after);
        a.retain(|x| pick(before).iter().any(|b| b.0 == x.0));
        assert_eq!(a, pick(before), "camera {cam}: reindexed rows differ from the recorded ones");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_keeps_everything_in_the_spool_and_drains_when_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let garage = OwnGarage::start(&tmp.path().join("garage"), None);
    let cam_port = free_port();
    let _camsim = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.storage_toml = garage.storage_toml();
    spec.segment_seconds = 4;
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let t_start = SystemTime::now();
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    garage.stop();
    let outage_start = Instant::now();
    wait_until("the backlog to grow while storage is down", Duration::from_secs(40), || async {
        let s = server.status().await;
        s["spool"]["backlog_segments"].as_u64().unwrap() >= 3 && s["storage"]["healthy"] == false
    })
    .await;
    let metrics = server.get_text("/metrics").await;
    assert!(metrics.contains("cradle_storage_up 0"), "{metrics}");
    assert!(outage_start.elapsed() < Duration::from_secs(40));
    tokio::time::sleep(Duration::from_secs(5)).await;

    let _garage = OwnGarage::start(&tmp.path().join("garage"), Some(garage.ports));
    wait_until("the backlog to drain", Duration::from_secs(60), || async {
        let s = server.status().await;
        s["spool"]["backlog_segments"] == 0 && s["storage"]["healthy"] == true
    })
    .await;
    // At least six segments: before, through and after the outage. On a loaded machine
    // uploads lag, the backlog reaches 3 sooner and the outage is shorter, so this waits
    // for the sixth rather than counting at once.
    wait_until("six segments stored", Duration::from_secs(40), || async {
        let rec = server.recordings("room-1", &rfc3339(t_start), &now_rfc3339()).await;
        rec["segments"].as_array().unwrap().iter().filter(|s| s["state"] == "stored").count() >= 6
    })
    .await;
    let end = now_rfc3339();
    let rec = server.recordings("room-1", &rfc3339(t_start), &end).await;
    let segments = rec["segments"].as_array().unwrap();
    assert!(segments.len() >= 6, "{rec:#}");
    // Nothing lost during the outage: no gap between the first and the last segment.
    let first = secs(&segments[0]["start"]);
    let last = secs(&segments[segments.len() - 1]["end"]);
    for g in rec["gaps"].as_array().unwrap() {
        assert!(
            secs(&g["end"]) <= first + 0.25 || secs(&g["start"]) >= last - 0.25,
            "gap inside the recording during the outage: {g:#}"
        );
    }
    verify_objects(&spec, segments, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_killed_and_restarted_leaves_a_gap_with_its_cause_and_recording_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let mut cam = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.segment_seconds = 4;
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let t_start = SystemTime::now();
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    cam.kill();
    let down_at = SystemTime::now();
    wait_until("the camera to be seen offline", Duration::from_secs(20), || async {
        server.camera("room-1").await["state"] == "failed"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _cam = camsim(cam_port, 1).await;
    let up_at = SystemTime::now();
    server.wait_recording("room-1", Duration::from_secs(45)).await;
    // Recording resumes by itself: a whole segment (4 s) after the camera's return is
    // indexed. How soon depends on the machine's load (the segment's close, its spool
    // write and its upload), so this waits for it rather than for a fixed time.
    let resumed = |rec: &serde_json::Value| {
        let gap_end = rec["gaps"].as_array().unwrap().iter().map(|g| secs(&g["end"])).fold(f64::MIN, f64::max);
        rec["segments"].as_array().unwrap().iter().any(|s| secs(&s["start"]) >= gap_end - 0.1)
    };
    wait_until("a segment recorded after the camera came back", Duration::from_secs(30), || async {
        resumed(&server.recordings("room-1", &rfc3339(t_start), &now_rfc3339()).await)
    })
    .await;
    let rec = server.recordings("room-1", &rfc3339(t_start), &now_rfc3339()).await;
    let gaps: Vec<_> = rec["gaps"].as_array().unwrap().iter().collect();
    let outage = gaps
        .iter()
        .find(|g| secs(&g["start"]) > secs(&serde_json::json!(rfc3339(t_start))) + 1.0)
        .unwrap_or_else(|| panic!("no gap for the camera outage: {rec:#}"));
    assert_eq!(outage["cause"], "camera_offline", "{outage:#}");
    let (gs, ge) = (secs(&outage["start"]), secs(&outage["end"]));
    let (down, up) = (secs(&serde_json::json!(rfc3339(down_at))), secs(&serde_json::json!(rfc3339(up_at))));
    assert!((gs - down).abs() < 3.0, "gap starts {gs}, camera killed {down}");
    assert!(ge >= up - 0.5 && ge < up + 35.0, "gap ends {ge}, camera back {up}");
    let after: Vec<_> = rec["segments"].as_array().unwrap().iter().filter(|s| secs(&s["start"]) >= ge - 0.1).collect();
    assert!(!after.is_empty(), "recording resumed after the camera came back: {rec:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_camera_wrong_password_and_garbage_get_clear_errors_while_others_record() {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let gst_port = free_port();
    let dead_port = free_port();
    let _camsim = camsim(cam_port, 2).await;
    let _gst = gst_camera(gst_port, "admin", "right-password", &["--width", "320", "--height", "240"]).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.segment_seconds = 4;
    spec.cameras.push(CameraSpec::new("good", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    spec.cameras.push(CameraSpec::new("good-h265", &format!("rtsp://127.0.0.1:{cam_port}/cam2-h265")));
    spec.cameras.push(CameraSpec::new("unplugged", &format!("rtsp://127.0.0.1:{dead_port}/stream")));
    spec.cameras
        .push(CameraSpec::new("wrong-pass", &format!("rtsp://127.0.0.1:{gst_port}/cam")).creds("admin", "wrong"));
    spec.cameras.push(CameraSpec::new("garbage", &format!("rtsp://127.0.0.1:{cam_port}/garbage")));
    let t_start = SystemTime::now();
    let server = spec.start().await;
    server.wait_recording("good", Duration::from_secs(20)).await;
    wait_until("the bad cameras to report their errors", Duration::from_secs(30), || async {
        server.camera("unplugged").await["state"] == "failed" && server.camera("wrong-pass").await["state"] == "failed"
    })
    .await;
    let unplugged = server.camera("unplugged").await;
    let err = unplugged["last_error"].as_str().unwrap();
    assert!(err.contains("unplugged") && err.to_lowercase().contains("refused"), "{err}");
    let wrong = server.camera("wrong-pass").await;
    let err = wrong["last_error"].as_str().unwrap();
    assert!(err.contains("401") && err.contains("check username/password"), "{err}");

    tokio::time::sleep(Duration::from_secs(12)).await;
    let garbage = server.camera("garbage").await;
    assert_ne!(garbage["state"], "recording", "garbage stream must not look healthy: {garbage:#}");
    for cam in ["good", "good-h265"] {
        let c = server.camera(cam).await;
        assert_eq!(c["state"], "recording", "{c:#}");
        // A segment that has just closed is `spooled` until its upload lands.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let rec = loop {
            let rec = server.recordings(cam, &rfc3339(t_start), &now_rfc3339()).await;
            if rec["segments"].as_array().unwrap().iter().all(|s| s["state"] == "stored") {
                break rec;
            }
            assert!(std::time::Instant::now() < deadline, "{cam}: segments not stored within 10 s: {rec:#}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(rec["segments"].as_array().unwrap().len() >= 2, "{cam} keeps recording: {rec:#}");
        verify_objects(&spec, rec["segments"].as_array().unwrap(), true).await;
    }
    let metrics = server.get_text("/metrics").await;
    assert!(metrics.contains("cradle_camera_recording{camera=\"good\"} 1"), "{metrics}");
    assert!(metrics.contains("cradle_camera_recording{camera=\"unplugged\"} 0"), "{metrics}");
}

/// A tmpfs refuses `O_DIRECT`, so its spool files take the buffered path (a write and an
/// fdatasync per GOP on a spool thread); ext4, what a real spool disk is, takes the
/// asynchronous direct path (preallocation, AIO writes): both must fill up the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_disk_drops_new_footage_with_a_recorded_cause_and_keeps_everything_spooled() {
    full_spool_disk(SpoolFs::Tmpfs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_ext4_spool_disk_drops_new_footage_with_a_recorded_cause_and_keeps_everything_spooled() {
    full_spool_disk(SpoolFs::Ext4).await;
}

enum SpoolFs {
    Tmpfs,
    Ext4,
}

async fn full_spool_disk(fs: SpoolFs) {
    let tmp = tempfile::tempdir().unwrap();
    // A real full disk: the spool on a 24 MiB file system, storage down so nothing drains.
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mount = |args: &[&str]| std::process::Command::new("mount").args(args).arg(&spool).status().unwrap();
    let min_free_mb = match fs {
        SpoolFs::Tmpfs => {
            assert!(mount(&["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).success(), "mounting a tmpfs (tests run as root)");
            4
        }
        SpoolFs::Ext4 => {
            let image = tmp.path().join("spool.ext4");
            std::fs::File::create(&image).unwrap().set_len(24 << 20).unwrap();
            let made = std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image).status().unwrap();
            assert!(made.success(), "mkfs.ext4 {}", image.display());
            assert!(mount(&["-o", "loop", image.to_str().unwrap()]).success(), "mounting an ext4 image (tests run as root)");
            // No reserve: the spool runs into ENOSPC itself, in a preallocation or a write.
            0
        }
    };
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(spool.clone());
    let garage = OwnGarage::start(&tmp.path().join("garage"), None);
    garage.stop();

    let cam_port = free_port();
    let _camsim = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.storage_toml = garage.storage_toml();
    spec.segment_seconds = 4;
    spec.extra_toml = format!("[spool]\ndir = \"{}\"\nmin_free_mb = {min_free_mb}\n", spool.display());
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let t_start = SystemTime::now();
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    wait_until("the spool to fill and footage to be dropped", Duration::from_secs(90), || async {
        server.camera("room-1").await["frames_dropped"].as_u64().unwrap() > 50
    })
    .await;
    if let SpoolFs::Ext4 = fs {
        // No reserve, so the writes themselves failed (ENOSPC). Writes are not tried
        // again at every keyframe (a failure, an event and an alarm flap each time) but
        // after 10 s, then 20 s, ... or once uploads free space: in 30 s of a full disk,
        // the first failure and at most two retries.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let log = server.log();
        let failures = log.matches("spool write failed").count();
        let resumed = log.matches("spool has room again").count();
        assert_eq!(resumed, 0, "a retry that fails is no resumption (the alarm does not flap):\n{log}");
        assert!((1..=3).contains(&failures), "{failures} failed spool writes in 30 s of a full disk:\n{log}");
    }
    let spooled_before = server.status().await["spool"]["backlog_segments"].as_u64().unwrap();
    assert!(spooled_before >= 3);

    let _garage = OwnGarage::start(&tmp.path().join("garage"), Some(garage.ports));
    wait_until("the spool to drain and recording to resume", Duration::from_secs(90), || async {
        let s = server.status().await;
        s["spool"]["uploaded_segments"].as_u64().unwrap() >= spooled_before + 2
    })
    .await;
    let rec = server.recordings("room-1", &rfc3339(t_start), &now_rfc3339()).await;
    let gaps = rec["gaps"].as_array().unwrap();
    assert!(gaps.iter().any(|g| g["cause"] == "spool_full"), "the dropped span is a gap caused by spool_full: {rec:#}");
    let segments: Vec<_> = rec["segments"].as_array().unwrap().iter().filter(|s| s["state"] == "stored").cloned().collect();
    assert!(segments.len() as u64 >= spooled_before + 2);
    // Everything that reached the spool was kept and stored intact.
    verify_objects(&spec, &segments, false).await;
}

#[test]
fn malformed_configs_fail_with_file_key_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nlisten = \"nonsense\"\n", "server.listen"),
        ("[server]\n[[cameras]]\nid = \"Room 1\"\nurl = \"rtsp://h/1\"\n", "cameras[0].id"),
        ("[server]\n[[cameras]]\nid = \"a\"\nurl = \"http://h/1\"\n", "cameras[0].url"),
        ("[server]\n[storage]\nurl = \"ftp://x\"\n", "storage.url"),
        ("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n", "line 3"),
        ("[server\n", "line 1"),
        ("[server]\n[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/1\"\nusername = \"u\"\npassword = \"${CRADLE_TEST_NOT_SET_EVER}\"\n", "cameras[0].password"),
    ];
    for (text, key) in cases {
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        for cmd in ["check-config", "serve"] {
            let out = std::process::Command::new(BIN).args([cmd, "--config"]).arg(&path).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cmd} accepted:\n{text}");
            assert!(stderr.contains(path.to_str().unwrap()), "{cmd}: no file name in {stderr:?}");
            assert!(stderr.contains(key), "{cmd}: no key {key:?} in {stderr:?}");
        }
    }
    let good = tmp.path().join("good.toml");
    std::fs::write(&good, "[server]\n[[cameras]]\nid = \"room-1\"\nurl = \"rtsp://192.0.2.10/1\"\n").unwrap();
    let out = std::process::Command::new(BIN).args(["check-config", "--config"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The shipped configs are valid.
    for f in ["config/cradle.toml", "config/s3.example.toml"] {
        let out = std::process::Command::new(BIN)
            .args(["check-config", "--config", f])
            .env("CRADLE_S3_ACCESS_KEY_ID", "x")
            .env("CRADLE_S3_SECRET_ACCESS_KEY", "y")
            .env("CRADLE_CAM_ROOM1_PASSWORD", "z")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The value of `name` for camera `room-1` in a Prometheus text exposition.
fn room_1_metric(metrics: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{camera=\"room-1\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// One camera with a regular GOP (camsim's: 2 s) wakes the capture thread once per GOP,
/// just after each keyframe, instead of every 500 ms batch (see crate::capture): a
/// quarter of the wake-ups, and a crash loses the GOP being collected and no more than
/// 150 ms besides. Nothing is lost to the longer sleeps, across segment ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_camera_is_read_once_per_gop_just_after_its_keyframe() {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _camsim = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.segment_seconds = 4;
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    // Past the session's first seconds (read as they come) and two GOPs to learn the GOP.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let metric = |m: &str, name: &str| -> f64 {
        m.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or_else(|| panic!("no {name} in\n{m}")).trim().parse().unwrap()
    };
    let m0 = server.get_text("/metrics").await;
    let start = Instant::now();
    let mut ages = String::new();
    let mut oldest = 0.0f64;
    while start.elapsed() < Duration::from_secs(20) {
        let m = server.get_text("/metrics").await;
        let newest = room_1_metric(&m, "cradle_camera_last_frame_timestamp_seconds");
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
        oldest = oldest.max(now - newest);
        ages += &format!(" {:.2}", now - newest);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m1 = server.get_text("/metrics").await;
    let window = start.elapsed().as_secs_f64();
    let ticks = metric(&m1, "cradle_capture_ticks_total") - metric(&m0, "cradle_capture_ticks_total");
    let frames = room_1_metric(&m1, "cradle_camera_frames_total") - room_1_metric(&m0, "cradle_camera_frames_total");
    let dropped = room_1_metric(&m1, "cradle_camera_frames_dropped_total");
    // One tick per 2 s GOP (a 500 ms grid would be 40 in 20 s); a missed keyframe adds one.
    assert!(
        (window / 2.0 - 1.0..=window / 2.0 + 3.0).contains(&ticks),
        "{ticks} ticks in {window:.1} s with one camera and a 2 s GOP (once per GOP: {:.0}); ages of the newest frame read:{ages}\n{}",
        window / 2.0,
        server.log()
    );
    // Read just after each keyframe: the newest frame is never much over a GOP old.
    assert!(oldest < 2.6, "the newest frame read was {oldest:.2} s old at worst; ages:{ages}");
    assert!(frames / window > 24.0, "{:.1} frames per second read from a 25 fps camera", frames / window);
    assert_eq!(dropped, 0.0, "frames dropped");
    let segments = server.recordings("room-1", &rfc3339(SystemTime::now() - Duration::from_secs(20)), &now_rfc3339()).await;
    let segments = segments["segments"].as_array().unwrap().clone();
    assert!(segments.len() >= 4, "{segments:#?}");
    for w in segments.windows(2) {
        let hole = secs(&w[1]["start"]) - secs(&w[0]["end"]);
        assert!(hole.abs() < 0.25, "hole of {hole} s between {} and {}", w[0]["key"], w[1]["key"]);
    }
}

/// With one-second batches the capture thread still reads every camera at every tick it
/// sleeps to, segment ends included: with one camera, just after each keyframe (camsim's
/// GOP is 2 s; see crate::capture), so the newest frame read is never much more than a
/// GOP old. It used to skip the sockets for a whole tick each time a spool write or a
/// database call finished while it slept, and a segment end is a chain of those: a
/// camera went unread for seconds, its socket buffer grew to megabytes and the camera's
/// schedule fell behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_second_batches_read_every_camera_at_every_tick_across_segment_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _camsim = camsim(cam_port, 1).await;
    let mut spec = ServerSpec::new(Backend::Sqlite, tmp.path()).await;
    spec.segment_seconds = 2;
    spec.extra_toml = "batch_ms = 1000\n".into();
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{cam_port}/cam1")));
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    // Past the session's first seconds, which are read as they come.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let frames_at_start = room_1_metric(&server.get_text("/metrics").await, "cradle_camera_frames_total");
    let start = Instant::now();
    let mut oldest = 0.0f64;
    let mut samples = String::new();
    while start.elapsed() < Duration::from_secs(24) {
        let metrics = server.get_text("/metrics").await;
        let newest = room_1_metric(&metrics, "cradle_camera_last_frame_timestamp_seconds");
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
        oldest = oldest.max(now - newest);
        samples += &format!(" {:.1}s:{:.2}", start.elapsed().as_secs_f64(), now - newest);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let frames = room_1_metric(&server.get_text("/metrics").await, "cradle_camera_frames_total") - frames_at_start;
    let fps = frames / start.elapsed().as_secs_f64();
    assert!(
        oldest < 2.6,
        "the newest frame read was {oldest:.1} s old at worst, with 1 s batches and a 2 s GOP (should be \
         about 2 s); \
         time into the window: age of the newest frame{samples}\n{}",
        server.log()
    );
    assert!(fps > 23.5, "{fps:.1} frames per second read from a 25 fps camera");
    let segments = server.recordings("room-1", &rfc3339(SystemTime::now() - Duration::from_secs(20)), &now_rfc3339()).await;
    assert!(segments["segments"].as_array().unwrap().len() >= 6, "{segments:#}");
}
