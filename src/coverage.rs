//! Proof of coverage: per camera and per day of the centre's calendar, the seconds
//! recorded and every gap with a cause a regulator can read (MISSION: "the server knows,
//! per camera and second, whether it was recording; every gap has a recorded cause").
//!
//! A day's account is computed from the index: the recorded spans (segment rows, plus
//! the segment in progress, which is footage being written and not a gap), the camera's
//! events, and the server's runs. Each hole between recorded spans is cut into pieces
//! by what explains it, in this order:
//!
//! 1. before the camera's first footage or event: `not_yet_installed`;
//! 2. after its decommission: `decommissioned`;
//! 3. while no server ran (from a run's clean stop or last sign of life to the next
//!    start, widened by the shutdown before it and the reconnect after it):
//!    `server_down` (clean stop) or `server_crashed`;
//! 4. the rest by the camera's events around it: `storage_failure` (spool full, spool
//!    write failed: footage could not be kept), `settings_changed`, `camera_offline`,
//!    `clock_drift` — and `unknown` when nothing recorded explains it.
//!
//! `not_yet_installed` and `decommissioned` are *excused*: shown, but not counted
//! against the camera's coverage percentage.
//!
//! Closed days (ended, nothing of them left in the spool) are persisted in the ledger
//! (`coverage_days`, see [`crate::db::coverage`]) by a periodic pass and by any read,
//! so the answer outlives the footage the sweeper deletes after the retention period,
//! and reading a month of a hundred cameras costs one ledger row per camera-day instead
//! of 1440 segment rows. A day whose segments are indexed later (reindex, reconciler)
//! is marked stale by a trigger and recomputed; what the ledger already proved
//! recorded stays recorded (see [`intersect`]).

pub mod armed;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::centre::CentreTimeZone;
use crate::db::coverage::LedgerRow;
use crate::db::{Db, DbError, EventRow};
use crate::fleet::Fleet;
use crate::gaps::{holes, TOLERANCE_US};
use crate::time::{format_rfc3339, WallUs};

/// A hole that began at most this long before a server run ended belongs to the stop:
/// ingest stops first, then the recorders and the uploader drain (≤ 20 s), and only
/// then is `server_stopped` written.
pub const STOP_LEAD_US: i64 = 30_000_000;
/// After a start, the camera has this long to connect and deliver its first keyframe
/// before the hole is the camera's, unless it reports a failure sooner.
pub const START_LAG_US: i64 = 30_000_000;
/// The event that explains a hole is often logged shortly after the last frame (the
/// RTSP session times out) or shortly before the segment closed.
pub const EVENT_LEAD_US: i64 = 15_000_000;
/// How long after a day ends the ledger waits before calling it closed, beyond two
/// segment lengths (the segment in progress at midnight must be indexed first).
pub const CLOSE_MARGIN_US: i64 = 5 * 60 * 1_000_000;
/// How often the server closes days into the ledger.
pub const LEDGER_PASS: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum CoverageError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("calendar: {0}")]
    Calendar(String),
}

pub type Result<T> = std::result::Result<T, CoverageError>;

fn calendar(e: jiff::Error) -> CoverageError {
    CoverageError::Calendar(e.to_string())
}

/// Why a camera was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The camera stopped delivering or could not be reached.
    CameraOffline,
    /// No server ran: it was stopped cleanly.
    ServerDown,
    /// No server ran: it crashed, was killed or lost power.
    ServerCrashed,
    /// Footage arrived but could not be kept (spool full, spool write failed).
    StorageFailure,
    /// After the camera was decommissioned (excused).
    Decommissioned,
    /// An admin changed the camera's connection settings; the camera reconnected.
    SettingsChanged,
    /// The camera's clock drifted from the server's; recording was re-anchored.
    ClockDrift,
    /// Before the camera's first footage or event (excused).
    NotYetInstalled,
    /// Nothing recorded explains the gap.
    Unknown,
}

impl Cause {
    pub const ALL: [Cause; 9] = [
        Cause::CameraOffline,
        Cause::ServerDown,
        Cause::ServerCrashed,
        Cause::StorageFailure,
        Cause::Decommissioned,
        Cause::SettingsChanged,
        Cause::ClockDrift,
        Cause::NotYetInstalled,
        Cause::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::CameraOffline => "camera_offline",
            Cause::ServerDown => "server_down",
            Cause::ServerCrashed => "server_crashed",
            Cause::StorageFailure => "storage_failure",
            Cause::Decommissioned => "decommissioned",
            Cause::SettingsChanged => "settings_changed",
            Cause::ClockDrift => "clock_drift",
            Cause::NotYetInstalled => "not_yet_installed",
            Cause::Unknown => "unknown",
        }
    }

    /// Not counted against the camera: it did not exist yet, or was retired.
    pub fn excused(self) -> bool {
        matches!(self, Cause::NotYetInstalled | Cause::Decommissioned)
    }

    /// The cause a camera event stands for, with its precedence when several events
    /// fall in one hole (lower wins: a full spool explains more than the reconnect
    /// attempts it caused).
    fn of_event(kind: &str) -> Option<(u8, Cause)> {
        Some(match kind {
            "spool_full" | "spool_error" => (0, Cause::StorageFailure),
            "settings_changed" => (1, Cause::SettingsChanged),
            "disconnected" | "connect_failed" => (2, Cause::CameraOffline),
            "clock_drift" => (3, Cause::ClockDrift),
            _ => return None,
        })
    }
}

