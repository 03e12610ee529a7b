//! The reconciler: compares the index with the bucket, so that nothing is silently
//! dropped in either direction.
//!
//! - An **object without a row** (a crash between upload and index, a restored backup,
//!   an index rebuilt from an old copy) is read and re-indexed exactly as `cradle
//!   reindex` would ([`crate::reindex::read_segment`]), and an event says so. An object
//!   that is not a segment (a key outside the scheme, an unreadable file) is reported
//!   once and left alone: never indexed, never deleted.
//! - A **row in state `stored` without its object** is proof that footage existed and is
//!   gone: it raises a `footage_missing` alarm for its camera naming how many segments,
//!   the first and last keys and the time range. The row is kept and nothing is marked;
//!   the alarm clears when a later pass finds every such object present again (restored
//!   from a backup, a delete marker removed) or the rows expired.
//! - Rows in `spooled` (not uploaded yet) and `deleting` (the sweeper's) are not
//!   compared, and an object whose row is `deleting` is never re-indexed. Objects younger
//!   than [`MIN_OBJECT_AGE`] are left for the next pass: their upload may be racing its
//!   row.
//!
//! **Cost.** The unit of work is one camera-day: one LIST of `CAMERA/YYYY-MM-DD/` (one
//! request per 1000 keys: a day of one-minute segments is two) and one range scan of
//! that day's rows. Each periodic pass ([`crate::config::RetentionConfig::reconcile_interval`],
//! default 10 minutes) checks, per camera:
//! 1. today and yesterday (UTC, as in the keys) — where uploads land;
//! 2. every day holding footage already known to be missing, so its alarm clears soon
//!    after a restore;
//! 3. a rotating cursor over the older days, newest to oldest and round again, taking
//!    enough per pass that every day is checked about once a day: `ceil(days × interval
//!    / 24 h)` — one day per pass for 90 days at 10 minutes (144 passes a day).
//!
//! Finding a camera's days costs one LIST of its day "directories" and one skip-scan
//! of its rows (one index probe per day with rows). So 100 cameras × 90 days of
//! one-minute segments cost ~500–700 LIST requests and ~500 statements per pass (every
//! 10 minutes), whatever the size of the archive, and any object or row is compared
//! within a day. The first pass after a start checks
//! every day of the cameras that have a live `footage_missing` alarm (the set of missing
//! keys is kept in memory). `cradle reconcile` checks every day of every camera at once.
//!
//! **Races.** A missing-object verdict needs the object absent from a second listing
//! made after the row was read, and the row still `stored` after that: an upload marks
//! its row `stored` only after its PUT returned, and the sweeper marks rows `deleting`
//! before it deletes their objects, so neither is mistaken for lost footage.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use tokio::sync::Mutex;
use tracing::{info, warn};

use super::DAY_US;
use crate::alarms::{AlarmKind, Alarms};
use crate::config::CameraId;
use crate::db::reconcile::KeyRow;
use crate::db::{Db, STATE_STORED};
use crate::reindex::{read_segment, ObjectError};
use crate::storage::{parse_segment_key, Storage, StorageError};
use crate::time::{format_day, format_rfc3339, now_us, parse_compact, WallUs};

/// Objects last written less than this ago are not re-indexed yet: the uploader puts
/// the object first and writes its row right after.
pub const MIN_OBJECT_AGE: Duration = Duration::from_secs(60);

/// A UTC day as a number of days since the Unix epoch.
type Day = i64;

/// How much of the archive a pass looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Recent days, known-missing days and a share of the older days (see the module docs).
    Periodic,
    /// Every day of every camera (`cradle reconcile`).
    Full,
}

/// Indexed segments of one camera whose objects are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub count: usize,
    pub first_key: String,
    pub first_start_us: WallUs,
    pub last_key: String,
    pub last_end_us: WallUs,
}

impl Missing {
    fn of(set: &BTreeMap<String, (WallUs, WallUs)>) -> Option<Missing> {
        // Keys of one camera sort by start time.
        let (first_key, (first_start_us, _)) = set.first_key_value()?;
        let (last_key, (_, last_end_us)) = set.last_key_value()?;
        Some(Missing {
            count: set.len(),
            first_key: first_key.clone(),
            first_start_us: *first_start_us,
            last_key: last_key.clone(),
            last_end_us: *last_end_us,
        })
    }

