//! The watchdog: watches every camera and the storage path, raises and clears alarms,
//! and keeps each camera's health (its state) on its hub.
//!
//! Once a second, on the [`crate::pulse`], it reads each hub's counters (relaxed atomics the ingest and recorder
//! write anyway; no per-frame work here) and runs the camera's state machine
//! ([`camera`]): `no_frames`, `reconnect_storm`, `frame_rate_collapse` /
//! `bitrate_collapse` ([`rates`]), `clock_drift` ([`clock`]) and `spool_full`. It also
//! checks the uploads (`upload_failing`), every few seconds the spool backlog
//! (`spool_backlog`), decommissioned cameras whenever a camera changed (and once a
//! minute), and every `storage_check` the storage
//! forecast and each camera's retention horizon ([`site`]). `footage_missing` belongs
//! to the reconciler.
//!
//! Each check answers a [`Verdict`]: the cause is present (raise, with numbers in the
//! detail), gone (clear) or cannot be told yet (leave the alarm as it is). An alarm is
//! raised or cleared only when the verdict changes, so the database sees transitions,
//! not a write per second. After a restart the first verdicts settle alarms the
//! previous run left live.
//!
//! A decommission's cause never goes away, so its alarm is cleared once an operator
//! has acknowledged it, which closes it. A decommissioned camera is not watched any
//! more: its pipeline alarms are cleared and its health says `decommissioned`.
//! Cameras come and go at run time (the fleet); a camera that leaves the fleet has its
//! pipeline alarms cleared too.

mod camera;
mod clock;
mod rates;
pub mod site;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::alarms::{AlarmKind, AlarmQuery, Alarms, TAMPER_KINDS};
use crate::config::Config;
use crate::db::Db;
use crate::fleet::Fleet;
use crate::hub::{CameraHub, Health};
use crate::record::uploader::SpoolStats;
use crate::time::{now_us, WallUs};
use camera::{CameraWatch, Sample, CAMERA_KINDS};
use site::{Decommissioned, FootageBytes, Store};

/// What a check concluded this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The cause is present; the text says what, with numbers.
    Bad(String),
    /// The cause is gone; the text says what is normal now.
    Good(String),
    /// Not enough evidence either way: leave the alarm as it is.
    Unknown,
}

impl Verdict {
    fn map(self, f: impl FnOnce(String) -> String) -> Verdict {
        match self {
            Verdict::Bad(d) => Verdict::Bad(f(d)),
            Verdict::Good(d) => Verdict::Good(f(d)),
            Verdict::Unknown => Verdict::Unknown,
        }
    }
}

/// How often the spool backlog is read from the index while the spool holds anything
/// (a drained spool needs no read). A backlog threshold shorter than twice this shortens
/// it (the alarm would otherwise come late by more than its threshold).
const INDEX_CHECK: Duration = Duration::from_secs(10);
/// How often decommissions are read from the database when nobody said a camera
/// changed: this process and the CLI do ([`crate::cli_changes`]), and the check runs at
/// once then. Each read is a database round trip, and an SQLite statement wakes several
/// threads; every ten seconds that was a good part of an idle server's CPU.
const DECOMMISSION_CHECK: Duration = Duration::from_secs(60);
/// At most one warning this often about the watchdog's own failures (a database down).
const WARN_EVERY: Duration = Duration::from_secs(30);
/// A camera missing from the fleet this long has left it (a restart with new settings
/// takes it out for a moment, and must not clear and raise its alarms).
const GONE_AFTER_US: i64 = 10_000_000;

pub struct Watchdog {
    pub fleet: Arc<Fleet>,
    pub alarms: Alarms,
    pub db: Db,
    pub spool: Arc<SpoolStats>,
    pub config: Arc<Config>,
    /// How storage is named in details (`directory /…`, `s3://…`).
    pub storage_description: String,
}

/// A camera being watched.
struct Watched {
    hub: Arc<CameraHub>,
    watch: CameraWatch,
    /// Since when the fleet has not listed it.
    missing_since: Option<WallUs>,
}