/// A span of a day that was not recorded, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageGap {
    pub start_us: WallUs,
    pub end_us: WallUs,
    pub cause: Cause,
    pub detail: String,
}

/// A span when no server ran: from a run's clean stop or last heartbeat to the next start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downtime {
    pub start_us: WallUs,
    pub end_us: WallUs,
    pub crashed: bool,
    pub detail: String,
}

/// The server's downtimes from its lifecycle events (oldest first): each
/// `server_started` ends the downtime that began at the stop or crash before it. The
/// first start ever has none (before it, the cameras were not yet installed).
pub fn downtimes(lifecycle: &[EventRow]) -> Vec<Downtime> {
    let mut out = Vec::new();
    let mut ended: Option<&EventRow> = None;
    for e in lifecycle {
        match e.kind.as_str() {
            "server_stopped" | "server_crashed" => ended = Some(e),
            "server_started" => {
                if let Some(end) = ended.take() {
                    let crashed = end.kind == "server_crashed";
                    let detail = format!("{}; started again {}", end.detail, format_rfc3339(e.at_us));
                    out.push(Downtime { start_us: end.at_us, end_us: e.at_us.max(end.at_us), crashed, detail });
                }
            }
            _ => {}
        }
    }
    out
}

/// What one day's account is computed from.
pub struct DayFacts<'a> {
    /// The accounted span: the day's start to its end, or to now for today.
    pub start_us: WallUs,
    pub end_us: WallUs,
    /// Recorded spans overlapping it, sorted by start (segment rows, the segment in progress).
    pub recorded: &'a [(WallUs, WallUs)],
    /// Where the hole that opens the day really began (the end of the camera's last
    /// footage before the day), so its cause is found on the day it began.
    pub footage_before_us: Option<WallUs>,
    /// The camera's own events from before that hole to `end_us`, oldest first.
    pub events: &'a [EventRow],
    pub downtimes: &'a [Downtime],
    /// The camera's first footage or event; `None`: never seen.
    pub installed_us: Option<WallUs>,
    pub decommissioned: Option<(WallUs, &'a str)>,
}

/// A day's numbers: `recorded_us + gap_us` is the accounted span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayAccount {
    pub start_us: WallUs,
    pub end_us: WallUs,
    pub recorded_us: i64,
    pub gap_us: i64,
    /// The part of `gap_us` not counted against the camera.
    pub excused_us: i64,
    pub first_recorded_us: Option<WallUs>,
    pub last_recorded_us: Option<WallUs>,
    pub gaps: Vec<CoverageGap>,
}

impl DayAccount {
    /// Sums `gaps` (sorted, disjoint, within the span) over `[start, end)`.
    pub fn from_gaps(start_us: WallUs, end_us: WallUs, gaps: Vec<CoverageGap>) -> DayAccount {
        let gap_us: i64 = gaps.iter().map(|g| g.end_us - g.start_us).sum();
        let excused_us: i64 = gaps.iter().filter(|g| g.cause.excused()).map(|g| g.end_us - g.start_us).sum();
        // The recorded parts are the complement of the gaps.
        let mut recorded = Vec::new();
        let mut cursor = start_us;
        for g in &gaps {
            if g.start_us > cursor {
                recorded.push((cursor, g.start_us));
            }
            cursor = cursor.max(g.end_us);
        }
        if end_us > cursor {
            recorded.push((cursor, end_us));
        }
        DayAccount {
            start_us,
            end_us,
            recorded_us: (end_us - start_us) - gap_us,
            gap_us,
            excused_us,
            first_recorded_us: recorded.first().map(|r| r.0),
            last_recorded_us: recorded.last().map(|r| r.1),
            gaps,
        }
    }

    /// The seconds that count: the span less the excused gaps.
    pub fn expected_us(&self) -> i64 {
        (self.end_us - self.start_us) - self.excused_us
    }

    /// Recorded share of the expected time, in percent; `None` when nothing was expected.
    pub fn coverage_percent(&self) -> Option<f64> {
        let expected = self.expected_us();
        (expected > 0).then(|| (self.recorded_us as f64 * 100.0 / expected as f64 * 1000.0).round() / 1000.0)
    }
}

/// Accounts one day: finds its holes and gives each piece its cause.
pub fn account_day(f: &DayFacts) -> DayAccount {
    let mut gaps = Vec::new();
    for (hs, he) in holes(f.start_us, f.end_us, f.recorded) {
        let began = if hs == f.start_us { f.footage_before_us.map_or(hs, |b| b.min(hs)) } else { hs };
        classify_hole(hs, he, began, f, &mut gaps);
    }
    DayAccount::from_gaps(f.start_us, f.end_us, gaps)
}

fn push(gaps: &mut Vec<CoverageGap>, start_us: WallUs, end_us: WallUs, cause: Cause, detail: impl Into<String>) {
    if end_us <= start_us {
        return;
    }
    if let Some(last) = gaps.last_mut() {
        if last.cause == cause && last.end_us == start_us {
            last.end_us = end_us;
            return;
        }
    }
    gaps.push(CoverageGap { start_us, end_us, cause, detail: detail.into() });
}