    /// The alarm's text.
    pub fn describe(&self) -> String {
        let what = match self.count {
            1 => format!("1 segment indexed as stored is missing from storage: {}", self.first_key),
            n => format!(
                "{n} segments indexed as stored are missing from storage, first {}, last {}",
                self.first_key, self.last_key
            ),
        };
        format!(
            "{what}; footage from {} to {} (the index rows are kept as proof it was recorded; restore the objects \
             from a backup or version to clear this)",
            format_rfc3339(self.first_start_us),
            format_rfc3339(self.last_end_us)
        )
    }
}

/// What one pass found.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    pub scope: Option<Scope>,
    pub cameras: usize,
    /// Camera-days compared.
    pub days: usize,
    pub objects: usize,
    pub rows: usize,
    /// Objects found without rows and indexed by this pass.
    pub reindexed: Vec<String>,
    /// Objects without rows left for a later pass because they are younger than the minimum age.
    pub young: usize,
    /// Objects that are not segments: key and why (a periodic pass lists each once per process).
    pub not_segments: Vec<(String, String)>,
    /// Per camera: its stored segments missing from storage, as far as known after this pass.
    pub missing: BTreeMap<String, Missing>,
    /// Camera-days (or cameras) that could not be compared, and why: tried again next pass.
    pub errors: Vec<String>,
}

#[derive(Default)]
struct State {
    /// Per camera: the older day the rotation checks next.
    cursor: HashMap<String, Day>,
    /// Per camera: the missing keys known, with (start, end).
    missing: HashMap<String, BTreeMap<String, (WallUs, WallUs)>>,
    /// Keys already reported as not segments.
    reported: HashSet<String>,
    /// Cameras whose every day the next periodic pass checks: those with a live
    /// `footage_missing` alarm when this process started (their missing keys are not in
    /// memory), until one pass got through all their days. `None` before the first pass.
    full_pending: Option<HashSet<String>>,
}

pub struct Reconciler {
    db: Db,
    storage: Storage,
    /// `None`: report only (the CLI; the server's passes own the alarm).
    alarms: Option<Alarms>,
    interval: Duration,
    min_age: Duration,
    /// One pass at a time; the state between passes.
    state: Mutex<State>,
}

impl Reconciler {
    pub fn new(db: Db, storage: Storage, alarms: Option<Alarms>, interval: Duration) -> Reconciler {
        Reconciler { db, storage, alarms, interval, min_age: MIN_OBJECT_AGE, state: Mutex::new(State::default()) }
    }

    /// Objects younger than `age` are left for a later pass ([`MIN_OBJECT_AGE`] by default).
    pub fn with_min_object_age(mut self, age: Duration) -> Reconciler {
        self.min_age = age;
        self
    }

