//! Retention and legal holds.
//!
//! The sweeper, with a simulated clock over a synthetic archive of 130 days (small real
//! objects in Garage and in a local directory; SQLite and PostgreSQL): exactly the
//! expired footage goes, to the microsecond at the cutoff; a camera that keeps longer
//! keeps longer; held footage stays until the hold is released; a sweep that crashes
//! after any step is finished by the next with no orphan rows or objects; every run is
//! audited with its counts. What should remain is computed here by brute force over
//! the archive's list, independently of the sweeper's index scans.
//!
//! Against the real `cradle` binary: every path that could shorten retention — config
//! file, a camera's retention via API and CLI, `cradle sweep`, the sweep API, DELETE
//! routes — refuses, and the footage is intact after each refusal. Holds are placed,
//! listed and released (with a reason) by the roles allowed, and audited.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cradle::config::Config;
use cradle::db::{Db, SegmentRow};
use cradle::retention::holds::{self, HoldError, HoldRequest};
use cradle::retention::{Actor, Retention, SweepError, SweepFault, SweepOptions};
use cradle::storage::Storage;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;
use support::*;

on_both_databases!(
    a_sweep_deletes_exactly_the_expired_unheld_footage,
    a_sweep_that_crashes_after_any_step_is_finished_by_the_next,
    the_statements_themselves_refuse_young_held_and_spooled_rows,
    no_path_deletes_footage_younger_than_the_floor,
    holds_are_placed_listed_and_released_by_an_admin_with_a_reason,
);

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;
const SEC: i64 = 1_000_000;
/// 2026-01-01T00:00:00Z: the archive's first segment starts here.
const T0: i64 = 1_767_225_600 * SEC;
const ARCHIVE_DAYS: i64 = 130;
/// The simulated now: the archive's end.
const NOW: i64 = T0 + ARCHIVE_DAYS * DAY;
const NOWHERE: &str = "rtsp://127.0.0.1:9/none";

#[derive(Clone, Copy, Debug)]
enum Store {
    Local,
    Garage,
}

#[derive(Clone, Debug)]
struct Seg {
    camera: &'static str,
    start: i64,
    end: i64,
    state: &'static str,
}

impl Seg {
    fn key(&self) -> String {
        cradle::storage::segment_key(&cradle::config::CameraId::parse(self.camera).unwrap(), self.start)
    }
    fn body(&self) -> String {
        format!("segment {} {}..{}", self.camera, self.start, self.end)
    }
}

