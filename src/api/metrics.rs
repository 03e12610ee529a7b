//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4), written by
//! hand: a few dozen series do not need a metrics library.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{AppState, Result};
use crate::hub::CameraState;

pub async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse> {
    let mut out = String::with_capacity(4096);
    let spooled = app.db.spooled_by_camera().await?;
    let hubs = app.fleet.hubs();
    type Getter = fn(&crate::hub::CameraHub) -> f64;
    let series: [(&str, &str, &str, Getter); 8] = [
        ("cradle_camera_frames_total", "counter", "Frames received from the camera.", |h| {
            h.stats.frames.load(Ordering::Relaxed) as f64
        }),
        ("cradle_camera_bytes_total", "counter", "Video bytes received from the camera.", |h| {
            h.stats.bytes.load(Ordering::Relaxed) as f64
        }),
        ("cradle_camera_reconnects_total", "counter", "Sessions that delivered frames and then ended.", |h| {
            h.stats.reconnects.load(Ordering::Relaxed) as f64
        }),
        ("cradle_camera_segments_total", "counter", "Segments closed into the spool.", |h| {
            h.stats.segments.load(Ordering::Relaxed) as f64
        }),
        ("cradle_camera_frames_dropped_total", "counter", "Frames not recorded because the spool was full.", |h| {
            h.stats.frames_dropped.load(Ordering::Relaxed) as f64
        }),
        ("cradle_camera_last_frame_timestamp_seconds", "gauge", "Server time of the last frame.", |h| {
            h.stats.last_frame_us.load(Ordering::Relaxed) as f64 / 1e6
        }),
        ("cradle_camera_recording", "gauge", "1 while the camera is delivering frames.", |h| {
            (h.state() == CameraState::Recording) as u8 as f64
        }),
        ("cradle_camera_clock_drift_seconds", "gauge", "Server clock minus camera RTP clock within the run.", |h| {
            h.stats.drift_us.load(Ordering::Relaxed) as f64 / 1e6
        }),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for h in hubs.iter() {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {}", h.id(), get(h));
        }
    }
    let _ = writeln!(out, "# HELP cradle_camera_spool_backlog_segments Segments of the camera waiting for upload.");
    let _ = writeln!(out, "# TYPE cradle_camera_spool_backlog_segments gauge");
    for h in hubs.iter() {
        let n = spooled.iter().find(|(c, _, _)| c == h.id().as_str()).map(|x| x.1).unwrap_or(0);
        let _ = writeln!(out, "cradle_camera_spool_backlog_segments{{camera=\"{}\"}} {n}", h.id());
    }
    let _ = writeln!(out, "# HELP cradle_camera_spool_backlog_bytes Bytes of the camera waiting for upload.");
    let _ = writeln!(out, "# TYPE cradle_camera_spool_backlog_bytes gauge");
    for h in hubs.iter() {
        let b = spooled.iter().find(|(c, _, _)| c == h.id().as_str()).map(|x| x.2).unwrap_or(0);
        let _ = writeln!(out, "cradle_camera_spool_backlog_bytes{{camera=\"{}\"}} {b}", h.id());
    }
    let s = &app.spool;
    let global: [(&str, &str, &str, f64); 8] = [
        ("cradle_spool_backlog_segments", "gauge", "Segments in the spool waiting for upload.", s.segments() as f64),
        ("cradle_spool_backlog_bytes", "gauge", "Bytes in the spool waiting for upload.", s.bytes() as f64),
        ("cradle_uploaded_segments_total", "counter", "Segments stored.", s.uploaded_segments.load(Ordering::Relaxed) as f64),
        ("cradle_uploaded_bytes_total", "counter", "Bytes stored.", s.uploaded_bytes.load(Ordering::Relaxed) as f64),
        ("cradle_upload_failures_total", "counter", "Failed upload attempts (each retried).", s.upload_failures.load(Ordering::Relaxed) as f64),
        ("cradle_upload_latency_seconds_sum", "counter", "Total time spent in successful uploads.", s.upload_latency_us_sum.load(Ordering::Relaxed) as f64 / 1e6),
        ("cradle_upload_latency_seconds_count", "counter", "Successful uploads timed.", s.upload_latency_count.load(Ordering::Relaxed) as f64),
        ("cradle_capture_ticks_total", "counter", "Ticks the capture thread slept to (its wake-ups while nobody watches live).", crate::capture::ticks() as f64),
    ];
    for (name, kind, help, v) in global {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    let failing = s.failing_since_us.load(Ordering::Relaxed) != 0;
    let _ = writeln!(out, "# HELP cradle_storage_up 1 when the last upload succeeded.\n# TYPE cradle_storage_up gauge\ncradle_storage_up {}", !failing as u8);
    let costs = app.snapshots.costs();
    type CostGetter = fn(&crate::snapshot::service::Cost) -> f64;
    let snapshot_series: [(&str, &str, CostGetter); 3] = [
        ("cradle_snapshots_total", "Keyframes decoded into snapshots (and tamper-checked).", |c| c.snapshots as f64),
        ("cradle_snapshot_cpu_seconds_total", "CPU time spent decoding snapshots and checking them.", |c| c.cpu_ns as f64 / 1e9),
        ("cradle_snapshot_failures_total", "Keyframes that did not decode.", |c| c.failures as f64),
    ];
    for (name, help, get) in snapshot_series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (camera, c) in &costs {
            let _ = writeln!(out, "{name}{{camera=\"{camera}\"}} {}", get(c));
        }
    }
    app.live.metrics(&mut out);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out))
}