    /// Runs one pass at `now`. Errors of single camera-days are in the report; an error
    /// here means the pass could not start (the index or the bucket unreachable).
    pub async fn pass(&self, now: WallUs, scope: Scope) -> anyhow::Result<PassReport> {
        let mut st = self.state.lock().await;
        let mut report = PassReport { scope: Some(scope), ..Default::default() };
        if st.full_pending.is_none() {
            st.full_pending = Some(match &self.alarms {
                Some(alarms) => alarms
                    .all_live()
                    .await?
                    .into_iter()
                    .filter(|a| a.kind == AlarmKind::FootageMissing.as_str())
                    .filter_map(|a| a.camera_id)
                    .collect(),
                None => HashSet::new(),
            });
        }
        let full_for = st.full_pending.clone().unwrap_or_default();

        let mut cameras: BTreeSet<String> = self.db.indexed_camera_ids().await?.into_iter().collect();
        let (dirs, loose) = self.storage.list_dir(None).await?;
        for o in loose {
            self.not_segment(&mut st, &mut report, scope, &o.key, "outside any camera directory");
        }
        for d in dirs {
            match CameraId::parse(&d) {
                Ok(_) => {
                    cameras.insert(d);
                }
                Err(_) => self.not_segment(&mut st, &mut report, scope, &format!("{d}/"), "not a camera directory"),
            }
        }
        cameras.extend(st.missing.keys().cloned());
        cameras.extend(full_for.iter().cloned());
        report.cameras = cameras.len();

        let today = now.div_euclid(DAY_US);
        for camera in &cameras {
            let days = match self.camera_days(&mut st, &mut report, scope, camera).await {
                Ok(d) => d,
                Err(e) => {
                    report.errors.push(format!("camera {camera}: {e}"));
                    continue;
                }
            };
            let chosen: Vec<Day> = if scope == Scope::Full || full_for.contains(camera) {
                days.iter().copied().collect()
            } else {
                let mut pick: BTreeSet<Day> = days.range(today - 1..=today).copied().collect();
                if let Some(m) = st.missing.get(camera) {
                    pick.extend(m.keys().filter_map(|k| parse_segment_key(k)).map(|(_, s)| s.div_euclid(DAY_US)));
                }
                let older: Vec<Day> = days.range(..today - 1).rev().copied().collect();
                let cursor = st.cursor.get(camera).copied();
                let (more, next) = rotation(&older, cursor, self.interval);
                match next {
                    Some(n) => st.cursor.insert(camera.clone(), n),
                    None => st.cursor.remove(camera),
                };
                pick.extend(more);
                pick.into_iter().collect()
            };
            let mut reindexed = Vec::new();
            let mut complete = true;
            for day in chosen {
                match self.check_day(&mut st, &mut report, scope, camera, day, now, &mut reindexed).await {
                    Ok(lost) => {
                        let set = st.missing.entry(camera.clone()).or_default();
                        set.retain(|k, _| parse_segment_key(k).map(|(_, s)| s.div_euclid(DAY_US)) != Some(day));
                        set.extend(lost);
                        report.days += 1;
                    }
                    Err(e) => {
                        complete = false;
                        report.errors.push(format!("{camera}/{}: {e}", format_day(day * DAY_US)));
                    }
                }
            }
            if complete {
                if let Some(p) = st.full_pending.as_mut() {
                    p.remove(camera);
                }
            }
            if !reindexed.is_empty() {
                let detail = format!(
                    "re-indexed {} objects found in the bucket without index rows (first {}, last {})",
                    reindexed.len(),
                    reindexed.first().expect("not empty"),
                    reindexed.last().expect("not empty")
                );
                info!(camera = camera.as_str(), "reconcile: {detail}");
                if let Err(e) = self.db.insert_event(Some(camera), now_us(), "reindexed", &detail).await {
                    warn!("reconcile: cannot record the event \"{detail}\": {e}");
                }
                report.reindexed.extend(reindexed);
            }
            let missing = st.missing.get(camera).and_then(Missing::of);
            if missing.is_none() {
                st.missing.remove(camera);
            }
            // A day that could not be compared may hold missing footage: never clear on
            // an incomplete picture.
            if missing.is_some() || complete {
                self.alarm(camera, missing.as_ref()).await;
            }
            if let Some(m) = missing {
                report.missing.insert(camera.clone(), m);
            }
        }
        Ok(report)
    }

    /// The days `camera` has footage on: days in the bucket, and days with rows.
    async fn camera_days(
        &self,
        st: &mut State,
        report: &mut PassReport,
        scope: Scope,
        camera: &str,
    ) -> anyhow::Result<BTreeSet<Day>> {
        let mut days = BTreeSet::new();
        let (dirs, loose) = self.storage.list_dir(Some(camera)).await?;
        for o in loose {
            self.not_segment(st, report, scope, &o.key, "not under a day directory");
        }
        for d in dirs {
            match d.strip_prefix(&format!("{camera}/")).and_then(parse_day) {
                Some(day) => {
                    days.insert(day);
                }
                None => self.not_segment(st, report, scope, &format!("{d}/"), "not a day directory (YYYY-MM-DD)"),
            }
        }
        days.extend(self.db.camera_row_days(camera).await?);
        Ok(days)
    }

