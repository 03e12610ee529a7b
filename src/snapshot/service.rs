//! The snapshot task: every `[snapshots] interval_seconds` (default 10) each camera
//! whose hub holds a keyframe newer than the last one decoded gets it decoded, on a
//! blocking thread, one camera after another (never every frame, never two at once),
//! into the JPEG people see and the small luma picture its [`Detector`] checks. What
//! the detector raises or clears goes to the alarm system, a raised alarm with the JPEG.
//!
//! A camera that sends no new keyframe is not checked (its stale picture would look
//! frozen); the watchdog's `no_frames` covers it. Per camera, an operator may confirm the
//! current view as the reference for "camera moved" and override thresholds; both are
//! kept in the database (`camera_tamper`) and survive restarts.
//!
//! Cost is measured where it is spent: the CPU time of the blocking thread that decodes
//! and of the check, per camera (`cradle_snapshot_cpu_seconds_total` in /metrics).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::decode::{Decoded, KeyframeDecoder};
use super::tamper::{Change, Detector, Kind, Luma, ReferenceError, Thresholds};
use crate::alarms::{AlarmKind, Alarms};
use crate::db::{Db, DbError};
use crate::fleet::Fleet;
use crate::hub::{CameraHub, Frame};
use crate::time::{format_rfc3339, now_us, WallUs};

/// A viewer's repeated looks at one camera's snapshots within this window are audited once.
const AUDIT_WINDOW_US: i64 = 10 * 60 * 1_000_000;

/// One decoded keyframe.
#[derive(Debug)]
pub struct Picture {
    /// When the keyframe arrived at the server.
    pub taken_us: WallUs,
    pub jpeg: Bytes,
    pub width: u32,
    pub height: u32,
    /// The camera's picture size.
    pub source_width: u32,
    pub source_height: u32,
    pub luma: Luma,
}

impl Picture {
    fn new(key: &Frame, d: Decoded) -> Picture {
        Picture {
            taken_us: key.arrival_us,
            jpeg: d.jpeg,
            width: d.width,
            height: d.height,
            source_width: u32::from(key.params.width),
            source_height: u32::from(key.params.height),
            luma: d.luma,
        }
    }
}

/// Who confirmed a camera's view, and when.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Reference {
    pub confirmed_by: String,
    pub confirmed_at: String,
}

/// What the console shows of one camera's snapshots and checks.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Frames and bits per second over the last interval.
    pub fps: Option<f64>,
    pub bitrate_bps: Option<f64>,
    pub taken: Option<String>,
    /// The camera's picture size (the JPEG is at most 1280 wide).
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Tamper alarm kinds the detector holds raised (`lens_covered`, …).
    pub active: Vec<&'static str>,
    pub reference: Option<Reference>,
    pub thresholds: Thresholds,
    /// Whether the thresholds are this camera's own (set through the API).
    pub overridden: bool,
    pub snapshots: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// Per-camera cost counters for /metrics.