fn classify_hole(hs: WallUs, he: WallUs, began: WallUs, f: &DayFacts, gaps: &mut Vec<CoverageGap>) {
    let mut t = hs;
    match f.installed_us {
        None => {
            push(gaps, hs, he, Cause::NotYetInstalled, "no footage or event of this camera yet");
            return;
        }
        Some(i) if t < i => {
            let e = he.min(i);
            push(
                gaps,
                t,
                e,
                Cause::NotYetInstalled,
                format!("before this camera's first footage or event ({})", format_rfc3339(i)),
            );
            t = e;
        }
        Some(_) => {}
    }
    let retired = match f.decommissioned {
        Some((d, _)) if d < he => d.max(t),
        _ => he,
    };
    if t < retired {
        classify_running(t, retired, if t == hs { began } else { t }, f, gaps);
    }
    if let Some((_, why)) = f.decommissioned {
        push(gaps, retired, he, Cause::Decommissioned, why);
    }
}

/// `[a, b)`: a piece of a hole between installation and decommission. Server downtimes
/// first, the camera's events for the rest.
fn classify_running(a: WallUs, b: WallUs, began: WallUs, f: &DayFacts, gaps: &mut Vec<CoverageGap>) {
    let mut cuts: Vec<(WallUs, WallUs, &Downtime)> = Vec::new();
    for d in f.downtimes {
        // A hole that began after the server was back, or ended before it stopped, is
        // not this downtime's.
        if began > d.end_us || b <= d.start_us {
            continue;
        }
        // Up to START_LAG after the start, or until the camera reports a failure.
        let camera_spoke = f
            .events
            .iter()
            .find(|e| e.at_us >= d.end_us && Cause::of_event(&e.kind).is_some())
            .map_or(WallUs::MAX, |e| e.at_us);
        let to = (d.end_us + START_LAG_US).min(camera_spoke).max(d.end_us).min(b);
        // The shutdown before the stop is the stop's when the hole began within it;
        // a camera already out before that keeps its own cause until the stop.
        let from = if began >= d.start_us - STOP_LEAD_US { a } else { d.start_us.max(a) };
        if from < to {
            cuts.push((from, to, d));
        }
    }
    cuts.sort_by_key(|c| c.0);
    let mut cursor = a;
    for (from, to, d) in cuts {
        let from = from.max(cursor);
        if from > cursor {
            classify_by_events(cursor, from, if cursor == a { began } else { cursor }, f, gaps);
        }
        if to > from {
            let cause = if d.crashed { Cause::ServerCrashed } else { Cause::ServerDown };
            push(gaps, from, to, cause, d.detail.clone());
        }
        cursor = cursor.max(to);
    }
    if b > cursor {
        classify_by_events(cursor, b, if cursor == a { began } else { cursor }, f, gaps);
    }
}

fn classify_by_events(a: WallUs, b: WallUs, since: WallUs, f: &DayFacts, gaps: &mut Vec<CoverageGap>) {
    let best = f
        .events
        .iter()
        .filter(|e| e.at_us >= since - EVENT_LEAD_US && e.at_us < b)
        .filter_map(|e| Cause::of_event(&e.kind).map(|(rank, cause)| (rank, cause, e)))
        .min_by_key(|(rank, _, e)| (*rank, e.at_us));
    match best {
        Some((_, cause, e)) => push(gaps, a, b, cause, e.detail.clone()),
        None => push(gaps, a, b, Cause::Unknown, "no recorded event explains this gap"),
    }
}

/// The parts of a day that are gaps in both accounts (sorted, disjoint lists): what
/// either account saw recorded was recorded. A stale ledger day is recomputed from an
/// index the sweeper may have thinned since, so the recomputation alone would turn
/// swept footage into gaps. Causes come from the older account, which was computed
/// with the footage around each gap still indexed, unless it could not tell.
pub fn intersect(old: &[CoverageGap], new: &[CoverageGap]) -> Vec<CoverageGap> {
    let mut out: Vec<CoverageGap> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        let s = old[i].start_us.max(new[j].start_us);
        let e = old[i].end_us.min(new[j].end_us);
        if e - s > TOLERANCE_US {
            let why = if old[i].cause == Cause::Unknown { &new[j] } else { &old[i] };
            push(&mut out, s, e, why.cause, why.detail.clone());
        }
        if old[i].end_us < new[j].end_us {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// A calendar day of the centre, as UTC instants `[start_us, end_us)` (23 to 25 hours
/// where the zone has daylight saving time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalendarDay {
    pub date: Date,
    pub start_us: WallUs,
    pub end_us: WallUs,
}

impl CalendarDay {
    pub fn of(tz: &TimeZone, date: Date) -> Result<CalendarDay> {
        let start = date.to_zoned(tz.clone()).and_then(|z| z.start_of_day()).map_err(calendar)?;
        let next = date.tomorrow().map_err(calendar)?;
        let end = next.to_zoned(tz.clone()).and_then(|z| z.start_of_day()).map_err(calendar)?;
        Ok(CalendarDay { date, start_us: start.timestamp().as_microsecond(), end_us: end.timestamp().as_microsecond() })
    }

    pub fn containing(tz: &TimeZone, us: WallUs) -> Result<CalendarDay> {
        let date = Timestamp::from_microsecond(us).map_err(calendar)?.to_zoned(tz.clone()).date();
        CalendarDay::of(tz, date)
    }

    pub fn parse(tz: &TimeZone, day: &str) -> Result<CalendarDay> {
        let date: Date = day.parse().map_err(calendar)?;
        CalendarDay::of(tz, date)
    }

    pub fn next(&self, tz: &TimeZone) -> Result<CalendarDay> {
        CalendarDay::of(tz, self.date.tomorrow().map_err(calendar)?)
    }

    pub fn previous(&self, tz: &TimeZone) -> Result<CalendarDay> {
        CalendarDay::of(tz, self.date.yesterday().map_err(calendar)?)
    }

    /// `YYYY-MM-DD`, the ledger's key.
    pub fn key(&self) -> String {
        self.date.to_string()
    }
}

/// The calendar days overlapping `[from_us, to_us)`, oldest first.
pub fn days_overlapping(tz: &TimeZone, from_us: WallUs, to_us: WallUs) -> Result<Vec<CalendarDay>> {
    let mut days = Vec::new();
    let mut day = CalendarDay::containing(tz, from_us)?;
    while day.start_us < to_us {
        days.push(day);
        day = day.next(tz)?;
    }
    Ok(days)
}

/// Whether a day's footage is still in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Footage {
    /// Nothing was recorded that day.
    None,
    Kept,
    /// Some of the day's footage has been swept (retention); the ledger still answers.
    PartlyExpired,
    /// All of it has been swept; the ledger still answers.
    Expired,
}