    /// Compares one camera-day; returns its stored rows whose objects are missing.
    #[allow(clippy::too_many_arguments)]
    async fn check_day(
        &self,
        st: &mut State,
        report: &mut PassReport,
        scope: Scope,
        camera: &str,
        day: Day,
        now: WallUs,
        reindexed: &mut Vec<String>,
    ) -> anyhow::Result<BTreeMap<String, (WallUs, WallUs)>> {
        let prefix = format!("{camera}/{}", format_day(day * DAY_US));
        let (from, to) = (day * DAY_US, (day + 1) * DAY_US);
        // Objects first, then rows: see "Races" in the module docs.
        let objects = self.storage.list_objects(Some(&prefix)).await?;
        let rows = self.db.rows_starting_between(camera, from, to).await?;
        report.objects += objects.len();
        report.rows += rows.len();
        let by_key: HashMap<&str, &KeyRow> = rows.iter().map(|r| (r.object_key.as_str(), r)).collect();
        let present: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();

        for o in objects.iter().filter(|o| !by_key.contains_key(o.key.as_str())) {
            match parse_segment_key(&o.key) {
                Some((c, start)) if c.as_str() == camera && start.div_euclid(DAY_US) == day => {}
                _ => {
                    self.not_segment(st, report, scope, &o.key, "not a segment key of this camera and day");
                    continue;
                }
            }
            if now - o.last_modified_us < self.min_age.as_micros() as i64 {
                report.young += 1;
                continue;
            }
            match read_segment(&self.storage, &o.key).await {
                Ok(row) => {
                    if self.db.insert_segment_if_absent(&row, now_us()).await? {
                        reindexed.push(o.key.clone());
                    }
                }
                Err(ObjectError::NotSegment(why)) => self.not_segment(st, report, scope, &o.key, &why),
                // Deleted since the listing (the sweeper): nothing to index.
                Err(ObjectError::Storage(StorageError::Store(object_store::Error::NotFound { .. }))) => {}
                Err(ObjectError::Storage(e)) => report.errors.push(format!("reading {}: {e}", o.key)),
            }
        }

        let candidates: Vec<&KeyRow> =
            rows.iter().filter(|r| r.state == STATE_STORED && !present.contains(r.object_key.as_str())).collect();
        if candidates.is_empty() {
            return Ok(BTreeMap::new());
        }
        // Confirm: the object is still absent from a listing made after the rows were
        // read, and the row is still `stored` after that listing.
        let again: HashSet<String> =
            self.storage.list_objects(Some(&prefix)).await?.into_iter().map(|o| o.key).collect();
        let rows_now: HashMap<String, KeyRow> = self
            .db
            .rows_starting_between(camera, from, to)
            .await?
            .into_iter()
            .map(|r| (r.object_key.clone(), r))
            .collect();
        Ok(candidates
            .into_iter()
            .filter(|r| !again.contains(&r.object_key))
            .filter(|r| rows_now.get(&r.object_key).is_some_and(|n| n.state == STATE_STORED))
            .map(|r| (r.object_key.clone(), (r.start_us, r.end_us)))
            .collect())
    }

    fn not_segment(&self, st: &mut State, report: &mut PassReport, scope: Scope, key: &str, why: &str) {
        let first = st.reported.insert(key.to_owned());
        if first {
            warn!("reconcile: {key} in {} is not a Cradle segment ({why}); left in place, not indexed", self.storage.description);
        }
        if first || scope == Scope::Full {
            report.not_segments.push((key.to_owned(), why.to_owned()));
        }
    }

    async fn alarm(&self, camera: &str, missing: Option<&Missing>) {
        let Some(alarms) = &self.alarms else { return };
        let r = match missing {
            Some(m) => alarms.raise(Some(camera), AlarmKind::FootageMissing, &m.describe()).await.map(|_| ()),
            None => alarms
                .clear(
                    Some(camera),
                    AlarmKind::FootageMissing,
                    "every indexed segment of this camera is in storage again (objects restored, or their rows expired)",
                )
                .await
                .map(|_| ()),
        };
        if let Err(e) = r {
            warn!(camera, "reconcile: cannot update the footage_missing alarm: {e}");
        }
    }
}

/// `cradle reconcile`: one full pass, printed. Re-indexes what it finds without rows;
/// raises no alarm (the server's own passes do). Exit 0 when no indexed footage is
/// missing from storage, 3 when some is, 1 when the pass failed.
pub async fn cli(config: crate::config::Config, min_age: Duration) -> anyhow::Result<std::process::ExitCode> {
    let db = Db::connect(&config.database_url).await?;
    let storage = Storage::from_config(&config.storage)?;
    let rec = Reconciler::new(db.clone(), storage, None, config.retention.reconcile_interval).with_min_object_age(min_age);
    let r = rec.pass(now_us(), Scope::Full).await;
    db.close().await;
    let r = r?;
    println!(
        "reconcile: {} cameras, {} camera-days, {} objects, {} index rows compared",
        r.cameras, r.days, r.objects, r.rows
    );
    if !r.reindexed.is_empty() {
        println!("re-indexed {} objects found in the bucket without index rows:", r.reindexed.len());
        for k in &r.reindexed {
            println!("  {k}");
        }
    }
    if r.young > 0 {
        println!("{} objects without rows are younger than {} s (an upload in progress?): not indexed yet", r.young, min_age.as_secs());
    }
    if !r.not_segments.is_empty() {
        println!("{} objects are not Cradle segments (left in place, not indexed):", r.not_segments.len());
        for (k, why) in &r.not_segments {
            println!("  {k}: {why}");
        }
    }
    for e in &r.errors {
        println!("could not compare {e}");
    }
    for (camera, m) in &r.missing {
        println!("FOOTAGE MISSING: camera {camera}: {}", m.describe());
    }
    Ok(match (r.missing.is_empty(), r.errors.is_empty()) {
        (false, _) => std::process::ExitCode::from(3),
        (true, false) => std::process::ExitCode::from(1),
        (true, true) => {
            println!("every indexed segment is in storage");
            std::process::ExitCode::SUCCESS
        }
    })
}

