//! Proof of coverage end to end: a real server recording camsim cameras is stopped,
//! killed and left without a camera, and the coverage ledger names each gap's cause at
//! the right time; `/api/v1/armed` follows the cameras; a day 100 days back keeps its
//! answer in the ledger after its footage is swept. SQLite and PostgreSQL.

#[macro_use]
mod support;

use std::time::{Duration, SystemTime};

use cradle::coverage::CalendarDay;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::*;

on_both_databases!(
    restarts_crashes_and_a_camera_outage_are_gaps_with_their_causes,
    no_gap_shows_while_segments_close,
    a_closed_day_keeps_its_ledger_answer_after_its_footage_is_swept,
);

const PASSWORD: &str = "a long enough password";
const TZ: &str = "Asia/Shanghai";
const S: i64 = 1_000_000;

fn now_s() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

fn t(v: &Value) -> f64 {
    secs(v)
}

/// The gaps of one camera over all days of a coverage answer, pieces split at midnight
/// joined again: (start, end, cause).
fn gaps_of(cov: &Value, camera: &str) -> Vec<(f64, f64, String)> {
    let cam = camera_of(cov, camera);
    let mut out: Vec<(f64, f64, String)> = Vec::new();
    for d in cam["days"].as_array().unwrap() {
        for g in d["gaps"].as_array().unwrap() {
            let (s, e, c) = (t(&g["start"]), t(&g["end"]), g["cause"].as_str().unwrap().to_owned());
            match out.last_mut() {
                Some(last) if last.2 == c && (last.1 - s).abs() < 1e-6 => last.1 = e,
                _ => out.push((s, e, c)),
            }
        }
    }
    out
}

fn camera_of<'a>(cov: &'a Value, camera: &str) -> &'a Value {
    cov["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == camera)
        .unwrap_or_else(|| panic!("camera {camera} missing from {cov:#}"))
}

/// Every day adds up: recorded + gaps = the accounted span, which runs from the day's
/// start to its end (or to the moment of the answer, for today).
fn assert_days_add_up(cov: &Value) {
    let generated = t(&cov["generated_at"]);
    for c in cov["cameras"].as_array().unwrap() {
        for d in c["days"].as_array().unwrap() {
            let span = d["span_seconds"].as_f64().unwrap();
            let (rec, gap) = (d["recorded_seconds"].as_f64().unwrap(), d["gap_seconds"].as_f64().unwrap());
            assert!((rec + gap - span).abs() < 1e-3, "recorded {rec} + gaps {gap} ≠ span {span}: {d:#}");
            assert!((t(&d["until"]) - t(&d["end"]).min(generated)).abs() < 1e-3, "accounted to the end or now: {d:#}");
            assert!((t(&d["until"]) - t(&d["start"]) - span).abs() < 1e-3, "{d:#}");
            let listed: f64 = d["gaps"].as_array().unwrap().iter().map(|g| g["seconds"].as_f64().unwrap()).sum();
            assert!((listed - gap).abs() < 1e-3, "gap rows {listed} ≠ gap_seconds {gap}: {d:#}");
        }
    }
}

fn find_gap<'a>(gaps: &'a [(f64, f64, String)], cause: &str, near: f64) -> &'a (f64, f64, String) {
    gaps.iter()
        .filter(|g| g.2 == cause)
        .min_by(|a, b| (a.0 - near).abs().total_cmp(&(b.0 - near).abs()))
        .unwrap_or_else(|| panic!("no {cause} gap near {near}: {gaps:?}"))
}

/// A minimal RFC 4180 reader (quoted fields, doubled quotes, CRLF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    rows
}

async fn armed(server: &Server) -> Value {
    server.get("/api/v1/armed").await
}

fn armed_camera<'a>(a: &'a Value, id: &str) -> &'a Value {
    a["cameras"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("{id} missing: {a:#}"))
}