/// One camera-day as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct DayReport {
    pub day: CalendarDay,
    pub account: DayAccount,
    /// Segment rows the day was computed from.
    pub segments: i64,
    /// The day is over and its account is final (kept in the ledger).
    pub closed: bool,
    /// The account was read from the ledger rather than computed from the index now.
    pub from_ledger: bool,
    pub footage: Footage,
}

/// What the ledger knows about a camera, loaded once per request.
#[derive(Clone, Debug)]
pub struct CameraFacts {
    pub camera_id: String,
    pub name: Option<String>,
    /// Recorded by this server now (config file or added by an admin).
    pub configured: bool,
    /// First footage or event: before it the camera was not yet installed.
    pub installed_us: Option<WallUs>,
    /// First footage ever (the ledger remembers what the sweeper deleted).
    pub first_footage_us: Option<WallUs>,
    /// Oldest footage still indexed.
    pub oldest_footage_us: Option<WallUs>,
    pub decommissioned: Option<(WallUs, String)>,
    earliest_spooled_us: Option<WallUs>,
    /// The segment being written: (its start, the camera's last frame).
    in_progress: Option<(WallUs, WallUs)>,
}

fn earliest(a: Option<WallUs>, b: Option<WallUs>) -> Option<WallUs> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the cameras of one request share ([`Ledger::snapshot`]).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub downtimes: Vec<Downtime>,
    /// Per camera, the start of its oldest segment still in the spool.
    spooled: HashMap<String, WallUs>,
}

/// A camera's days over a range.
#[derive(Clone, Debug)]
pub struct CameraCoverage {
    pub facts: CameraFacts,
    pub days: Vec<DayReport>,
}

/// The ledger: computes camera-days, keeps closed ones, answers from them.
pub struct Ledger {
    db: Db,
    fleet: Option<Arc<Fleet>>,
    /// Frames younger than this mean the camera is recording now.
    fresh_us: i64,
    /// A day is closed this long after it ended.
    close_after_us: i64,
    /// Days older than this may have been swept (the retention floor).
    floor_us: i64,
    /// Set once the first [`Ledger::pass`] has run (see [`Ledger::wait_first_pass`]).
    first_pass: tokio::sync::watch::Sender<bool>,
    /// Per camera: recording since, and up to where the index was checked for gaps.
    since: std::sync::Mutex<HashMap<String, (WallUs, WallUs)>>,
}

impl Ledger {
    pub fn new(db: Db, fleet: Option<Arc<Fleet>>, config: &crate::config::Config) -> Ledger {
        Ledger {
            db,
            fleet,
            fresh_us: config.watchdog.no_frames.as_micros() as i64,
            close_after_us: 2 * config.recording.segment_duration.as_micros() as i64 + CLOSE_MARGIN_US,
            floor_us: i64::from(config.policy.floor_days) * 86_400 * 1_000_000,
            first_pass: tokio::sync::watch::Sender::new(false),
            since: Default::default(),
        }
    }

    /// The periodic pass ([`LEDGER_PASS`]): closes the days that ended into the ledger
    /// in the centre's time zone. Failures are logged; the next pass retries.
    pub async fn pass(&self, now: WallUs) {
        let started = std::time::Instant::now();
        match self.db.centre().await {
            Ok(c) => match self.close_days(&c.time_zone, now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("coverage ledger: {n} camera-days closed in {:?}", started.elapsed()),
                Err(e) => warn!("coverage ledger: {e}"),
            },
            Err(e) => warn!("coverage ledger: cannot read the centre's time zone: {e}"),
        }
        self.first_pass.send_replace(true);
    }