/// `per_day` back-to-back segments a day for each camera over the whole archive.
fn archive(cameras: &[&'static str], per_day: i64) -> Vec<Seg> {
    let len = DAY / per_day;
    let mut out = Vec::new();
    for &camera in cameras {
        for i in 0..ARCHIVE_DAYS * per_day {
            let start = T0 + i * len;
            out.push(Seg { camera, start, end: start + len, state: "stored" });
        }
    }
    out
}

/// An inclusive hold: (camera, start, end).
type HoldSpan = (&'static str, i64, i64);

/// The model: a segment goes when it is stored, ended at or before its camera's
/// cutoff, and touches no hold.
fn expected_gone(s: &Seg, days: &dyn Fn(&str) -> i64, holds: &[HoldSpan]) -> bool {
    s.state == "stored"
        && s.end <= NOW - days(s.camera) * DAY
        && !holds.iter().any(|&(c, hs, he)| c == s.camera && s.start <= he && s.end >= hs)
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    db: Db,
    storage: Storage,
    retention: Retention,
}

impl Fixture {
    /// A config file (`[[cameras]]` lines in `cameras_toml`), a fresh database, an empty
    /// store; then `segs` written to both.
    async fn new(backend: Backend, store: Store, cameras_toml: &str, segs: &[Seg]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(backend, dir.path()).await;
        let storage_toml = match store {
            Store::Local => format!("[storage]\nurl = \"file://{}/footage\"\n", dir.path().display()),
            Store::Garage => garage_storage_toml(&format!("retention-{}", rand::random::<u32>())),
        };
        let text = format!(
            "[server]\ndata_dir = \"{}/data\"\n[database]\nurl = \"{url}\"\n{storage_toml}\n[retention]\nsweep_batch = 50\n{cameras_toml}",
            dir.path().display()
        );
        let path = dir.path().join("cradle.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let db = Db::connect(&config.database_url).await.unwrap();
        let storage = Storage::from_config(&config.storage).unwrap();
        let retention = Retention::new(db.clone(), storage.clone(), config);
        let f = Fixture { dir, store, db, storage, retention };
        f.write(segs).await;
        f
    }

    /// Index rows in multi-row INSERTs, objects through `Storage::put_file`.
    async fn write(&self, segs: &[Seg]) {
        insert_rows(&self.db, segs).await;
        let files = self.dir.path().join("objects");
        std::fs::create_dir_all(&files).unwrap();
        let puts = segs.iter().enumerate().filter(|(_, s)| s.state == "stored").map(|(i, s)| {
            let path = files.join(format!("{i}-{}.mp4", rand::random::<u32>()));
            std::fs::write(&path, s.body()).unwrap();
            let (storage, key) = (self.storage.clone(), s.key());
            // Garage under the whole suite's load now and then answers 503 (its metadata
            // database busy); Cradle's spool retries an upload until it lands, and so
            // does this set-up.
            async move {
                let sha = file_sha256(&path);
                for attempt in 1.. {
                    match storage.put_file(&key, &path, &sha).await {
                        Ok(()) => break,
                        Err(e) if attempt < 5 => eprintln!("set-up PUT of {key} failed ({e}); retrying"),
                        Err(e) => panic!("set-up PUT of {key}: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                }
            }
        });
        futures::stream::iter(puts).buffer_unordered(16).collect::<Vec<()>>().await;
    }

    /// (every index row's key, the stored rows' keys, the bucket's keys), checked to agree.
    async fn state(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let rows = sqlx::query("SELECT object_key, state FROM segments").fetch_all(self.db.pool()).await.unwrap();
        let mut all = BTreeSet::new();
        let mut stored = BTreeSet::new();
        for r in &rows {
            let (k, st): (String, String) = (r.get("object_key"), r.get("state"));
            if st == "stored" {
                stored.insert(k.clone());
            }
            all.insert(k);
        }
        let objects: BTreeSet<String> = self.storage.list(None).await.unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            stored.difference(&objects).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{:?}: stored rows without objects",
            self.store
        );
        assert_eq!(objects.difference(&stored).collect::<Vec<_>>(), Vec::<&String>::new(), "{:?}: objects without rows", self.store);
        (all, objects)
    }

    async fn keys_in_state(&self, state: &str) -> BTreeSet<String> {
        sqlx::query("SELECT object_key FROM segments WHERE state = $1")
            .bind(state)
            .fetch_all(self.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("object_key"))
            .collect()
    }

    async fn objects(&self) -> BTreeSet<String> {
        self.storage.list(None).await.unwrap().into_iter().map(|(k, _)| k).collect()
    }

    async fn sweep(&self, opts: SweepOptions) -> Result<cradle::retention::SweepReport, SweepError> {
        self.retention.sweep(NOW, &opts, &Actor::system()).await
    }

    async fn audit(&self, action: &str) -> Vec<cradle::audit::AuditEntry> {
        let q = cradle::audit::AuditQuery { action: Some(action.into()), limit: Some(1000), ..Default::default() };
        cradle::audit::list(&self.db, &q).await.unwrap()
    }
}

async fn insert_rows(db: &Db, segs: &[Seg]) {
    for chunk in segs.chunks(200) {
        let mut sql = String::from(
            "INSERT INTO segments (camera_id, start_us, end_us, duration_90k, bytes, frames, codec, object_key, sha256, run_id, drift_us, state) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 12;
            sql += &format!(
                "{}(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                if i == 0 { "" } else { ", " },
                b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9, b + 10, b + 11, b + 12
            );
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for s in chunk {
            let row = SegmentRow {
                camera_id: s.camera.into(),
                start_us: s.start,
                end_us: s.end,
                duration_90k: (s.end - s.start) * 9 / 100,
                bytes: s.body().len() as i64,
                frames: 25,
                codec: "avc1.640028".into(),
                object_key: s.key(),
                sha256: "0".repeat(64),
                run_id: "test".into(),
                drift_us: 0,
                state: s.state.into(),
            };
            q = q
                .bind(row.camera_id)
                .bind(row.start_us)
                .bind(row.end_us)
                .bind(row.duration_90k)
                .bind(row.bytes)
                .bind(row.frames)
                .bind(row.codec)
                .bind(row.object_key)
                .bind(row.sha256)
                .bind(row.run_id)
                .bind(row.drift_us)
                .bind(row.state);
        }
        q.execute(db.pool()).await.unwrap();
    }
}

fn hold_request(camera: &str, start: i64, end: i64, case_ref: &str) -> HoldRequest {
    HoldRequest {
        camera_id: camera.into(),
        start: cradle::time::format_rfc3339(start),
        end: cradle::time::format_rfc3339(end),
        case_ref: case_ref.into(),
        reason: "a parent's complaint about this morning".into(),
    }
}

fn admin() -> Actor {
    Actor { name: "director".into(), role: Some("admin".into()), addr: None }
}

// ---- the sweeper, simulated clock --------------------------------------------------------

const CAMERAS_TOML: &str = "[[cameras]]\nid = \"room-1\"\nurl = \"rtsp://127.0.0.1:9/none\"\n\
                            [[cameras]]\nid = \"room-long\"\nurl = \"rtsp://127.0.0.1:9/none\"\nretention_days = 120\n";

/// room-1 and `gone` (in the index only: a removed camera) keep 90 days, room-long 120
/// (config file), `added` 100 (added by an admin, in the database).
fn days_of(camera: &str) -> i64 {
    match camera {
        "room-long" => 120,
        "added" => 100,
        _ => 90,
    }
}

async fn a_sweep_deletes_exactly_the_expired_unheld_footage(backend: Backend) {
    for store in [Store::Local, Store::Garage] {
        expired_unheld_footage_goes(backend, store).await;
    }
}

async fn expired_unheld_footage_goes(backend: Backend, store: Store) {
    let started = Instant::now();
    let mut segs = archive(&["room-1", "room-long", "added", "gone"], 4);
    // At the 90-day cutoff of `edge` (a removed camera): ends 1 s before, exactly at, and
    // 1 s after it.
    let cut = NOW - 90 * DAY;
    for (start, end) in [(cut - 61 * SEC, cut - SEC), (cut - 100 * SEC, cut), (cut - 30 * SEC, cut + SEC)] {
        segs.push(Seg { camera: "edge", start, end, state: "stored" });
    }
    // Never uploaded, however old: the sweeper must not touch it.
    segs.push(Seg { camera: "room-1", start: T0 + DAY + HOUR / 2, end: T0 + DAY + HOUR, state: "spooled" });
    let f = Fixture::new(backend, store, CAMERAS_TOML, &segs).await;
    let added = serde_json::from_value::<cradle::config::CameraFields>(json!({ "id": "added", "url": NOWHERE, "retention_days": 100 }))
        .unwrap()
        .validate(cradle::config::EnvRefs::Literal)
        .unwrap();
    f.db.add_camera(&added, cradle::centre::Stamp { by: "director", at_us: NOW }).await.unwrap();
    let (before, _) = f.state().await;
    assert_eq!(before.len(), segs.len());
    let setup = started.elapsed();

    // A legal hold over the day 95 days ago on room-1.
    let (hs, he) = (NOW - 95 * DAY, NOW - 94 * DAY);
    let hold = holds::place_hold(&f.db, hold_request("room-1", hs, he, "JD-2026-0042").parse().unwrap(), &admin(), NOW)
        .await
        .unwrap();
    let held: Vec<HoldSpan> = vec![("room-1", hs, he)];
    // Six 6-hour segments touch that day: four inside, one ending and one starting at its edges.
    assert_eq!(hold.segments_covered, 6);

    // Asking for less than the floor is refused before anything is deleted.
    match f.sweep(SweepOptions { older_than_days: Some(30), ..Default::default() }).await {
        Err(SweepError::Refused(m)) => assert!(m.contains("90-day retention floor"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.state().await.0, before);

    let r = f.sweep(SweepOptions::default()).await.unwrap();
    let gone: Vec<&Seg> = segs.iter().filter(|s| expected_gone(s, &days_of, &held)).collect();
    let want: BTreeSet<String> = segs.iter().filter(|s| !expected_gone(s, &days_of, &held)).map(Seg::key).collect();
    let (rows, objects) = f.state().await;
    assert_eq!(rows, want, "{store:?}: the index after the sweep");
    assert_eq!(objects.len(), want.len() - 1, "{store:?}: every stored row has its object (the spooled one has none)");
    assert_eq!(r.deleted_segments as usize, gone.len());
    // 90-day cameras lose 40 days × 4, room-1 less the 6 held; room-long (120) 10 days;
    // added (100) 30 days; edge two of three.
    assert_eq!(gone.len(), 160 - 6 + 160 + 10 * 4 + 30 * 4 + 2, "the model itself");
    assert_eq!(r.deleted_bytes, gone.iter().map(|s| s.body().len() as u64).sum::<u64>());
    assert_eq!(r.held_kept_segments, 6);
    assert_eq!(r.cameras["room-1"].held_kept_segments, 6);
    assert_eq!(r.batches, (gone.len() as u64).div_ceil(50), "batches of [retention] sweep_batch = 50");
    let per_camera = |c: &str| r.cameras[c].deleted_segments as usize;
    assert_eq!(
        (per_camera("room-1"), per_camera("room-long"), per_camera("added"), per_camera("gone"), per_camera("edge")),
        (154, 40, 120, 160, 2)
    );
    assert_eq!((r.cameras["room-long"].retention_days, r.cameras["added"].retention_days, r.cameras["gone"].retention_days), (120, 100, 90));

    // The boundary, by name.
    let edge = |end: i64| segs.iter().find(|s| s.camera == "edge" && s.end == end).unwrap().key();
    assert!(!rows.contains(&edge(cut - SEC)), "ends 1 s before the cutoff: deleted");
    assert!(!rows.contains(&edge(cut)), "ends at the cutoff (exactly 90 days old): deleted");
    assert!(rows.contains(&edge(cut + SEC)), "ends 1 s after the cutoff: kept");
    // Every segment ending within the last 90 days remains, on every camera.
    for s in segs.iter().filter(|s| s.end > NOW - 90 * DAY) {
        assert!(rows.contains(&s.key()), "{} ending {} was deleted", s.camera, cradle::time::format_rfc3339(s.end));
    }
    // room-long keeps 120 days: its oldest segment ends exactly 10 days into the archive.
    assert_eq!(r.cameras["room-long"].oldest_remaining.as_deref(), Some(cradle::time::format_rfc3339(T0 + 10 * DAY).as_str()));
    assert!(rows.contains(&segs.iter().find(|s| s.state == "spooled").unwrap().key()), "the spooled row stays");

    // The audit entry carries the counts.
    let entries = f.audit("retention_deleted").await;
    assert_eq!(entries.len(), 1, "one entry per run; the refused request made none");
    let d = &entries[0].detail;
    assert_eq!(entries[0].actor.as_deref(), Some("system"));
    assert_eq!(d["deleted_segments"], gone.len());
    assert_eq!(d["deleted_bytes"], r.deleted_bytes);
    assert_eq!(d["held_kept_segments"], 6);
    assert_eq!(d["cameras"]["room-1"]["deleted_segments"], 154);
    assert_eq!(d["cameras"]["room-long"]["oldest_remaining"], cradle::time::format_rfc3339(T0 + 10 * DAY));
    assert_eq!(d["completed"], true);
    assert!(d["duration_ms"].is_u64());
    assert_eq!(f.audit("legal_hold").await[0].detail["case_ref"], "JD-2026-0042");

    // A second sweep at the same instant finds nothing.
    let again = f.sweep(SweepOptions::default()).await.unwrap();
    assert_eq!((again.deleted_segments, again.held_kept_segments), (0, 6));

    // Release: a reason is required, once; then the held footage goes like any other.
    assert!(matches!(holds::release_hold(&f.db, hold.hold.id, "  ", &admin(), NOW).await, Err(HoldError::Invalid(_))));
    assert_eq!(f.sweep(SweepOptions::default()).await.unwrap().deleted_segments, 0, "still held");
    holds::release_hold(&f.db, hold.hold.id, "case closed by the police", &admin(), NOW).await.unwrap();
    assert!(matches!(
        holds::release_hold(&f.db, hold.hold.id, "again", &admin(), NOW).await,
        Err(HoldError::Conflict(_))
    ));
    let r = f.sweep(SweepOptions::default()).await.unwrap();
    assert_eq!((r.deleted_segments, r.held_kept_segments), (6, 0));
    let want: BTreeSet<String> = segs.iter().filter(|s| !expected_gone(s, &days_of, &[])).map(Seg::key).collect();
    assert_eq!(f.state().await.0, want);
    let released = f.audit("legal_hold_released").await;
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].detail["release_reason"], "case closed by the police");
    assert_eq!(f.audit("retention_deleted").await.len(), 4);
    assert!(matches!(cradle::audit::verify(&f.db).await.unwrap(), cradle::audit::Verdict::Intact { .. }));
    eprintln!("{backend:?}/{store:?}: {} segments set up in {setup:?}, whole scenario {:?}", segs.len(), started.elapsed());
}

async fn a_sweep_that_crashes_after_any_step_is_finished_by_the_next(backend: Backend) {
    for store in [Store::Local, Store::Garage] {
        crashes_are_finished(backend, store).await;
    }
}

async fn crashes_are_finished(backend: Backend, store: Store) {
    // Two 12-hour segments a day; batches of 20. Cameras are swept in id order: `gone`
    // first (its oldest 80 expire), then room-1 (80).
    let segs = archive(&["room-1", "gone"], 2);
    let f = Fixture::new(backend, store, CAMERAS_TOML, &segs).await;
    let batch = |fault| SweepOptions { batch: Some(20), fault: Some(fault), ..Default::default() };
    let total = segs.len();
    let by_start = |c: &str, start: i64| segs.iter().find(|s| s.camera == c && s.start == start).unwrap().key();

    // Crash 1: after batch 2 was marked. Batch 1 is gone, batch 2 is marked with its objects.
    match f.sweep(batch(SweepFault::AfterMark { batch: 2 })).await {
        Err(SweepError::Fault(SweepFault::AfterMark { batch: 2 })) => {}
        other => panic!("{other:?}"),
    }
    let deleting = f.keys_in_state("deleting").await;
    let batch2: BTreeSet<String> = (20..40).map(|i| by_start("gone", T0 + i * DAY / 2)).collect();
    assert_eq!(deleting, batch2, "{store:?}: batch 2 marked");
    let objects = f.objects().await;
    assert!(deleting.is_subset(&objects), "marked, not yet deleted: the objects are there");
    assert_eq!(objects.len(), total - 20);
    assert!(!objects.contains(&by_start("gone", T0)), "batch 1 was deleted");
    assert!(f.audit("retention_deleted").await.is_empty(), "a crashed run writes no audit entry");

    // Meanwhile a hold is placed over 5 of the marked segments (days 10–12).
    let (hs, he) = (T0 + 10 * DAY + HOUR, T0 + 12 * DAY + HOUR);
    let placed = holds::place_hold(&f.db, hold_request("gone", hs, he, "case-7").parse().unwrap(), &admin(), NOW).await.unwrap();
    assert_eq!(placed.segments_covered, 5);

    // Crash 2: the next sweep gives the 5 back, finishes the other 15, then dies after
    // deleting its own first batch's objects.
    match f.sweep(batch(SweepFault::AfterObjectDelete { batch: 1 })).await {
        Err(SweepError::Fault(_)) => {}
        other => panic!("{other:?}"),
    }
    let held: BTreeSet<String> = (20..25).map(|i| by_start("gone", T0 + i * DAY / 2)).collect();
    let objects = f.objects().await;
    assert!(held.is_subset(&f.keys_in_state("stored").await), "held rows are stored again");
    assert!(held.is_subset(&objects), "and their objects were never deleted");
    let deleting = f.keys_in_state("deleting").await;
    let batch1: BTreeSet<String> = (40..60).map(|i| by_start("gone", T0 + i * DAY / 2)).collect();
    assert_eq!(deleting, batch1, "{store:?}: the new run's batch 1 is marked");
    assert!(deleting.is_disjoint(&objects), "and its objects are gone");
    assert!(f.audit("retention_deleted").await.is_empty());

    // A sweep that runs to the end finishes everything: no row without its object,
    // no object without its row, nothing left marked.
    let r = f.sweep(SweepOptions { batch: Some(20), ..Default::default() }).await.unwrap();
    assert_eq!(r.recovered_segments, 20);
    let hold_spans: Vec<HoldSpan> = vec![("gone", hs, he)];
    let want: BTreeSet<String> = segs.iter().filter(|s| !expected_gone(s, &days_of, &hold_spans)).map(Seg::key).collect();
    let (rows, objects) = f.state().await;
    assert_eq!(rows, want, "{store:?}");
    assert_eq!(objects, want);
    assert!(f.keys_in_state("deleting").await.is_empty());
    assert_eq!(total - want.len(), 160 - 5);
    let entries = f.audit("retention_deleted").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].detail["recovered_segments"], 20);
    // This run deleted what the crashed runs had not: all but batch 1 of run 1 and the 15.
    assert_eq!(entries[0].detail["deleted_segments"], 160 - 5 - 20 - 15);
}

async fn the_statements_themselves_refuse_young_held_and_spooled_rows(backend: Backend) {
    let mut segs = archive(&["room-1"], 1);
    segs.push(Seg { camera: "room-1", start: T0 + 3 * HOUR, end: T0 + 4 * HOUR, state: "spooled" });
    let f = Fixture::new(backend, Store::Local, CAMERAS_TOML, &segs).await;
    let (hs, he) = (T0 + 5 * DAY + HOUR, T0 + 5 * DAY + 2 * HOUR);
    holds::place_hold(&f.db, hold_request("room-1", hs, he, "case-9").parse().unwrap(), &admin(), NOW).await.unwrap();
    let floor_cutoff = NOW - 90 * DAY;
    let ids: Vec<i64> = sqlx::query("SELECT id FROM segments ORDER BY id")
        .fetch_all(f.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("id"))
        .collect();

    // A caller that asks to mark every row gets only the expired, unheld, stored ones.
    let marked = f.db.mark_deleting(&ids, floor_cutoff).await.unwrap();
    let held: Vec<HoldSpan> = vec![("room-1", hs, he)];
    let want: BTreeSet<String> = segs.iter().filter(|s| expected_gone(s, &|_| 90, &held)).map(Seg::key).collect();
    assert_eq!(marked.iter().map(|r| r.object_key.clone()).collect::<BTreeSet<_>>(), want);
    assert_eq!(want.len(), 40 - 1, "40 expired days less the held one");

    // A young row marked by anything else is never deleted by the statement…
    let young = segs.iter().find(|s| s.start == NOW - 10 * DAY).unwrap().key();
    sqlx::query("UPDATE segments SET state = 'deleting' WHERE object_key = $1").bind(&young).execute(f.db.pool()).await.unwrap();
    let young_id: i64 = sqlx::query("SELECT id FROM segments WHERE object_key = $1")
        .bind(&young)
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .get("id");
    assert!(f.db.delete_marked(&[young_id], floor_cutoff).await.unwrap().is_empty());
    // …even with a cutoff that claims it is old: only rows marked `deleting` go, and
    // those the mark refused (young, held, spooled) never are.
    assert!(f.db.delete_marked(&ids, floor_cutoff).await.unwrap().len() == want.len());

    // The next sweep finishes the objects of the marked rows and gives the young one back.
    let r = f.sweep(SweepOptions::default()).await.unwrap();
    assert_eq!(r.unmarked_segments, 1);
    assert_eq!(f.keys_in_state("deleting").await.len(), 0);
    assert!(f.keys_in_state("stored").await.contains(&young));
    assert!(f.objects().await.contains(&young));
    // The rows were deleted above without their objects (as a crash between (c) and
    // the end of (b) cannot do): those objects are the only difference.
    let objects = f.objects().await;
    let stored = f.keys_in_state("stored").await;
    assert_eq!(objects.difference(&stored).cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(f.keys_in_state("spooled").await.len(), 1, "the old spooled row is untouched");
}

// ---- against the real server ---------------------------------------------------------------

/// `cradle ARGS…` (exit code, stdout, stderr), killed after 30 s.
fn cradle(args: &[&str], config: &Path) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("cradle {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cradle centre --config FILE ARGS…` (the subcommand takes the config before its own
/// subcommand).
fn centre_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(["centre", "--config"]).arg(config).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn hold_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(["hold", "--config"]).arg(config).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Real-time footage for a server test: `room-1` and `gone` (removed), one-minute
/// segments at each of `ages_days` before now.
fn footage_at(ages_days: &[i64]) -> Vec<Seg> {
    let now = cradle::time::now_us();
    let mut out = Vec::new();
    for camera in ["room-1", "gone"] {
        for &age in ages_days {
            let start = now - age * DAY;
            out.push(Seg { camera, start, end: start + 60 * SEC, state: "stored" });
        }
    }
    out
}

async fn seed(spec: &ServerSpec, segs: &[Seg]) -> (Db, Storage) {
    spec.write_config();
    let db = Db::connect(&spec.database_url).await.unwrap();
    let storage = open_storage(spec);
    insert_rows(&db, segs).await;
    for (i, s) in segs.iter().enumerate() {
        let path = spec.dir.join(format!("obj-{i}-{}", rand::random::<u32>()));
        std::fs::write(&path, s.body()).unwrap();
        storage.put_file(&s.key(), &path, &file_sha256(&path)).await.unwrap();
    }
    (db, storage)
}

async fn footage(db: &Db, storage: &Storage) -> (i64, usize) {
    (db.count_segments().await.unwrap(), storage.list(None).await.unwrap().len())
}

async fn no_path_deletes_footage_younger_than_the_floor(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(backend, dir.path()).await;
    spec.cameras.push(CameraSpec::new("room-1", NOWHERE));
    // Footage from 1 to 89 days old: all of it younger than the floor.
    let ages: Vec<i64> = (1..=89).step_by(4).collect();
    let segs = footage_at(&ages);
    let (db, storage) = seed(&spec, &segs).await;
    let n = segs.len();
    assert_eq!(footage(&db, &storage).await, (n as i64, n));
    let config = spec.config_path();

    // 1. The config file: [retention] days, [policy] floor_days, a camera's retention_days.
    for (extra, key) in [
        ("[retention]\ndays = 30\n", "retention.days"),
        ("[policy]\nfloor_days = 60\n", "policy.floor_days"),
        ("[[cameras]]\nid = \"x\"\nurl = \"rtsp://127.0.0.1:9/x\"\nretention_days = 30\n", "retention_days"),
    ] {
        spec.extra_toml = extra.into();
        spec.write_config();
        let (code, _, err) = cradle(&["check-config"], &config);
        assert_eq!(code, 2, "check-config accepted {extra:?}");
        assert!(err.contains("90-day retention floor") && err.contains(key), "{err}");
        let (code, _, err) = cradle(&["serve"], &config);
        assert_ne!(code, 0, "serve started with {extra:?}");
        assert!(err.contains("90-day retention floor"), "{err}");
        assert_eq!(footage(&db, &storage).await, (n as i64, n), "after {extra:?}");
    }
    spec.extra_toml.clear();
    let server = spec.start().await;
    let admin = server.token.clone();
    let out = spec.add_user("operator-1", "operator", "a long enough password");
    assert!(out.status.success());
    let operator = server.login("operator-1", "a long enough password").await;
    // The sweep at start-up (there is always one) found nothing to delete.
    wait_until("the start-up sweep", Duration::from_secs(20), || async {
        let (s, v) = server.call(Method::GET, "/api/v1/audit?action=retention_deleted", Some(&admin), None).await;
        s == StatusCode::OK && !v["entries"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(footage(&db, &storage).await, (n as i64, n));

    // 2. A camera's retention through the API and the CLI.
    let body = json!({ "id": "room-9", "url": NOWHERE, "retention_days": 30 });
    let (status, v) = server.call(Method::POST, "/api/v1/centre/cameras", Some(&admin), Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("90-day retention floor"), "{v}");
    let (code, _, err) = centre_cli(&config, &["camera-add", "--json", r#"{"id":"room-9","url":"rtsp://127.0.0.1:9/x","retention_days":30}"#]);
    assert_eq!(code, 2);
    assert!(err.contains("90-day retention floor"), "{err}");
    // Longer is fine, is stored and shown; shortening it later is refused.
    let body = json!({ "id": "room-8", "url": NOWHERE, "retention_days": 120 });
    let (status, v) = server.call(Method::POST, "/api/v1/centre/cameras", Some(&admin), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["retention_days"], 120);
    let body = json!({ "url": NOWHERE, "retention_days": 100 });
    let (status, v) = server.call(Method::PUT, "/api/v1/centre/cameras/room-8/connection", Some(&admin), Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("never shortened"), "{v}");
    let (status, v) = server.call(Method::PUT, "/api/v1/centre/cameras/room-8/connection", Some(&admin), Some(json!({ "url": NOWHERE }))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (code, out, err) = centre_cli(&config, &["camera-add", "--json", r#"{"id":"room-7","url":"rtsp://127.0.0.1:9/x","retention_days":365}"#]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("365"), "{out}");
    wait_until("room-7 started", Duration::from_secs(15), || async {
        server.call(Method::GET, "/api/v1/cameras/room-7", Some(&admin), None).await.0 == StatusCode::OK
    })
    .await;
    let policy = server.get("/api/v1/retention").await;
    let days = |id: &str| policy["cameras"].as_array().unwrap().iter().find(|c| c["id"] == id).map(|c| c["retention_days"].clone());
    assert_eq!(
        (days("room-1"), days("room-8"), days("room-7"), days("gone")),
        (Some(json!(90)), Some(json!(120)), Some(json!(365)), Some(json!(90))),
        "{policy}"
    );
    assert_eq!(policy["floor_days"], 90);

    // 3. `cradle sweep` has no way to ask for less.
    for days in ["30", "89"] {
        let (code, _, err) = cradle(&["sweep", "--older-than-days", days], &config);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("90-day retention floor"), "{err}");
    }
    let (code, out, err) = cradle(&["sweep", "--dry-run"], &config);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DRY RUN") && out.contains("would delete 0 segments"), "{out}");
    assert_eq!(footage(&db, &storage).await, (n as i64, n));

    // 4. The sweep API: below the floor is 422 naming it; operators may not sweep.
    for days in [30, 89, -1] {
        let (status, v) =
            server.call(Method::POST, "/api/v1/retention/sweep", Some(&admin), Some(json!({ "older_than_days": days }))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{days}: {v}");
        assert!(v["error"].as_str().unwrap().contains("90-day retention floor"), "{v}");
    }
    let (status, _) = server.call(Method::POST, "/api/v1/retention/sweep", Some(&operator), Some(json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(footage(&db, &storage).await, (n as i64, n));

    // 5. No route deletes footage.
    for (path, want) in [
        ("/api/v1/cameras/room-1/recordings", StatusCode::METHOD_NOT_ALLOWED),
        ("/api/v1/cameras/room-1", StatusCode::METHOD_NOT_ALLOWED),
        ("/api/v1/holds", StatusCode::METHOD_NOT_ALLOWED),
        ("/api/v1/segments", StatusCode::NOT_FOUND),
        (&format!("/api/v1/segments/{}", segs[0].key()), StatusCode::NOT_FOUND),
        (&format!("/api/v1/recordings/{}", segs[0].key()), StatusCode::NOT_FOUND),
    ] {
        let (status, _) = server.call(Method::DELETE, path, Some(&admin), None).await;
        assert_eq!(status, want, "DELETE {path}");
    }
    assert_eq!(footage(&db, &storage).await, (n as i64, n));

    // The admin's sweep deletes what expired — one segment 91 days old — and nothing else.
    let old = footage_at(&[91]);
    let old = [old[0].clone()];
    seed(&spec, &old).await;
    let (code, out, _) = cradle(&["sweep", "--dry-run", "--json"], &config);
    assert_eq!(code, 0);
    let dry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((dry["dry_run"].clone(), dry["deleted_segments"].clone()), (json!(true), json!(1)));
    assert_eq!(footage(&db, &storage).await, (n as i64 + 1, n + 1), "a dry run deletes nothing");
    let (status, v) = server.call(Method::POST, "/api/v1/retention/sweep", Some(&admin), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["deleted_segments"], 1, "{v}");
    assert_eq!(footage(&db, &storage).await, (n as i64, n));
    let objects: BTreeSet<String> = storage.list(None).await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert!(!objects.contains(&old[0].key()));
    let (_, v) = server.call(Method::GET, "/api/v1/audit?action=retention_deleted", Some(&admin), None).await;
    let newest = &v["entries"][0];
    assert_eq!((newest["actor"].clone(), newest["detail"]["deleted_segments"].clone()), (json!(TEST_ADMIN), json!(1)));
}

async fn holds_are_placed_listed_and_released_by_an_admin_with_a_reason(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(backend, dir.path()).await;
    spec.cameras.push(CameraSpec::new("room-1", NOWHERE));
    let roles = [("operator-1", "operator"), ("police", "investigator"), ("regulator-1", "regulator"), ("mum", "parent"), ("committee-1", "committee")];
    for (u, r) in roles {
        assert!(spec.add_user(u, r, "a long enough password").status.success());
    }
    let server = spec.start().await;
    // After the start-up sweep (it would delete the 95-day-old footage before a hold).
    wait_until("the start-up sweep", Duration::from_secs(20), || async {
        let (s, v) = server.call(Method::GET, "/api/v1/audit?action=retention_deleted", Some(&server.token), None).await;
        s == StatusCode::OK && !v["entries"].as_array().unwrap().is_empty()
    })
    .await;
    let segs = footage_at(&[95, 40, 2]);
    seed(&spec, &segs).await;
    let admin = server.token.clone();
    let mut tok = std::collections::HashMap::new();
    for (u, _) in roles {
        tok.insert(u, server.login(u, "a long enough password").await);
    }
    let now = cradle::time::now_us();
    let range = |from_days: i64, to_days: i64| {
        (cradle::time::format_rfc3339(now - from_days * DAY), cradle::time::format_rfc3339(now - to_days * DAY))
    };
    let (start, end) = range(96, 94);
    let body = json!({ "camera_id": "room-1", "start": start, "end": end, "case_ref": "JD-2026-0042", "reason": "complaint" });

    for who in ["operator-1", "police", "regulator-1", "mum"] {
        let (s, _) = server.call(Method::POST, "/api/v1/holds", Some(&tok[who]), Some(body.clone())).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who} placed a hold");
    }
    let mut bad = body.clone();
    bad["end"] = json!(start);
    let (s, v) = server.call(Method::POST, "/api/v1/holds", Some(&admin), Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let mut bad = body.clone();
    bad["case_ref"] = json!("");
    assert_eq!(server.call(Method::POST, "/api/v1/holds", Some(&admin), Some(bad)).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let mut bad = body.clone();
    bad["camera_id"] = json!("room-404");
    assert_eq!(server.call(Method::POST, "/api/v1/holds", Some(&admin), Some(bad)).await.0, StatusCode::NOT_FOUND);

    let (s, placed) = server.call(Method::POST, "/api/v1/holds", Some(&admin), Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{placed}");
    assert_eq!((placed["active"].clone(), placed["segments_covered"].clone()), (json!(true), json!(1)));
    let id = placed["id"].as_i64().unwrap();
    // A removed camera's footage can be held too (it is in the index).
    let mut gone = body.clone();
    gone["camera_id"] = json!("gone");
    let (s, v) = server.call(Method::POST, "/api/v1/holds", Some(&admin), Some(gone)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    for who in ["operator-1", "police", "regulator-1"] {
        let (s, v) = server.call(Method::GET, "/api/v1/holds?active=true", Some(&tok[who]), None).await;
        assert_eq!(s, StatusCode::OK, "{who}");
        assert_eq!(v["holds"].as_array().unwrap().len(), 2, "{v}");
    }
    for who in ["mum", "committee-1"] {
        assert_eq!(server.call(Method::GET, "/api/v1/holds", Some(&tok[who]), None).await.0, StatusCode::FORBIDDEN, "{who}");
    }

    // Held footage survives a sweep even when expired (95 days old).
    let (s, v) = server.call(Method::POST, "/api/v1/retention/sweep", Some(&admin), Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["deleted_segments"].clone(), v["held_kept_segments"].clone()), (json!(0), json!(2)), "{v}");

    let release = format!("/api/v1/holds/{id}/release");
    assert_eq!(
        server.call(Method::POST, &release, Some(&tok["operator-1"]), Some(json!({ "reason": "done" }))).await.0,
        StatusCode::FORBIDDEN
    );
    for body in [json!({}), json!({ "reason": "   " })] {
        let (s, v) = server.call(Method::POST, &release, Some(&admin), Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v["error"].as_str().unwrap().contains("reason"), "{v}");
    }
    let (s, v) = server.call(Method::POST, &release, Some(&admin), Some(json!({ "reason": "court case closed" }))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["active"].clone(), v["release_reason"].clone()), (json!(false), json!("court case closed")));
    let (s, v) = server.call(Method::POST, &release, Some(&admin), Some(json!({ "reason": "again" }))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(server.call(Method::POST, "/api/v1/holds/9999/release", Some(&admin), Some(json!({ "reason": "x" }))).await.0, StatusCode::NOT_FOUND);
    let active = server.get("/api/v1/holds?active=true").await;
    assert_eq!(active["holds"].as_array().unwrap().len(), 1);
    assert_eq!(server.get("/api/v1/holds").await["holds"].as_array().unwrap().len(), 2, "released holds stay listed");

    // Released: the room-1 segment goes at the next sweep; the other hold keeps gone's.
    let (_, v) = server.call(Method::POST, "/api/v1/retention/sweep", Some(&admin), Some(json!({}))).await;
    assert_eq!((v["deleted_segments"].clone(), v["held_kept_segments"].clone()), (json!(1), json!(1)), "{v}");

    // The command line does the same, under the same rules.
    let config = spec.config_path();
    let (start, end) = range(50, 30);
    let req = json!({ "camera_id": "room-1", "start": start, "end": end, "case_ref": "CLI-1", "reason": "police request" }).to_string();
    let (code, out, err) = hold_cli(&config, &["add", "--json", &req]);
    assert_eq!(code, 0, "{err}");
    let cli_hold: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli_hold["created_by"].as_str().map(|s| s.starts_with("cli:")), Some(true), "{out}");
    let (code, out, _) = hold_cli(&config, &["list", "--active"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["holds"].as_array().unwrap().len(), 2);
    let cli_id = cli_hold["id"].to_string();
    let (code, _, err) = hold_cli(&config, &["release", "--id", &cli_id, "--reason", " "]);
    assert_eq!(code, 2);
    assert!(err.contains("reason"), "{err}");
    let (code, _, err) = hold_cli(&config, &["release", "--id", &cli_id, "--reason", "request withdrawn"]);
    assert_eq!(code, 0, "{err}");

    // All of it audited, with case, camera, range and reason.
    let (_, v) = server.call(Method::GET, "/api/v1/audit?action=legal_hold", Some(&admin), None).await;
    let placed_entries = v["entries"].as_array().unwrap();
    assert_eq!(placed_entries.len(), 3, "{v}");
    let first = placed_entries.iter().find(|e| e["detail"]["id"] == id).unwrap();
    assert_eq!(
        (first["actor"].clone(), first["detail"]["case_ref"].clone(), first["detail"]["camera_id"].clone(), first["detail"]["reason"].clone()),
        (json!(TEST_ADMIN), json!("JD-2026-0042"), json!("room-1"), json!("complaint"))
    );
    assert_eq!(first["detail"]["start"], placed["start"]);
    let (_, v) = server.call(Method::GET, "/api/v1/audit?action=legal_hold_released", Some(&admin), None).await;
    let reasons: Vec<&str> = v["entries"].as_array().unwrap().iter().map(|e| e["detail"]["release_reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, vec!["request withdrawn", "court case closed"]);
}