#[derive(Clone, Debug, Default)]
pub struct Cost {
    pub snapshots: u64,
    pub cpu_ns: u64,
    pub failures: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("camera {0:?} has no picture yet; try again when it is recording")]
    NoPicture(String),
    #[error("{0}")]
    Reference(#[from] ReferenceError),
    #[error("{0}")]
    Thresholds(String),
    #[error("{0}")]
    Db(#[from] DbError),
}

struct Cam {
    latest: Option<Arc<Picture>>,
    detector: Detector,
    thresholds: Thresholds,
    overridden: bool,
    reference: Option<Reference>,
    /// Read `camera_tamper` for this camera yet?
    loaded: bool,
    /// A pass or a request is decoding this camera's keyframe right now.
    decoding: bool,
    /// (time, frames, bytes) at the previous pass, for the rates.
    counted: Option<(WallUs, u64, u64)>,
    fps: Option<f64>,
    bps: Option<f64>,
    /// Pictures checked by this detector; after enough, alarms a previous run (or
    /// detector) left raised that this one does not see are cleared.
    checked: u32,
    settled: bool,
    /// Decommissioned: not checked any more.
    retired: bool,
    cost: Cost,
    last_error: Option<String>,
}

impl Cam {
    /// Checks a new picture: the alarms to raise (true) and clear (false).
    fn check(&mut self, luma: &Luma) -> Vec<(Kind, bool, String)> {
        self.retired = false;
        let started = thread_cpu_ns();
        let changes = self.detector.check(luma, true);
        self.cost.cpu_ns += thread_cpu_ns().saturating_sub(started);
        self.checked += 1;
        let mut changes: Vec<(Kind, bool, String)> = changes
            .into_iter()
            .map(|c| match c {
                Change::Raised { kind, detail } => (kind, true, detail),
                Change::Cleared { kind, detail } => (kind, false, detail),
            })
            .collect();
        // Alarms a previous run or detector left raised, which this one does not see
        // after enough pictures to have raised them itself, are over.
        let enough = self.thresholds.consecutive.max(self.thresholds.frozen_pictures) + self.thresholds.clear_after;
        if !self.settled && self.checked >= enough {
            self.settled = true;
            for k in TAMPER_KINDS {
                if !self.detector.active().contains(&k) && !changes.iter().any(|c| c.0 == k) {
                    changes.push((k, false, "the picture looks right again".into()));
                }
            }
        }
        changes
    }

    /// A decommissioned camera: no more checks, and its tamper alarms cleared (once).
    fn retire(&mut self) -> Vec<(Kind, bool, String)> {
        if std::mem::replace(&mut self.retired, true) {
            return Vec::new();
        }
        let why = "the camera was decommissioned; it is no longer tamper-checked";
        TAMPER_KINDS.iter().map(|k| (*k, false, why.to_owned())).collect()
    }

    fn new(thresholds: Thresholds) -> Cam {
        Cam {
            latest: None,
            detector: Detector::new(thresholds.clone()),
            thresholds,
            overridden: false,
            reference: None,
            loaded: false,
            decoding: false,
            counted: None,
            fps: None,
            bps: None,
            checked: 0,
            settled: false,
            retired: false,
            cost: Cost::default(),
            last_error: None,
        }
    }
}

pub fn alarm_kind(k: Kind) -> AlarmKind {
    match k {
        Kind::Covered => AlarmKind::LensCovered,
        Kind::Frozen => AlarmKind::PictureFrozen,
        Kind::Blurred => AlarmKind::PictureBlurred,
        Kind::Moved => AlarmKind::CameraMoved,
    }
}

const TAMPER_KINDS: [Kind; 4] = [Kind::Covered, Kind::Frozen, Kind::Blurred, Kind::Moved];

/// The snapshots of every camera, their tamper detectors, and the task that feeds them.
pub struct Snapshots {
    db: Db,
    alarms: Alarms,
    defaults: Thresholds,
    interval: Duration,
    cams: Mutex<HashMap<String, Cam>>,
    audited: Mutex<HashMap<(String, String), WallUs>>,
    /// Decoders between uses, shared by all cameras (see [`SPARE_DECODERS`]).
    decoders: Mutex<Vec<KeyframeDecoder>>,
}

/// Decoders kept between snapshots, for all cameras together. An open 1080p H.264
/// decoder holds ~7.5 MB of frame buffers: one per camera made a 50-camera server's
/// memory 475 MB instead of 100. A keyframe needs no earlier state, so any decoder
/// serves any camera (one opened for other stream parameters is reopened, ~3 ms); a
/// pass decodes one camera at a time, and a console request may decode beside it.
const SPARE_DECODERS: usize = 2;

impl Snapshots {
    pub fn new(db: Db, alarms: Alarms, cfg: &crate::config::SnapshotsConfig) -> Arc<Snapshots> {
        Arc::new(Snapshots {
            db,
            alarms,
            defaults: cfg.tamper.clone(),
            interval: cfg.interval,
            cams: Mutex::default(),
            audited: Mutex::default(),
            decoders: Mutex::default(),
        })
    }

    fn spare_decoder(&self) -> KeyframeDecoder {
        self.decoders.lock().unwrap().pop().unwrap_or_default()
    }

    fn keep_decoder(&self, decoder: KeyframeDecoder) {
        let mut spare = self.decoders.lock().unwrap();
        if spare.len() < SPARE_DECODERS {
            spare.push(decoder);
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Runs a pass over every camera now and then every interval until `stop`.
    pub async fn run(self: Arc<Self>, fleet: Arc<Fleet>, stop: CancellationToken) {
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    _ = crate::pulse::after(self.interval) => {}
                    _ = stop.cancelled() => return,
                }
            }
            // A decommissioned camera is still recorded and shown, but not tamper-checked.
            let retired: Vec<String> = match crate::watchdog::site::decommissioned(&self.db).await {
                Ok(list) => list.into_iter().map(|d| d.camera).collect(),
                Err(e) => {
                    warn!("snapshot: reading decommissioned cameras: {e}");
                    Vec::new()
                }
            };
            for hub in fleet.hubs() {
                if stop.is_cancelled() {
                    return;
                }
                let checked = !retired.iter().any(|c| c == hub.id().as_str());
                if let Err(e) = self.pass(&hub, checked).await {
                    warn!(camera = %hub.id(), "snapshot: {e}");
                }
            }
        }
    }

    /// One camera: its rates, and if a new keyframe arrived, decode it and, when
    /// `checked`, check it (else its tamper alarms are cleared, once).
    pub async fn pass(&self, hub: &CameraHub, checked: bool) -> Result<(), DbError> {
        let camera = hub.id().as_str().to_owned();
        self.load(&camera).await?;
        let now = now_us();
        let key = hub.latest_keyframe();
        {
            let mut cams = self.cams.lock().unwrap();
            let cam = cams.get_mut(&camera).expect("loaded above");
            let frames = hub.stats.frames.load(std::sync::atomic::Ordering::Relaxed);
            let bytes = hub.stats.bytes.load(std::sync::atomic::Ordering::Relaxed);
            if let Some((t, f, b)) = cam.counted {
                let secs = (now - t) as f64 / 1e6;
                if secs > 0.2 && frames >= f && bytes >= b {
                    // Smoothed over a few intervals: one interval holds a whole number
                    // of frames and often one keyframe more or less.
                    let smooth = |old: Option<f64>, new: f64| Some(old.map_or(new, |o| 0.5 * o + 0.5 * new));
                    cam.fps = smooth(cam.fps, (frames - f) as f64 / secs);
                    cam.bps = smooth(cam.bps, (bytes - b) as f64 * 8.0 / secs);
                }
            }
            cam.counted = Some((now, frames, bytes));
            let Some(key) = &key else { return Ok(()) };
            if cam.latest.as_ref().is_some_and(|p| p.taken_us >= key.arrival_us) {
                return Ok(());
            }
            // Nothing to do while another pass (or a request) decodes for this camera.
            if cam.decoding {
                return Ok(());
            }
            cam.decoding = true;
        }
        let key = key.expect("checked above");
        let (decoder, decoded, cpu_ns) = decode_blocking(self.spare_decoder(), key.clone()).await;
        self.keep_decoder(decoder);
        let (changes, jpeg) = {
            let mut cams = self.cams.lock().unwrap();
            let cam = cams.get_mut(&camera).expect("cameras are never forgotten");
            cam.decoding = false;
            cam.cost.cpu_ns += cpu_ns;
            let decoded = match decoded {
                Ok(d) => d,
                Err(e) => {
                    cam.cost.failures += 1;
                    let msg = e.to_string();
                    if cam.last_error.as_deref() != Some(msg.as_str()) {
                        warn!(camera, "snapshot: cannot decode the latest keyframe: {msg}");
                    }
                    cam.last_error = Some(msg);
                    return Ok(());
                }
            };
            cam.last_error = None;
            cam.cost.snapshots += 1;
            let picture = Arc::new(Picture::new(&key, decoded));
            let jpeg = (picture.jpeg.clone(), picture.taken_us);
            cam.latest = Some(picture.clone());
            let changes = if checked { cam.check(&picture.luma) } else { cam.retire() };
            (changes, jpeg)
        };
        for (kind, raised, detail) in changes {
            let ak = alarm_kind(kind);
            if raised {
                self.alarms.raise_with_snapshot(&camera, ak, &detail, &jpeg.0, jpeg.1).await?;
            } else {
                self.alarms.clear(Some(&camera), ak, &detail).await?;
            }
        }
        Ok(())
    }

    /// Reads the camera's stored thresholds and confirmed view, once.
    async fn load(&self, camera: &str) -> Result<(), DbError> {
        if self.cams.lock().unwrap().get(camera).is_some_and(|c| c.loaded) {
            return Ok(());
        }
        let row = sqlx::query(
            "SELECT thresholds, reference, reference_width, reference_height, confirmed_by, confirmed_at_us
             FROM camera_tamper WHERE camera_id = $1",
        )
        .bind(camera)
        .fetch_optional(self.db.pool())
        .await?;
        let mut thresholds = self.defaults.clone();
        let mut overridden = false;
        let mut reference = None;
        if let Some(r) = &row {
            if let Some(t) = r.try_get::<Option<String>, _>("thresholds")? {
                match serde_json::from_str::<Thresholds>(&t).map_err(|e| e.to_string()).and_then(|t| t.validate().map(|_| t)) {
                    Ok(t) => (thresholds, overridden) = (t, true),
                    Err(e) => warn!(camera, "stored tamper thresholds are unusable ({e}); using [snapshots.tamper]"),
                }
            }
            let data: Option<Vec<u8>> = r.try_get("reference")?;
            let (w, h): (Option<i64>, Option<i64>) = (r.try_get("reference_width")?, r.try_get("reference_height")?);
            if let (Some(data), Some(w), Some(h)) = (data, w, h) {
                let by: Option<String> = r.try_get("confirmed_by")?;
                let at: Option<i64> = r.try_get("confirmed_at_us")?;
                reference = Some((Luma { width: w as u32, height: h as u32, data }, by.unwrap_or_default(), at.unwrap_or(0)));
            }
        }
        let mut cams = self.cams.lock().unwrap();
        let cam = cams.entry(camera.to_owned()).or_insert_with(|| Cam::new(thresholds.clone()));
        if cam.loaded {
            return Ok(());
        }
        cam.loaded = true;
        cam.overridden = overridden;
        cam.thresholds = thresholds.clone();
        cam.detector = Detector::new(thresholds);
        if let Some((luma, by, at)) = reference {
            match cam.detector.set_reference(&luma) {
                Ok(()) => cam.reference = Some(Reference { confirmed_by: by, confirmed_at: format_rfc3339(at) }),
                Err(e) => warn!(camera, "the confirmed view kept for this camera is unusable ({e}); taking one automatically"),
            }
        }
        Ok(())
    }

    /// The camera's newest picture. Before the task's first pass has one, the hub's
    /// latest keyframe is decoded now (once; later requests share it).
    pub async fn latest(&self, hub: &CameraHub) -> Result<Option<Arc<Picture>>, DbError> {
        let camera = hub.id().as_str().to_owned();
        self.load(&camera).await?;
        {
            let mut cams = self.cams.lock().unwrap();
            let cam = cams.get_mut(&camera).expect("loaded above");
            if let Some(p) = &cam.latest {
                return Ok(Some(p.clone()));
            }
            if cam.decoding {
                return Ok(None); // a pass is decoding right now
            }
            cam.decoding = true;
        }
        let Some(key) = hub.latest_keyframe() else {
            self.cams.lock().unwrap().get_mut(&camera).expect("loaded").decoding = false;
            return Ok(None);
        };
        let (decoder, decoded, cpu_ns) = decode_blocking(self.spare_decoder(), key.clone()).await;
        self.keep_decoder(decoder);
        let mut cams = self.cams.lock().unwrap();
        let cam = cams.get_mut(&camera).expect("loaded");
        cam.decoding = false;
        cam.cost.cpu_ns += cpu_ns;
        match decoded {
            Ok(d) => {
                cam.cost.snapshots += 1;
                let p = Arc::new(Picture::new(&key, d));
                // The task checks pictures it decoded itself; this one is only shown.
                if cam.latest.as_ref().is_none_or(|l| l.taken_us < p.taken_us) {
                    cam.latest = Some(p.clone());
                }
                Ok(Some(p))
            }
            Err(e) => {
                cam.cost.failures += 1;
                cam.last_error = Some(e.to_string());
                Ok(None)
            }
        }
    }

    /// Whether `viewer` looking at `camera`'s snapshot now should be audited: the first
    /// look, and then once per [`AUDIT_WINDOW_US`] (a console refreshes every few seconds).
    pub fn audit_due(&self, viewer: &str, camera: &str, now: WallUs) -> bool {
        let mut a = self.audited.lock().unwrap();
        let key = (viewer.to_owned(), camera.to_owned());
        match a.get(&key) {
            Some(t) if now - t < AUDIT_WINDOW_US => false,
            _ => {
                a.insert(key, now);
                true
            }
        }
    }

    /// The operator confirms that the camera's newest picture shows the right view: it
    /// becomes the reference for "camera moved" and the normal sharpness, kept across
    /// restarts.
    pub async fn confirm_reference(&self, camera: &str, by: &str) -> Result<Reference, SnapshotError> {
        self.load(camera).await?;
        let now = now_us();
        let stored = {
            let mut cams = self.cams.lock().unwrap();
            let cam = cams.get_mut(camera).expect("loaded above");
            let Some(p) = cam.latest.clone() else { return Err(SnapshotError::NoPicture(camera.to_owned())) };
            cam.detector.set_reference(&p.luma)?;
            cam.reference = Some(Reference { confirmed_by: by.to_owned(), confirmed_at: format_rfc3339(now) });
            cam.detector.reference().expect("just set").clone()
        };
        self.upsert(camera, now).await?;
        sqlx::query(
            "UPDATE camera_tamper SET reference = $1, reference_width = $2, reference_height = $3, confirmed_by = $4,
             confirmed_at_us = $5, updated_at_us = $5 WHERE camera_id = $6",
        )
        .bind(stored.data)
        .bind(i64::from(stored.width))
        .bind(i64::from(stored.height))
        .bind(by)
        .bind(now)
        .bind(camera)
        .execute(self.db.pool())
        .await
        .map_err(DbError::from)?;
        info!(camera, by, "tamper: view confirmed as the reference");
        Ok(Reference { confirmed_by: by.to_owned(), confirmed_at: format_rfc3339(now) })
    }

    /// Sets the camera's own thresholds: `changes` (a JSON object of threshold names)
    /// over its current ones; `None` goes back to `[snapshots.tamper]`. The detector
    /// starts afresh with them (keeping a confirmed view). Returns the thresholds now in force.
    pub async fn set_thresholds(
        &self,
        camera: &str,
        changes: Option<serde_json::Map<String, serde_json::Value>>,
        by: &str,
    ) -> Result<Thresholds, SnapshotError> {
        self.load(camera).await?;
        let current = self.cams.lock().unwrap().get(camera).expect("loaded above").thresholds.clone();
        let new = match &changes {
            None => self.defaults.clone(),
            Some(c) => {
                let mut v = serde_json::to_value(&current).expect("thresholds serialise");
                for (k, x) in c {
                    v[k] = x.clone();
                }
                let t: Thresholds = serde_json::from_value(v).map_err(|e| SnapshotError::Thresholds(e.to_string()))?;
                t.validate().map_err(SnapshotError::Thresholds)?;
                t
            }
        };
        let now = now_us();
        self.upsert(camera, now).await?;
        sqlx::query("UPDATE camera_tamper SET thresholds = $1, thresholds_by = $2, updated_at_us = $3 WHERE camera_id = $4")
            .bind(changes.as_ref().map(|_| serde_json::to_string(&new).expect("thresholds serialise")))
            .bind(by)
            .bind(now)
            .bind(camera)
            .execute(self.db.pool())
            .await
            .map_err(DbError::from)?;
        let mut cams = self.cams.lock().unwrap();
        let cam = cams.get_mut(camera).expect("loaded above");
        let reference = cam.reference.as_ref().and(cam.detector.reference().cloned());
        cam.detector = Detector::new(new.clone());
        if let Some(r) = reference {
            let _ = cam.detector.set_reference(&r);
        }
        cam.thresholds = new.clone();
        cam.overridden = changes.is_some();
        cam.checked = 0;
        cam.settled = false;
        info!(camera, by, "tamper thresholds changed");
        Ok(new)
    }

    async fn upsert(&self, camera: &str, now: WallUs) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO camera_tamper (camera_id, updated_at_us) VALUES ($1, $2) ON CONFLICT (camera_id) DO NOTHING",
        )
        .bind(camera)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// What the console shows for `camera` (defaults before its first pass).
    pub fn status(&self, camera: &str) -> Status {
        let cams = self.cams.lock().unwrap();
        let Some(c) = cams.get(camera) else {
            return Status {
                fps: None,
                bitrate_bps: None,
                taken: None,
                width: None,
                height: None,
                active: vec![],
                reference: None,
                thresholds: self.defaults.clone(),
                overridden: false,
                snapshots: 0,
                failures: 0,
                last_error: None,
            };
        };
        Status {
            fps: c.fps,
            bitrate_bps: c.bps,
            taken: c.latest.as_ref().map(|p| format_rfc3339(p.taken_us)),
            width: c.latest.as_ref().map(|p| p.source_width),
            height: c.latest.as_ref().map(|p| p.source_height),
            active: c.detector.active().iter().map(|k| alarm_kind(*k).as_str()).collect(),
            reference: c.reference.clone(),
            thresholds: c.thresholds.clone(),
            overridden: c.overridden,
            snapshots: c.cost.snapshots,
            failures: c.cost.failures,
            last_error: c.last_error.clone(),
        }
    }

    /// Cost counters per camera, for /metrics.
    pub fn costs(&self) -> Vec<(String, Cost)> {
        let cams = self.cams.lock().unwrap();
        let mut v: Vec<_> = cams.iter().map(|(k, c)| (k.clone(), c.cost.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Decodes `key` on a blocking thread; returns the decoder, the result and the thread's
/// CPU time for it.
async fn decode_blocking(
    mut decoder: KeyframeDecoder,
    key: Arc<Frame>,
) -> (KeyframeDecoder, Result<Decoded, super::decode::DecodeError>, u64) {
    let job = tokio::task::spawn_blocking(move || {
        let started = thread_cpu_ns();
        let r = decoder.decode(&key);
        (decoder, r, thread_cpu_ns().saturating_sub(started))
    });
    match job.await {
        Ok(r) => r,
        // A panic inside FFmpeg's wrapper: a fresh decoder next time.
        Err(e) => (KeyframeDecoder::new(), Err(super::decode::DecodeError::Corrupt(format!("decoder panicked: {e}"))), 0),
    }
}

/// CPU time of the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-parameter; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CameraFields, EnvRefs, SnapshotsConfig};
    use crate::snapshot::decode::tests::{first_keyframe, H264_1080P};

    /// The task end to end on a real (SQLite) store and a real hub, with one keyframe of
    /// camsim's clip arriving again and again (a hung encoder): each arrival is decoded
    /// and checked once, `picture_frozen` is raised with the picture attached, an alarm
    /// a previous run left is cleared once this detector has seen enough, and a
    /// decommissioned camera's alarms are cleared and it is checked no more.
    #[tokio::test]
    async fn each_new_keyframe_is_checked_once_and_a_repeated_picture_raises_frozen() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/s.db", dir.path().display())).await.unwrap();
        let alarms = Alarms::new(db.clone(), Default::default(), "test".into());
        let shots = Snapshots::new(db.clone(), alarms.clone(), &SnapshotsConfig::default());
        let fields = CameraFields {
            id: "cam".into(),
            name: None,
            url: "rtsp://127.0.0.1:9/x".into(),
            username: None,
            password: None,
            sub_url: None,
            transport: None,
            retention_days: None,
        };
        let hub = CameraHub::new(fields.validate(EnvRefs::Literal).unwrap());
        // A previous run left this raised; nothing will see the camera moved now.
        let left = alarms.raise(Some("cam"), AlarmKind::CameraMoved, "from the previous run").await.unwrap().unwrap();

        shots.pass(&hub, true).await.unwrap();
        assert_eq!(shots.status("cam").snapshots, 0, "no keyframe yet: nothing decoded");
        let key = first_keyframe(&H264_1080P);
        let arriving = |us: i64| {
            Arc::new(Frame { arrival_us: us, ts_90k: 0, is_key: true, data: key.data.clone(), params: key.params.clone() })
        };
        let mut frozen = None;
        for i in 1..=6 {
            hub.publish(&arriving(now_us() + i));
            shots.pass(&hub, true).await.unwrap();
            shots.pass(&hub, true).await.unwrap(); // the same keyframe again: not decoded, not checked
            assert_eq!(shots.status("cam").snapshots, i as u64);
            if frozen.is_none() {
                frozen = alarms.live(Some("cam"), AlarmKind::PictureFrozen).await.unwrap();
                if let Some(a) = &frozen {
                    // The first picture has nothing to compare with; then 3 identical ones.
                    assert_eq!(i, 4, "raised at the 4th picture: {a:?}");
                }
            }
        }
        let frozen = frozen.expect("picture_frozen raised");
        assert_eq!(frozen.snapshot.as_deref(), Some(format!("/api/v1/alarms/{}/snapshot.jpg", frozen.id).as_str()));
        let (jpeg, _) = alarms.snapshot(frozen.id).await.unwrap().expect("the picture is kept");
        assert_eq!(&jpeg[..2], &[0xff, 0xd8]);
        assert_eq!(shots.status("cam").active, vec!["picture_frozen"]);
        let left = alarms.get(left.id).await.unwrap().unwrap();
        assert!(left.cleared_at.is_some(), "the previous run's alarm is over: {left:?}");
        assert!(shots.costs()[0].1.cpu_ns > 0, "the cost is measured");

        // Decommissioned: its tamper alarms end, and it is not checked any more.
        hub.publish(&arriving(now_us() + 100));
        shots.pass(&hub, false).await.unwrap();
        assert!(alarms.live(Some("cam"), AlarmKind::PictureFrozen).await.unwrap().is_none());
        for i in 0..4 {
            hub.publish(&arriving(now_us() + 200 + i));
            shots.pass(&hub, false).await.unwrap();
        }
        assert!(alarms.live(Some("cam"), AlarmKind::PictureFrozen).await.unwrap().is_none(), "not checked");
        assert_eq!(shots.status("cam").snapshots, 11, "still decoded for the console");
    }
}