/// What the watchdog believes about each alarm: live (true) or cleared (false). Absent
/// means not known yet (the first verdict acts, settling what a previous run left).
#[derive(Default)]
struct Known {
    live: HashMap<(Option<String>, AlarmKind), bool>,
    last_warn: Option<Instant>,
}

impl Known {
    /// Live (`Some(true)`), cleared, or not known yet (`None`).
    fn state(&self, camera: Option<&str>, kind: AlarmKind) -> Option<bool> {
        self.live.get(&(camera.map(str::to_owned), kind)).copied()
    }

    fn is_live(&self, camera: Option<&str>, kind: AlarmKind) -> bool {
        self.state(camera, kind).unwrap_or(false)
    }

    fn warn(&mut self, what: &str, e: impl std::fmt::Display) {
        if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            warn!("watchdog: {what}: {e}");
            self.last_warn = Some(Instant::now());
        }
    }
}

impl Watchdog {
    /// Runs until `stop`: the per-second checks and, beside them, the storage checks
    /// (which read more of the index and must not delay the others).
    pub async fn run(self, stop: CancellationToken) {
        let me = Arc::new(self);
        tokio::join!(me.clone().run_fast(stop.clone()), me.run_storage(stop));
    }

    async fn run_fast(self: Arc<Self>, stop: CancellationToken) {
        let mut known = Known::default();
        let mut cams: HashMap<String, Watched> = HashMap::new();
        let mut decommissioned: HashMap<String, Decommissioned> = HashMap::new();
        let mut last_index_check: Option<Instant> = None;
        let mut last_decommission_check: Option<Instant> = None;
        let started = Instant::now();
        let mut ghosts_cleared = false;
        let mut cameras_changed = self.db.watch_cameras();
        let index_check = INDEX_CHECK.min(self.config.watchdog.spool_backlog_after / 2).max(Duration::from_secs(1));
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    _ = crate::pulse::next() => {}
                    _ = stop.cancelled() => return,
                }
            }
            let now = now_us();
            if !ghosts_cleared && started.elapsed() >= Duration::from_micros(GONE_AFTER_US as u64) {
                ghosts_cleared = self.clear_ghosts(&mut known).await;
            }
            let changed = cameras_changed.has_changed().unwrap_or(false);
            if changed || last_decommission_check.is_none_or(|t| t.elapsed() >= DECOMMISSION_CHECK) {
                cameras_changed.mark_unchanged();
                last_decommission_check = Some(Instant::now());
                self.check_decommissions(&mut known, &mut decommissioned).await;
            }
            if last_index_check.is_none_or(|t| t.elapsed() >= index_check) {
                last_index_check = Some(Instant::now());
                let cfg = &self.config.watchdog;
                match site::spool_backlog(&self.db, &self.spool, now, cfg.spool_backlog_after).await {
                    Ok(v) => self.apply(&mut known, None, AlarmKind::SpoolBacklog, v).await,
                    Err(e) => known.warn("reading the spool backlog", e),
                }
            }
            let v = site::upload_failing(&self.spool, now, self.config.watchdog.upload_failing_after, &self.storage_description);
            self.apply(&mut known, None, AlarmKind::UploadFailing, v).await;
            self.watch_cameras(now, &mut known, &mut cams, &decommissioned).await;
        }
    }

    async fn watch_cameras(
        &self,
        now: WallUs,
        known: &mut Known,
        cams: &mut HashMap<String, Watched>,
        decommissioned: &HashMap<String, Decommissioned>,
    ) {
        let cfg = &self.config.watchdog;
        let hubs = self.fleet.hubs();
        // Cameras that left the fleet: nothing watches them any more.
        let mut gone = Vec::new();
        for (id, w) in cams.iter_mut() {
            if hubs.iter().any(|h| h.id().as_str() == id) {
                w.missing_since = None;
            } else if now - *w.missing_since.get_or_insert(now) >= GONE_AFTER_US {
                gone.push(id.clone());
            }
        }
        for id in gone {
            cams.remove(&id);
            for kind in CAMERA_KINDS.into_iter().chain(TAMPER_KINDS) {
                let why = format!("camera {id:?} is no longer recorded by this server");
                self.apply(known, Some(&id), kind, Verdict::Good(why)).await;
            }
        }
        for hub in hubs {
            let id = hub.id().as_str().to_owned();
            let fresh = match cams.get(&id) {
                Some(w) => !Arc::ptr_eq(&w.hub, &hub), // restarted with new settings
                None => true,
            };
            if fresh {
                let watch = CameraWatch::new(&hub.config.name, now, cfg);
                cams.insert(id.clone(), Watched { hub: hub.clone(), watch, missing_since: None });
            }
            let watch = &mut cams.get_mut(&id).expect("inserted above").watch;
            let decom = decommissioned.get(&id);
            let verdicts = match decom {
                Some(_) => CAMERA_KINDS
                    .iter()
                    .map(|&k| (k, Verdict::Good(format!("camera {id:?} was decommissioned and is not watched any more"))))
                    .collect(),
                None => {
                    let sample = Sample::take(&hub, now);
                    watch.observe(sample, cfg, |k| known.state(Some(&id), k))
                }
            };
            for (kind, v) in verdicts {
                self.apply(known, Some(&id), kind, v).await;
            }
            let live = |k: AlarmKind| match k {
                AlarmKind::UploadFailing | AlarmKind::SpoolBacklog => known.is_live(None, k),
                _ => known.is_live(Some(&id), k),
            };
            let reason = decom.map(|d| d.detail(self.config.policy.floor_days));
            let (state, detail) = watch.health(cfg, live, reason.as_deref());
            let old = hub.health();
            if old.state != state || old.detail != detail {
                if old.state != state {
                    info!(camera = %id, "health: {} → {state}{}", old.state, if detail.is_empty() { String::new() } else { format!(" ({detail})") });
                }
                let since_us = if old.state == state { old.since_us } else { now };
                hub.set_health(Health { state, since_us, detail });
            }
        }
    }

    /// After a restart: pipeline alarms a previous run left live for cameras this server
    /// no longer records (taken out of the config file) have no one to clear them.
    /// Cradle runs one node, so a camera it does not record is recorded by no one.
    /// Answers whether that was done.
    async fn clear_ghosts(&self, known: &mut Known) -> bool {
        let live = match self.alarms.all_live().await {
            Ok(l) => l,
            Err(e) => {
                known.warn("reading live alarms", e);
                return false;
            }
        };
        let hubs = self.fleet.hubs();
        for a in live {
            let Some(cam) = a.camera_id.as_deref() else { continue };
            let Some(kind) = AlarmKind::parse(&a.kind).filter(|k| CAMERA_KINDS.contains(k) || TAMPER_KINDS.contains(k)) else {
                continue;
            };
            if hubs.iter().any(|h| h.id().as_str() == cam) {
                continue;
            }
            let why = format!("camera {cam:?} is no longer recorded by this server (not in its configuration)");
            self.apply(known, Some(cam), kind, Verdict::Good(why)).await;
        }
        true
    }

    /// Raises a `decommissioned` alarm once per decommission, and clears it once it is
    /// acknowledged (the cause is permanent; the acknowledgement is what closes it).
    async fn check_decommissions(&self, known: &mut Known, seen: &mut HashMap<String, Decommissioned>) {
        let list = match site::decommissioned(&self.db).await {
            Ok(l) => l,
            Err(e) => return known.warn("reading decommissioned cameras", e),
        };
        let kind = AlarmKind::Decommissioned;
        for d in list {
            let cam = d.camera.clone();
            if seen.get(&cam) != Some(&d) {
                // First sight in this run: raised already (an earlier run), or new?
                let q = AlarmQuery { camera: Some(cam.clone()), kind: Some(kind.as_str().into()), limit: Some(1), ..Default::default() };
                let latest = match self.alarms.list(&q).await {
                    Ok(l) => l.into_iter().next(),
                    Err(e) => return known.warn("reading alarms", e),
                };
                match latest {
                    Some(a) if a.raised_at_us >= d.at_us => {
                        known.live.insert((Some(cam.clone()), kind), a.cleared_at.is_none());
                    }
                    _ => {
                        if let Err(e) = self.alarms.raise(Some(&cam), kind, &d.detail(self.config.policy.floor_days)).await {
                            return known.warn("raising a decommissioned alarm", e);
                        }
                        known.live.insert((Some(cam.clone()), kind), true);
                    }
                }
                seen.insert(cam.clone(), d);
            }
            if known.is_live(Some(&cam), kind) {
                match self.alarms.live(Some(&cam), kind).await {
                    Ok(Some(a)) => {
                        if let Some(by) = &a.acknowledged_by {
                            let why = format!(
                                "acknowledged by {by}: a decommission is permanent, so its acknowledgement closes the alarm"
                            );
                            self.apply(known, Some(&cam), kind, Verdict::Good(why)).await;
                        }
                    }
                    Ok(None) => {
                        known.live.insert((Some(cam), kind), false);
                    }
                    Err(e) => known.warn("reading alarms", e),
                }
            }
        }
    }

    async fn run_storage(self: Arc<Self>, stop: CancellationToken) {
        let cfg = &self.config.watchdog;
        let mut known = Known::default();
        let mut footage = FootageBytes::default();
        let store = Store::from_config(&self.config.storage);
        let floor = self.config.policy.floor_days;
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    _ = crate::pulse::after(cfg.storage_check) => {}
                    _ = stop.cancelled() => return,
                }
            }
            let now = now_us();
            let recording: Vec<String> = self.fleet.hubs().iter().map(|h| h.id().as_str().to_owned()).collect();
            let decommissioned: Vec<String> = match site::decommissioned(&self.db).await {
                Ok(l) => l.into_iter().map(|d| d.camera).collect(),
                Err(e) => {
                    known.warn("reading decommissioned cameras", e);
                    continue;
                }
            };
            let forecast_for: Vec<String> = recording.iter().filter(|c| !decommissioned.contains(c)).cloned().collect();
            match site::storage_forecast(&self.db, &store, &forecast_for, floor, now, &mut footage).await {
                Ok(v) => self.apply(&mut known, None, AlarmKind::StorageForecast, v).await,
                Err(e) => known.warn("forecasting storage", e),
            }
            let mut cameras = recording.clone();
            match site::first_recorded_cameras(&self.db).await {
                Ok(more) => cameras.extend(more.into_iter().filter(|c| !recording.contains(c))),
                Err(e) => known.warn("reading camera_first_recorded", e),
            }
            for c in cameras {
                match site::retention_short(&self.db, &c, recording.contains(&c), floor, now).await {
                    Ok(v) => self.apply(&mut known, Some(&c), AlarmKind::RetentionShort, v).await,
                    Err(e) => known.warn("checking the retention horizon", e),
                }
            }
        }
    }

    /// Raises or clears when the verdict differs from what is known.
    async fn apply(&self, known: &mut Known, camera: Option<&str>, kind: AlarmKind, v: Verdict) {
        let key = (camera.map(str::to_owned), kind);
        let was = known.live.get(&key).copied();
        match v {
            Verdict::Bad(d) if was != Some(true) => match self.alarms.raise(camera, kind, &d).await {
                Ok(_) => {
                    known.live.insert(key, true);
                }
                Err(e) => known.warn("raising an alarm", e),
            },
            Verdict::Good(d) if was != Some(false) => match self.alarms.clear(camera, kind, &d).await {
                Ok(_) => {
                    known.live.insert(key, false);
                }
                Err(e) => known.warn("clearing an alarm", e),
            },
            _ => {}
        }
    }
}