    /// Waits until the first pass has run. The sweeper waits for it, so it never
    /// deletes the footage of a day the ledger has not kept (an index from before the
    /// ledger existed, or a server that was down when days closed).
    pub async fn wait_first_pass(&self) {
        let mut rx = self.first_pass.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// What every camera of a request shares, read once: the server's downtimes and
    /// the spool's backlog.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            downtimes: downtimes(&self.db.server_lifecycle().await?),
            spooled: self.db.earliest_spooled().await?.into_iter().collect(),
        })
    }

    /// The cameras a report over `days` covers: every camera recorded now, and any
    /// other with footage or ledger rows in the range (removed or decommissioned ones).
    pub async fn cameras_in(&self, zone: &CentreTimeZone, days: &[CalendarDay]) -> Result<Vec<String>> {
        let (Some(first), Some(last)) = (days.first(), days.last()) else { return Ok(Vec::new()) };
        let mut out: Vec<String> = self.fleet.iter().flat_map(|f| f.hubs()).map(|h| h.id().to_string()).collect();
        let mut others = BTreeSet::new();
        for c in self.db.cameras_with_footage().await? {
            if !out.contains(&c) && self.db.has_footage_in(&c, first.start_us, last.end_us).await? {
                others.insert(c);
            }
        }
        for c in self.db.ledger_cameras(zone.name(), &first.key(), &last.key()).await? {
            if !out.contains(&c) {
                others.insert(c);
            }
        }
        out.extend(others);
        Ok(out)
    }

    /// Whether the camera is known at all: recorded now, or has footage, events or
    /// ledger rows.
    pub async fn knows(&self, camera: &str) -> Result<bool> {
        let f = self.facts(camera, &Snapshot::default()).await?;
        Ok(f.configured || f.installed_us.is_some())
    }

    /// Loads what the ledger needs to know about a camera.
    pub async fn facts(&self, camera: &str, snap: &Snapshot) -> Result<CameraFacts> {
        let hub = self.fleet.as_ref().and_then(|f| f.hubs().into_iter().find(|h| h.id().as_str() == camera));
        let oldest_footage_us = self.db.oldest_footage(camera).await?;
        let first_footage_us = earliest(oldest_footage_us, self.db.ledger_first_recorded(camera).await?);
        let first_event = self.db.first_camera_event(camera).await?;
        let installed_us = earliest(first_footage_us, first_event);
        let in_progress = hub.as_ref().and_then(|h| {
            let open = h.stats.open_segment_start_us.load(Ordering::Relaxed);
            let last = h.stats.last_frame_us.load(Ordering::Relaxed);
            (open != 0).then_some((open, last))
        });
        Ok(CameraFacts {
            camera_id: camera.to_owned(),
            name: hub.as_ref().map(|h| h.config.name.clone()),
            configured: hub.is_some(),
            installed_us: earliest(installed_us, in_progress.map(|p| p.0)),
            first_footage_us,
            oldest_footage_us,
            decommissioned: self.db.decommissioned_at(camera).await?,
            earliest_spooled_us: snap.spooled.get(camera).copied(),
            in_progress,
        })
    }

    /// The camera's account of each of `days` (sorted, consecutive) up to `now`; days
    /// that have not begun are left out. Closed days come from the ledger, or are
    /// computed and stored there.
    pub async fn camera_days(
        &self,
        zone: &CentreTimeZone,
        facts: &CameraFacts,
        days: &[CalendarDay],
        now: WallUs,
        downtimes: &[Downtime],
    ) -> Result<Vec<DayReport>> {
        let (Some(first), Some(last)) = (days.first(), days.last()) else { return Ok(Vec::new()) };
        let mut stored: HashMap<String, LedgerRow> = self
            .db
            .ledger_days(&facts.camera_id, zone.name(), &first.key(), &last.key())
            .await?
            .into_iter()
            .map(|r| (r.day.clone(), r))
            .collect();
        let mut out = Vec::with_capacity(days.len());
        for day in days.iter().filter(|d| d.start_us < now) {
            let row = stored.remove(&day.key());
            out.push(self.day(zone, facts, *day, row, now, downtimes).await?);
        }
        Ok(out)
    }

    async fn day(
        &self,
        zone: &CentreTimeZone,
        facts: &CameraFacts,
        day: CalendarDay,
        row: Option<LedgerRow>,
        now: WallUs,
        downtimes: &[Downtime],
    ) -> Result<DayReport> {
        let old = row.and_then(|r| match serde_json::from_str::<Vec<CoverageGap>>(&r.gaps) {
            Ok(gaps) => Some((r, gaps)),
            Err(e) => {
                warn!(camera = r.camera_id, day = r.day, "ledger row unreadable ({e}); recomputing it");
                None
            }
        });
        if let Some((r, gaps)) = &old {
            if !r.stale {
                let account = DayAccount::from_gaps(r.start_us, r.end_us, gaps.clone());
                let footage = self.footage(facts, &day, &account, now).await?;
                return Ok(DayReport { day, account, segments: r.segments, closed: true, from_ledger: true, footage });
            }
        }
        let (mut account, segments) = self.compute(facts, day, now, downtimes).await?;
        if let Some((_, gaps)) = &old {
            account = DayAccount::from_gaps(account.start_us, account.end_us, intersect(gaps, &account.gaps));
        }
        let closed = self.closable(facts, &day, now);
        if closed {
            self.db
                .ledger_put(&LedgerRow {
                    camera_id: facts.camera_id.clone(),
                    time_zone: zone.name().to_owned(),
                    day: day.key(),
                    start_us: account.start_us,
                    end_us: account.end_us,
                    recorded_us: account.recorded_us,
                    gap_us: account.gap_us,
                    excused_us: account.excused_us,
                    first_recorded_us: account.first_recorded_us,
                    last_recorded_us: account.last_recorded_us,
                    segments,
                    gaps: serde_json::to_string(&account.gaps).expect("gaps serialise"),
                    stale: false,
                    computed_at_us: now,
                })
                .await?;
        }
        let footage = self.footage(facts, &day, &account, now).await?;
        Ok(DayReport { day, account, segments, closed, from_ledger: false, footage })
    }

    /// A day is closed once it ended (and the segment in progress at its end was
    /// indexed), none of its footage waits in the spool, and the camera existed.
    fn closable(&self, facts: &CameraFacts, day: &CalendarDay, now: WallUs) -> bool {
        day.end_us + self.close_after_us <= now
            && facts.earliest_spooled_us.is_none_or(|s| s >= day.end_us)
            && facts.in_progress.is_none_or(|(open, _)| open >= day.end_us)
            && facts.installed_us.is_some_and(|i| i < day.end_us)
    }

    /// Computes a day from the index: (account, segment rows).
    async fn compute(
        &self,
        facts: &CameraFacts,
        day: CalendarDay,
        now: WallUs,
        downtimes: &[Downtime],
    ) -> Result<(DayAccount, i64)> {
        let until = day.end_us.min(now);
        let decommissioned = facts.decommissioned.as_ref().map(|(at, why)| (*at, why.as_str()));
        if facts.installed_us.is_none_or(|i| i >= until) {
            let f = DayFacts {
                start_us: day.start_us,
                end_us: until,
                recorded: &[],
                footage_before_us: None,
                events: &[],
                downtimes: &[],
                installed_us: facts.installed_us,
                decommissioned,
            };
            return Ok((account_day(&f), 0));
        }
        let cam = facts.camera_id.as_str();
        let mut spans = self.db.coverage_spans(cam, day.start_us, until).await?;
        let segments = spans.len() as i64;
        if let Some((open, reach)) = self.in_progress(facts, now) {
            if open < until {
                spans.push((open, reach.min(until)));
                spans.sort_unstable();
            }
        }
        let footage_before_us = self.db.footage_end_before(cam, day.start_us).await?;
        let since =
            footage_before_us.unwrap_or(day.start_us).min(day.start_us).max(facts.installed_us.unwrap_or(WallUs::MIN));
        let events = self.db.camera_events(cam, since - EVENT_LEAD_US, until).await?;
        let f = DayFacts {
            start_us: day.start_us,
            end_us: until,
            recorded: &spans,
            footage_before_us,
            events: &events,
            downtimes,
            installed_us: facts.installed_us,
            decommissioned,
        };
        Ok((account_day(&f), segments))
    }

    /// Whether the day's footage is still indexed. Only days older than the retention
    /// floor can have been swept, so younger days cost nothing here.
    async fn footage(&self, facts: &CameraFacts, day: &CalendarDay, a: &DayAccount, now: WallUs) -> Result<Footage> {
        let (Some(first), Some(last)) = (a.first_recorded_us, a.last_recorded_us) else { return Ok(Footage::None) };
        if day.end_us > now - self.floor_us {
            return Ok(Footage::Kept);
        }
        match facts.oldest_footage_us {
            None => return Ok(Footage::Expired),
            Some(o) if o >= last => return Ok(Footage::Expired),
            Some(o) if o > first + TOLERANCE_US => return Ok(Footage::PartlyExpired),
            _ => {}
        }
        // Old enough to be swept, yet older footage remains (a legal hold): look.
        Ok(match self.db.footage_bounds(&facts.camera_id, day.start_us, day.end_us).await? {
            None => Footage::Expired,
            Some((lo, hi)) if lo > first + TOLERANCE_US || hi < last - TOLERANCE_US => Footage::PartlyExpired,
            Some(_) => Footage::Kept,
        })
    }

    /// The segment being written as a recorded span: footage being written is not
    /// missing, and it reaches now while frames flow.
    fn in_progress(&self, facts: &CameraFacts, now: WallUs) -> Option<(WallUs, WallUs)> {
        let (open, last_frame) = facts.in_progress?;
        Some((open, if now - last_frame <= self.fresh_us { now } else { last_frame.max(open) }))
    }

    /// Since when the camera has recorded without a gap (the end of its latest gap),
    /// looking back at most `max_days`; `None` when it is not recording now.
    ///
    /// The answer is kept per camera with how far the index was checked, so the next
    /// call (the status page asks every few seconds) reads only the segments indexed
    /// since, not the whole day.
    pub async fn recording_since(
        &self,
        zone: &CentreTimeZone,
        facts: &CameraFacts,
        now: WallUs,
        downtimes: &[Downtime],
        max_days: u32,
    ) -> Result<Option<WallUs>> {
        let id = facts.camera_id.as_str();
        let cached = self.since.lock().unwrap().get(id).copied();
        if let Some((since, checked)) = cached {
            let mut spans = self.db.coverage_spans(id, checked, now).await?;
            let indexed_to = spans.iter().map(|s| s.1).max().unwrap_or(checked).clamp(checked, now);
            spans.extend(self.in_progress(facts, now));
            spans.sort_unstable();
            if holes(checked, now, &spans).is_empty() {
                self.since.lock().unwrap().insert(id.to_owned(), (since, indexed_to));
                return Ok(Some(since));
            }
        }
        let since = self.recording_since_uncached(zone, facts, now, downtimes, max_days).await?;
        let mut cache = self.since.lock().unwrap();
        match since {
            // Everything before the segment in progress was just read from the index.
            Some(s) => cache.insert(id.to_owned(), (s, self.in_progress(facts, now).map_or(now, |p| p.0).min(now))),
            None => cache.remove(id),
        };
        Ok(since)
    }

    async fn recording_since_uncached(
        &self,
        zone: &CentreTimeZone,
        facts: &CameraFacts,
        now: WallUs,
        downtimes: &[Downtime],
        max_days: u32,
    ) -> Result<Option<WallUs>> {
        let tz = zone.tz();
        let mut last = CalendarDay::containing(tz, now)?;
        let mut looked = 0;
        while looked < max_days {
            let mut batch = vec![last];
            while batch.len() < 31 && looked + (batch.len() as u32) < max_days {
                let prev = batch[batch.len() - 1].previous(tz)?;
                if facts.installed_us.is_some_and(|i| prev.end_us <= i) {
                    break;
                }
                batch.push(prev);
            }
            looked += batch.len() as u32;
            batch.reverse();
            let reports = self.camera_days(zone, facts, &batch, now, downtimes).await?;
            for r in reports.iter().rev() {
                if let Some(g) = r.account.gaps.last() {
                    return Ok((g.end_us < r.account.end_us || r.account.end_us < now).then_some(g.end_us));
                }
            }
            let earliest = batch[0];
            if facts.installed_us.is_none_or(|i| earliest.start_us <= i) {
                return Ok(facts.installed_us);
            }
            last = earliest.previous(tz)?;
        }
        // Recording without a gap for longer than we looked: since at least then.
        Ok(Some(last.end_us))
    }

    /// One pass of the ledger: closes every day that ended since the last pass (for
    /// each camera recorded now, and cameras no longer configured up to their last
    /// footage), and recomputes stale days. Answers how many days were written.
    pub async fn close_days(&self, zone: &CentreTimeZone, now: WallUs) -> Result<usize> {
        let tz = zone.tz();
        let snap = self.snapshot().await?;
        let downtimes = &snap.downtimes;
        let mut cameras: BTreeSet<String> =
            self.fleet.iter().flat_map(|f| f.hubs()).map(|h| h.id().to_string()).collect();
        cameras.extend(self.db.cameras_with_footage().await?);
        let mut written = 0;
        for cam in &cameras {
            let facts = self.facts(cam, &snap).await?;
            let Some(installed) = facts.installed_us else { continue };
            // Cameras no longer recorded: nothing changes after their last footage.
            let until = if facts.configured {
                now
            } else {
                match self.db.footage_last_start(cam).await? {
                    Some(t) => t + crate::db::coverage::MAX_SEGMENT_US,
                    None => continue,
                }
            };
            let mut day = match self.db.ledger_latest_day(cam, zone.name()).await? {
                Some(d) => CalendarDay::parse(tz, &d)?.next(tz)?,
                None => CalendarDay::containing(tz, installed)?,
            };
            let mut batch = Vec::new();
            while self.closable(&facts, &day, now) && day.start_us < until {
                batch.push(day);
                day = day.next(tz)?;
                if batch.len() == 31 {
                    written += self.camera_days(zone, &facts, &batch, now, downtimes).await?.len();
                    batch.clear();
                }
            }
            written += self.camera_days(zone, &facts, &batch, now, downtimes).await?.len();
        }
        for (cam, d) in self.db.ledger_stale(zone.name(), 1000).await? {
            let facts = self.facts(&cam, &snap).await?;
            let day = CalendarDay::parse(tz, &d)?;
            written += self.camera_days(zone, &facts, &[day], now, downtimes).await?.len();
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn ev(at: i64, kind: &str) -> EventRow {
        EventRow { camera_id: Some("c".into()), at_us: at * S, kind: kind.into(), detail: format!("{kind} at {at}") }
    }

    fn server(at: i64, kind: &str) -> EventRow {
        EventRow { camera_id: None, at_us: at * S, kind: kind.into(), detail: format!("{kind} at {at}") }
    }

    fn spans(v: &[(i64, i64)]) -> Vec<(i64, i64)> {
        v.iter().map(|(a, b)| (a * S, b * S)).collect()
    }

    fn causes(a: &DayAccount) -> Vec<(i64, i64, &'static str)> {
        a.gaps.iter().map(|g| (g.start_us / S, g.end_us / S, g.cause.as_str())).collect()
    }

    fn facts<'a>(
        rec: &'a [(i64, i64)],
        events: &'a [EventRow],
        downtimes: &'a [Downtime],
        installed: Option<i64>,
    ) -> DayFacts<'a> {
        DayFacts {
            start_us: 0,
            end_us: 1000 * S,
            recorded: rec,
            footage_before_us: None,
            events,
            downtimes,
            installed_us: installed.map(|i| i * S),
            decommissioned: None,
        }
    }

    #[test]
    fn a_clean_restart_and_a_crash_are_the_servers_gaps_and_the_rest_is_the_cameras() {
        let rec = spans(&[(0, 100), (142, 300), (331, 500), (600, 1000)]);
        let life = [
            server(0, "server_started"),
            // SIGTERM at 100; the drain took 10 s; started again at 140; camera up at 142.
            server(110, "server_stopped"),
            server(140, "server_started"),
            // kill -9 at ~300: last heartbeat at 297; started again at 330.
            server(297, "server_crashed"),
            server(330, "server_started"),
        ];
        let dt = downtimes(&life);
        assert_eq!(dt.len(), 2);
        let events = [ev(505, "disconnected"), ev(520, "connect_failed")];
        let a = account_day(&facts(&rec, &events, &dt, Some(0)));
        assert_eq!(causes(&a), [(100, 142, "server_down"), (300, 331, "server_crashed"), (500, 600, "camera_offline")]);
        assert_eq!(a.recorded_us + a.gap_us, 1000 * S);
        assert_eq!(a.gap_us, (42 + 31 + 100) * S);
    }

    #[test]
    fn a_crash_soon_after_a_restart_is_not_the_restarts() {
        // Restarted at 140 (recording again at 142), killed at ~150, back at 160.
        let rec = spans(&[(0, 100), (142, 150), (162, 1000)]);
        let life = [
            server(0, "server_started"),
            server(101, "server_stopped"),
            server(140, "server_started"),
            server(146, "server_crashed"),
            server(160, "server_started"),
        ];
        let dt = downtimes(&life);
        let a = account_day(&facts(&rec, &[], &dt, Some(0)));
        assert_eq!(causes(&a), [(100, 142, "server_down"), (150, 162, "server_crashed")]);
    }

    #[test]
    fn a_camera_already_out_keeps_its_cause_until_the_server_stops() {
        // Camera out from 100 (event at 103); server stopped at 400, back at 500; the
        // camera still fails after the start (event at 501) and returns at 800.
        let rec = spans(&[(0, 100), (800, 1000)]);
        let life = [server(0, "server_started"), server(400, "server_stopped"), server(500, "server_started")];
        let events = [ev(103, "disconnected"), ev(501, "connect_failed")];
        let dt = downtimes(&life);
        let a = account_day(&facts(&rec, &events, &dt, Some(0)));
        assert_eq!(causes(&a), [(100, 400, "camera_offline"), (400, 501, "server_down"), (501, 800, "camera_offline")]);
    }

    #[test]
    fn before_installation_and_after_decommission_are_excused() {
        let rec = spans(&[(300, 600)]);
        let mut f = facts(&rec, &[], &[], Some(300));
        f.decommissioned = Some((700 * S, "decommissioned by admin: moved"));
        let a = account_day(&f);
        assert_eq!(causes(&a), [(0, 300, "not_yet_installed"), (600, 700, "unknown"), (700, 1000, "decommissioned")]);
        assert_eq!(a.excused_us, 600 * S);
        assert_eq!(a.expected_us(), 400 * S);
        assert_eq!(a.coverage_percent(), Some(75.0));
        assert_eq!((a.first_recorded_us, a.last_recorded_us), (Some(300 * S), Some(600 * S)));
    }

    #[test]
    fn a_hole_from_the_day_before_is_explained_by_the_event_when_it_began() {
        // The camera went out at -500 (yesterday), logged then, and came back at 200.
        let rec = spans(&[(200, 1000)]);
        let events = [ev(-495, "disconnected")];
        let mut f = facts(&rec, &events, &[], Some(-10_000));
        f.footage_before_us = Some(-500 * S);
        assert_eq!(causes(&account_day(&f)), [(0, 200, "camera_offline")]);
        // Without knowing where it began, nothing explains it.
        f.footage_before_us = None;
        assert_eq!(causes(&account_day(&f)), [(0, 200, "unknown")]);
    }

    #[test]
    fn a_full_spool_outranks_the_reconnects_it_caused() {
        let rec = spans(&[(0, 100), (200, 1000)]);
        let events = [ev(101, "connect_failed"), ev(102, "spool_full")];
        let a = account_day(&facts(&rec, &events, &[], Some(0)));
        assert_eq!(causes(&a), [(100, 200, "storage_failure")]);
        assert_eq!(a.gaps[0].detail, "spool_full at 102");
    }

    #[test]
    fn recomputing_keeps_what_the_ledger_proved_recorded() {
        let g =
            |s: i64, e: i64, c: Cause| CoverageGap { start_us: s * S, end_us: e * S, cause: c, detail: String::new() };
        // The ledger: a gap 100–200. Later the footage 0–500 was swept and a segment
        // 150–160 re-indexed: recomputed alone, 0–150 and 160–500 would be gaps.
        let old = [g(100, 200, Cause::CameraOffline)];
        let new = [g(0, 150, Cause::Unknown), g(160, 500, Cause::Unknown)];
        let merged = intersect(&old, &new);
        assert_eq!(
            merged.iter().map(|g| (g.start_us / S, g.end_us / S, g.cause)).collect::<Vec<_>>(),
            [(100, 150, Cause::CameraOffline), (160, 200, Cause::CameraOffline)]
        );
    }

    #[test]
    fn calendar_days_follow_the_centre_time_zone() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        // 2026-03-01T00:00:00+08:00 = 2026-02-28T16:00:00Z.
        let start = crate::time::parse_rfc3339("2026-02-28T16:00:00Z").unwrap();
        let days = days_overlapping(&tz, start, start + 2 * 86_400 * S).unwrap();
        assert_eq!(days.iter().map(|d| d.key()).collect::<Vec<_>>(), ["2026-03-01", "2026-03-02"]);
        assert_eq!(days[0].start_us, start);
        assert_eq!(days[0].end_us - days[0].start_us, 86_400 * S);
        // A day with a daylight saving change is 23 hours long.
        let ny = TimeZone::get("America/New_York").unwrap();
        let d = CalendarDay::parse(&ny, "2026-03-08").unwrap();
        assert_eq!(d.end_us - d.start_us, 23 * 3600 * S);
    }
}