/// A segment that is closing (its last GOP written, its file finished, its index row on
/// the way) is footage, not a gap: asked many times across many segment closes, neither
/// the coverage answer nor the recordings API ever shows a hole while the camera records.
async fn no_gap_shows_while_segments_close(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _cam = camsim(port, 1).await;
    let mut spec = ServerSpec::new(backend, tmp.path()).await;
    spec.segment_seconds = 2;
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{port}/cam1")));
    let server = spec.start().await;
    server.wait_recording("room-1", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let from = now_s();
    let from_rfc = cradle::time::format_rfc3339((from * 1e6) as i64);
    let (mut asked, segments_at_start) = (0, server.recordings("room-1", &from_rfc, &rfc3339(SystemTime::now())).await);
    let first_count = segments_at_start["segments"].as_array().unwrap().len();
    let mut last = segments_at_start;
    while now_s() < from + 14.0 {
        let to = rfc3339(SystemTime::now());
        let rec = server.recordings("room-1", &from_rfc, &to).await;
        assert_eq!(rec["gaps"].as_array().unwrap().len(), 0, "a gap while recording: {rec:#}");
        let cov = server.get(&format!("/api/v1/coverage?from={from_rfc}&to={to}")).await;
        let gaps: Vec<_> = gaps_of(&cov, "room-1").into_iter().filter(|g| g.1 > from + 1e-3).collect();
        assert!(gaps.is_empty(), "coverage shows a gap while recording: {gaps:?}");
        asked += 1;
        last = rec;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // It was asked across several closes (2 s segments at camsim's 2 s GOP).
    let closed = last["segments"].as_array().unwrap().len() - first_count;
    assert!(closed >= 4, "only {closed} segments closed in 14 s: {last:#}");
    assert!(asked >= 50, "asked only {asked} times");
}

async fn restarts_crashes_and_a_camera_outage_are_gaps_with_their_causes(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let _cam_a = camsim(port_a, 1).await;
    let mut cam_b = camsim(port_b, 1).await;
    let mut spec = ServerSpec::new(backend, tmp.path()).await;
    spec.segment_seconds = 4;
    spec.extra_toml = "[watchdog]\nno_frames_seconds = 3\n".into();
    spec.cameras.push(CameraSpec::new("room-1", &format!("rtsp://127.0.0.1:{port_a}/cam1")));
    spec.cameras.push(CameraSpec::new("room-2", &format!("rtsp://127.0.0.1:{port_b}/cam1")));
    for (user, role) in [
        ("parent-1", "parent"),
        ("committee-1", "committee"),
        ("police-1", "investigator"),
        ("regulator-1", "regulator"),
    ] {
        let out = spec.add_user(user, role, PASSWORD);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let t0 = now_s();
    let mut server = spec.start().await;
    for id in ["room-1", "room-2"] {
        server.wait_recording(id, Duration::from_secs(30)).await;
    }
    wait_until("armed while both cameras record", Duration::from_secs(30), || async {
        armed(&server).await["armed"] == true
    })
    .await;
    let a = armed(&server).await;
    assert_eq!(
        (a["floor_days"].as_u64(), a["retention_days"].as_u64(), a["profile"].as_str()),
        (Some(90), Some(90), Some("national"))
    );
    for id in ["room-1", "room-2"] {
        let c = armed_camera(&a, id);
        assert_eq!((c["recording"].as_bool(), c["meets_floor"].as_bool()), (Some(true), Some(true)), "{c:#}");
        assert_eq!(c["floor_check"], "recorded_for_less_than_floor", "{c:#}");
        let since = t(&c["recording_since"]);
        assert!(since >= t0 && since <= now_s(), "{id} recording since {since}, server started {t0}: {c:#}");
    }
    tokio::time::sleep(Duration::from_secs(6)).await;

    // 1. A clean stop, down for a few seconds.
    let stopped_at = now_s();
    server.terminate();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted_at = now_s();
    server = spec.start().await;
    for id in ["room-1", "room-2"] {
        server.wait_recording(id, Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;

    // 2. kill -9, down for a few seconds.
    let killed_at = now_s();
    server.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let recovered_at = now_s();
    server = spec.start().await;
    for id in ["room-1", "room-2"] {
        server.wait_recording(id, Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;

    // 3. room-2's camera goes away: not armed, and the answer says which camera.
    let cam_down_at = now_s();
    cam_b.kill();
    wait_until("not armed while room-2 is down", Duration::from_secs(30), || async {
        let a = armed(&server).await;
        a["armed"] == false && armed_camera(&a, "room-2")["recording"] == false
    })
    .await;
    let a = armed(&server).await;
    let reasons: Vec<&str> = a["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("\"room-2\"") && r.contains("not recording")), "{a:#}");
    assert!(!reasons.iter().any(|r| r.contains("\"room-1\"")), "room-1 still records: {a:#}");
    assert_eq!(armed_camera(&a, "room-1")["recording"], true, "{a:#}");
    assert_ne!(armed_camera(&a, "room-2")["state"], "recording", "{a:#}");
    assert_eq!(armed_camera(&a, "room-2")["recording_since"], Value::Null, "{a:#}");
    let _cam_b = camsim(port_b, 1).await;
    let cam_up_at = now_s();
    server.wait_recording("room-2", Duration::from_secs(60)).await;
    wait_until("armed again once room-2 records", Duration::from_secs(60), || async {
        armed(&server).await["armed"] == true
    })
    .await;
    let a = armed(&server).await;
    let since = t(&armed_camera(&a, "room-2")["recording_since"]);
    assert!(since >= cam_up_at - 1.0 && since <= now_s(), "room-2 recording since {since}, back at {cam_up_at}: {a:#}");
    let since = t(&armed_camera(&a, "room-1")["recording_since"]);
    assert!((since - recovered_at).abs() < 10.0, "room-1 recording since {since}, restarted at {recovered_at}: {a:#}");
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The ledger for today (and yesterday, if the test crossed midnight in Shanghai).
    let from = cradle::time::format_rfc3339(((t0 - 60.0) * 1e6) as i64);
    let to = cradle::time::format_rfc3339(((now_s() + 60.0) * 1e6) as i64);
    let query = format!("/api/v1/coverage?from={from}&to={to}");
    let cov = server.get(&query).await;
    assert_eq!(cov["time_zone"], TZ);
    assert_days_add_up(&cov);
    let g1 = gaps_of(&cov, "room-1");
    let g2 = gaps_of(&cov, "room-2");
    let causes = |g: &[(f64, f64, String)]| g.iter().map(|g| g.2.clone()).collect::<Vec<_>>();
    assert_eq!(causes(&g1), ["not_yet_installed", "server_down", "server_crashed"], "room-1: {g1:?}");
    assert_eq!(causes(&g2), ["not_yet_installed", "server_down", "server_crashed", "camera_offline"], "room-2: {g2:?}");
    for (camera, gaps) in [("room-1", &g1), ("room-2", &g2)] {
        // Before the first footage: not yet installed, not counted against the camera.
        let first = &gaps[0];
        assert!(first.1 >= t0 && first.1 < t0 + 15.0, "{camera}: first footage at {} (server started {t0})", first.1);
        let down = find_gap(gaps, "server_down", stopped_at);
        assert!((down.0 - stopped_at).abs() < 3.0, "{camera}: clean stop at {stopped_at}, gap {down:?}");
        assert!(
            down.1 >= restarted_at && down.1 < restarted_at + 10.0,
            "{camera}: restart at {restarted_at}, gap {down:?}"
        );
        let crash = find_gap(gaps, "server_crashed", killed_at);
        assert!(
            crash.0 > killed_at - 3.0 && crash.0 < killed_at + 1.0,
            "{camera}: kill -9 at {killed_at}, gap {crash:?}"
        );
        assert!(
            crash.1 >= recovered_at && crash.1 < recovered_at + 10.0,
            "{camera}: restart at {recovered_at}, gap {crash:?}"
        );
    }
    let offline = find_gap(&g2, "camera_offline", cam_down_at);
    assert!((offline.0 - cam_down_at).abs() < 3.0, "camera stopped at {cam_down_at}, gap {offline:?}");
    assert!(
        offline.1 >= cam_up_at - 0.5 && offline.1 < cam_up_at + 40.0,
        "camera back at {cam_up_at}, gap {offline:?}"
    );
    // Coverage counts the outages, not the time before the cameras existed.
    let today = camera_of(&cov, "room-2")["days"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(today["footage"], "kept", "{today:#}");
    let expected = today["span_seconds"].as_f64().unwrap() - today["excused_seconds"].as_f64().unwrap();
    let pct = today["coverage_percent"].as_f64().unwrap();
    assert!((pct - today["recorded_seconds"].as_f64().unwrap() * 100.0 / expected).abs() < 0.01, "{today:#}");
    assert!(pct < 100.0 && pct > 0.0, "{today:#}");
    assert_eq!(today["closed"], false, "today is still open: {today:#}");
    let by_cause = &camera_of(&cov, "room-2")["totals"]["gap_seconds_by_cause"];
    assert!(by_cause["camera_offline"].as_f64().unwrap() > 3.0, "{by_cause:#}");

    // The CSV says the same: one row per day, one per gap.
    let r = reqwest::Client::new()
        .get(format!("{}{query}&format=csv", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let disposition = r.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment; filename=\"cradle-coverage-"), "{disposition}");
    let rows = parse_csv(&r.text().await.unwrap());
    assert_eq!(
        rows[0],
        [
            "camera_id",
            "date",
            "row",
            "start",
            "end",
            "seconds",
            "cause",
            "detail",
            "recorded_seconds",
            "gap_seconds",
            "excused_seconds",
            "coverage_percent",
            "footage"
        ]
    );
    let csv_gaps: Vec<(String, String, String, String)> = rows[1..]
        .iter()
        .filter(|r| r[2] == "gap")
        .map(|r| (r[0].clone(), r[3].clone(), r[4].clone(), r[6].clone()))
        .collect();
    let json_gaps: Vec<(String, String, String, String)> = cov["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["days"].as_array().unwrap().iter().flat_map(move |d| {
                d["gaps"].as_array().unwrap().iter().map(move |g| {
                    (
                        c["id"].as_str().unwrap().to_owned(),
                        g["start"].as_str().unwrap().to_owned(),
                        g["end"].as_str().unwrap().to_owned(),
                        g["cause"].as_str().unwrap().to_owned(),
                    )
                })
            })
        })
        .collect();
    assert_eq!(csv_gaps, json_gaps, "the CSV lists the JSON's gaps");
    let day_rows = rows[1..].iter().filter(|r| r[2] == "day").count();
    let json_days: usize = cov["cameras"].as_array().unwrap().iter().map(|c| c["days"].as_array().unwrap().len()).sum();
    assert_eq!(day_rows, json_days);
    assert!(rows[1..].iter().all(|r| r.len() == 13), "every row has 13 fields");

    // Who may ask, and what a bad question gets.
    let regulator = server.login("regulator-1", PASSWORD).await;
    for path in [query.as_str(), "/api/v1/armed"] {
        assert_eq!(server.call(Method::GET, path, Some(&regulator), None).await.0, StatusCode::OK, "regulator {path}");
        for user in ["parent-1", "committee-1", "police-1"] {
            let token = server.login(user, PASSWORD).await;
            let (status, body) = server.call(Method::GET, path, Some(&token), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{user} on {path}: {body}");
        }
        assert_eq!(server.call(Method::GET, path, None, None).await.0, StatusCode::UNAUTHORIZED);
    }
    let bad = |q: String, needle: &'static str| {
        let server = &server;
        async move {
            let (status, body) =
                server.call(Method::GET, &format!("/api/v1/coverage{q}"), Some(&server.token), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
            assert!(body["error"].as_str().unwrap().contains(needle), "{q}: {body}");
        }
    };
    bad(String::new(), "from is required").await;
    bad(format!("?from={from}"), "to is required").await;
    bad(format!("?from={from}&to=yesterday"), "RFC 3339").await;
    bad(format!("?from={to}&to={from}"), "from must be before to").await;
    bad("?from=2026-01-01T00:00:00Z&to=2026-06-01T00:00:00Z".into(), "at most 93 days").await;
    bad(format!("?from={from}&to={to}&format=xml"), "use json or csv").await;
    let (status, _) =
        server.call(Method::GET, &format!("{query}&camera=no-such-camera"), Some(&server.token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let one = server.get(&format!("{query}&camera=room-1")).await;
    assert_eq!(one["cameras"].as_array().unwrap().len(), 1);
    assert_eq!(gaps_of(&one, "room-1"), g1, "one camera's answer matches the full answer");
}

/// Synthetic footage for `camera` over `[start, end)` in segments of `step`, as the
/// recorder would index it (state `stored`).
async fn index_footage(db: &cradle::db::Db, camera: &str, start: i64, end: i64, step: i64) {
    let mut t = start;
    while t < end {
        let e = (t + step).min(end);
        db.upsert_segment(&cradle::db::SegmentRow {
            camera_id: camera.into(),
            start_us: t,
            end_us: e,
            duration_90k: (e - t) * 90_000 / S,
            bytes: 1000,
            frames: 25,
            codec: "avc1.640028".into(),
            object_key: format!("{camera}/synthetic/{t}.mp4"),
            sha256: "00".repeat(32),
            run_id: "synthetic".into(),
            drift_us: 0,
            state: "stored".into(),
        })
        .await
        .unwrap();
        t = e;
    }
}

async fn a_closed_day_keeps_its_ledger_answer_after_its_footage_is_swept(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new(backend, tmp.path()).await;
    let tz = jiff::tz::TimeZone::get(TZ).unwrap();
    let now = cradle::time::now_us();
    let day = CalendarDay::containing(&tz, now - 100 * 86_400 * S).unwrap();
    let next = day.next(&tz).unwrap();
    // Minutes into the day, as UTC µs.
    let m = |minutes: i64| day.start_us + minutes * 60 * S;

    // 100 days ago, in the index the server will open: room-1 is installed at 08:00,
    // its camera drops out 10:00–10:30, the server is stopped 15:00–15:20, and it
    // records into the next day. old-cam records from midnight until it is
    // decommissioned at noon.
    let db = cradle::db::Db::connect(&spec.database_url).await.unwrap();
    index_footage(&db, "room-1", m(8 * 60), m(10 * 60), 300 * S).await;
    index_footage(&db, "room-1", m(10 * 60 + 30), m(15 * 60), 300 * S).await;
    index_footage(&db, "room-1", m(15 * 60 + 20), m(25 * 60), 300 * S).await;
    db.insert_event(Some("room-1"), m(10 * 60) + 5 * S, "disconnected", "RTSP session ended: connection reset")
        .await
        .unwrap();
    db.insert_event(None, m(15 * 60), "server_stopped", "server run synthetic-1 stopped cleanly").await.unwrap();
    db.insert_event(None, m(15 * 60 + 20), "server_started", "server run synthetic-2 started").await.unwrap();
    index_footage(&db, "old-cam", m(0), m(12 * 60), 300 * S).await;
    let centre = db.centre().await.unwrap();
    let old_cam = cradle::config::CameraId::parse("old-cam").unwrap();
    db.decommission_camera(
        centre.id,
        &old_cam,
        "moved to the new building",
        cradle::centre::Stamp { by: "director", at_us: m(12 * 60) },
    )
    .await
    .unwrap();
    assert_eq!(centre.time_zone.name(), TZ);

    let server = spec.start().await;
    // The server's first ledger pass closes the old days without being asked; only
    // then does the sweeper delete their footage (older than the 90-day retention).
    wait_until("the sweeper to delete the 100-day-old footage", Duration::from_secs(60), || async {
        db.coverage_spans("room-1", day.start_us, next.end_us).await.unwrap().is_empty()
            && db.coverage_spans("old-cam", day.start_us, next.end_us).await.unwrap().is_empty()
    })
    .await;
    // room-1's footage reaches into the next day; old-cam's ended on the first (the
    // days after a camera's last footage are computed on demand, not stored).
    for (cam, days) in [("room-1", 2), ("old-cam", 1)] {
        let rows = db.ledger_days(cam, TZ, &day.key(), &next.key()).await.unwrap();
        assert_eq!(rows.len(), days, "{cam}: the ledger kept its days before the sweep: {rows:?}");
    }

    let query = format!(
        "/api/v1/coverage?from={}&to={}",
        cradle::time::format_rfc3339(day.start_us),
        cradle::time::format_rfc3339(next.end_us)
    );
    let expected_gaps = |offline: &[(i64, i64)]| {
        let mut v = vec![(m(0), m(8 * 60), "not_yet_installed".to_owned())];
        v.extend(offline.iter().map(|&(a, b)| (m(a), m(b), "camera_offline".to_owned())));
        v.push((m(15 * 60), m(15 * 60 + 20), "server_down".to_owned()));
        v
    };
    let day_gaps = |d: &Value| -> Vec<(i64, i64, String)> {
        d["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let us = |v: &Value| cradle::time::parse_rfc3339(v.as_str().unwrap()).unwrap();
                (us(&g["start"]), us(&g["end"]), g["cause"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let room_day = |cov: &Value| camera_of(cov, "room-1")["days"][0].clone();

    let before = server.get(&query).await;
    assert_days_add_up(&before);
    let d = room_day(&before);
    assert_eq!(d["date"], day.key());
    assert_eq!(
        (d["closed"].as_bool(), d["source"].as_str(), d["footage"].as_str(), d["footage_expired"].as_bool()),
        (Some(true), Some("ledger"), Some("expired"), Some(true)),
        "{d:#}"
    );
    assert_eq!(
        d["segments"].as_i64(),
        Some(12 * 24 - 30 / 5 - 20 / 5 - 8 * 12),
        "the rows it was computed from: {d:#}"
    );
    assert_eq!(day_gaps(&d), expected_gaps(&[(600, 630)]), "{d:#}");
    let recorded = d["recorded_seconds"].as_f64().unwrap();
    assert_eq!(recorded, ((24 * 60 - 8 * 60 - 30 - 20) * 60) as f64);
    assert_eq!(d["excused_seconds"].as_f64().unwrap(), 8.0 * 3600.0);
    let pct = d["coverage_percent"].as_f64().unwrap();
    assert!((pct - recorded * 100.0 / (16.0 * 3600.0)).abs() < 0.001, "{d:#}");
    let detail = d["gaps"][1]["detail"].as_str().unwrap();
    assert!(detail.contains("connection reset"), "the camera's own error explains its gap: {detail}");
    // The day after: recorded until 01:00, and nothing explains the rest: it says so.
    let d2 = &camera_of(&before, "room-1")["days"][1];
    assert_eq!(day_gaps(d2), [(next.start_us + 3600 * S, next.end_us, "unknown".to_owned())], "{d2:#}");

    // A decommissioned camera, no longer configured, is still in the answer: its gaps
    // after the decommission say so, and are not counted against it.
    let old = camera_of(&before, "old-cam");
    assert_eq!(old["configured"], false);
    assert_eq!(day_gaps(&old["days"][0]), [(m(12 * 60), day.end_us, "decommissioned".to_owned())], "{old:#}");
    assert!(old["days"][0]["gaps"][0]["detail"].as_str().unwrap().contains("moved to the new building"));
    assert_eq!(old["days"][0]["coverage_percent"].as_f64(), Some(100.0));
    assert_eq!(day_gaps(&old["days"][1]), [(next.start_us, next.end_us, "decommissioned".to_owned())]);
    assert_eq!(old["days"][1]["coverage_percent"], Value::Null, "nothing was expected of it: {old:#}");

    // A segment of that day indexed again (reindex, reconciler) makes the day stale:
    // recomputed, it adds the segment and keeps everything the ledger proved.
    index_footage(&db, "room-1", m(610), m(620), 600 * S).await;
    let stale = db.ledger_days("room-1", TZ, &day.key(), &day.key()).await.unwrap();
    assert!(stale[0].stale, "the trigger marks the day stale");
    let again = server.get(&query).await;
    let d = room_day(&again);
    assert_eq!(
        day_gaps(&d),
        expected_gaps(&[(600, 610), (620, 630)]),
        "the re-indexed segment splits the camera's gap, which keeps its cause: {d:#}"
    );
    assert_eq!(d["recorded_seconds"].as_f64(), Some(recorded + 600.0));
    assert_eq!((d["closed"].as_bool(), d["footage"].as_str()), (Some(true), Some("partly_expired")), "{d:#}");
    let kept = db.ledger_days("room-1", TZ, &day.key(), &day.key()).await.unwrap();
    assert!(!kept[0].stale && kept[0].recorded_us == ((recorded + 600.0) * 1e6) as i64, "{kept:?}");
    let last = server.get(&query).await;
    assert_eq!(room_day(&last)["source"], "ledger");
    assert_eq!(day_gaps(&room_day(&last)), day_gaps(&d));

    // The invalidation others may call by hand does the same.
    assert_eq!(db.ledger_invalidate("room-1", m(11 * 60), m(11 * 60) + S).await.unwrap(), 1);
    assert_eq!(room_day(&server.get(&query).await)["source"], "index");
    db.close().await;
}