/// The older days (newest first) this pass checks, and where the next pass starts.
/// Takes enough days that the rotation goes round about once a day at `interval`.
fn rotation(older: &[Day], cursor: Option<Day>, interval: Duration) -> (Vec<Day>, Option<Day>) {
    if older.is_empty() {
        return (Vec::new(), None);
    }
    let passes_per_day = (86_400 / interval.as_secs().max(1)).max(1) as usize;
    let take = older.len().div_ceil(passes_per_day).min(older.len());
    // The first day at or before the cursor; past the oldest (or no cursor): from the newest.
    let start = cursor.and_then(|c| older.iter().position(|&d| d <= c)).unwrap_or(0);
    let picked: Vec<Day> = (0..take).map(|i| older[(start + i) % older.len()]).collect();
    let next = older[(start + take) % older.len()];
    (picked, Some(next))
}

/// `YYYY-MM-DD` → day number; `None` for anything else.
fn parse_day(s: &str) -> Option<Day> {
    if s.len() != 10 || s.as_bytes()[4] != b'-' || s.as_bytes()[7] != b'-' {
        return None;
    }
    let us = parse_compact(&format!("{}{}{}T000000.000000Z", &s[0..4], &s[5..7], &s[8..10]))?;
    (format_day(us) == s).then(|| us.div_euclid(DAY_US))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_directories_parse_and_nothing_else_does() {
        let day = parse_day("2026-03-02").unwrap();
        assert_eq!(format_day(day * DAY_US), "2026-03-02");
        for bad in ["2026-3-02", "2026-02-30", "20260302", "2026-03-02x", "abcd-ef-gh"] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_rotation_covers_every_older_day_within_a_day_of_passes() {
        let older: Vec<Day> = (0..95).rev().collect(); // newest first
        let ten_minutes = Duration::from_secs(600);
        let mut cursor = None;
        let mut seen = BTreeSet::new();
        for _ in 0..144 {
            let (picked, next) = rotation(&older, cursor, ten_minutes);
            assert_eq!(picked.len(), 1, "95 days over 144 passes: one day a pass");
            seen.extend(picked);
            cursor = next;
        }
        assert_eq!(seen.len(), 95, "every day checked within 144 passes (24 h at 10 min)");

        // A short interval still goes round once a day, a long one takes more per pass.
        let (picked, _) = rotation(&older, None, Duration::from_secs(3600));
        assert_eq!(picked.len(), 4, "95 days / 24 passes");
        let (picked, next) = rotation(&older, None, Duration::from_secs(86_400));
        assert_eq!((picked.len(), next), (95, Some(94)), "one pass a day checks all");
    }

    #[test]
    fn the_rotation_survives_days_disappearing_under_its_cursor() {
        let (picked, next) = rotation(&[10, 9, 8], Some(7), Duration::from_secs(86_400 / 2));
        assert_eq!((picked, next), (vec![10, 9], Some(8)), "cursor past the oldest: round again");
        let (picked, next) = rotation(&[10, 8, 6], Some(9), Duration::from_secs(86_400 / 3));
        assert_eq!((picked, next), (vec![8], Some(6)));
        assert_eq!(rotation(&[], Some(3), Duration::from_secs(600)), (vec![], None));
    }

    #[test]
    fn the_alarm_text_names_count_keys_and_time_range() {
        let mut set = BTreeMap::new();
        set.insert("cam/2026-03-02/cam_20260302T080000.000000Z.mp4".to_owned(), (10, 20));
        set.insert("cam/2026-03-02/cam_20260302T080100.000000Z.mp4".to_owned(), (20, 30_000_000));
        let m = Missing::of(&set).unwrap();
        let d = m.describe();
        assert!(d.starts_with("2 segments"), "{d}");
        assert!(d.contains("first cam/2026-03-02/cam_20260302T080000.000000Z.mp4"), "{d}");
        assert!(d.contains("last cam/2026-03-02/cam_20260302T080100.000000Z.mp4"), "{d}");
        assert!(d.contains("from 1970-01-01T00:00:00.000010Z to 1970-01-01T00:00:30.000000Z"), "{d}");
        assert_eq!(Missing::of(&BTreeMap::new()), None);
    }
}
