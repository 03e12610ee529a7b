//! Retention: how long footage is kept, and the only code that deletes it.
//!
//! The rules (MISSION.md, "What always armed means"): footage is kept at least the
//! floor (90 days; a policy profile or `[policy] floor_days` may raise it, nothing
//! lowers it); `[retention] days` and a camera's `retention_days` may keep longer; a
//! legal hold keeps its camera's footage over its time range whatever its age.
//!
//! - [`RetentionPolicy`]: the days each camera keeps — the largest of the floor, the
//!   centre's `[retention] days` and the camera's own `retention_days` (config file
//!   first, then cameras added by an admin). A camera no longer configured (removed or
//!   decommissioned) keeps the centre's retention.
//! - [`sweeper`]: deletes expired, unheld segments in batches, crash-safe.
//! - [`holds`]: places and releases legal holds, audited.
//! - [`reconciler`]: compares the index with the bucket; re-indexes objects without rows,
//!   raises `footage_missing` for rows without objects (deletes nothing).
//!
//! The sweeper runs every `[retention] sweep_minutes` from [`crate::app`], on demand
//! from `POST /api/v1/retention/sweep` and from `cradle sweep`; all three go through
//! [`Retention::sweep`], which refuses any request for fewer days than the floor.

pub mod cli;
pub mod holds;
pub mod reconciler;
pub mod sweeper;

use std::collections::HashMap;

use crate::config::{below_floor, CameraConfig, Config};
use crate::db::Db;
use crate::storage::Storage;
use crate::time::WallUs;

pub use holds::Actor;
pub use sweeper::{SweepError, SweepFault, SweepOptions, SweepReport};

/// Placing a hold takes this for writing; a sweep batch holds it for reading from its
/// last hold check to its object delete, so the two never interleave in one process.
pub(crate) static HOLD_GATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub const DAY_US: i64 = 86_400 * 1_000_000;

/// The days each camera's footage is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The floor in force (`[policy]`): nothing younger is ever deleted.
    pub floor_days: u32,
    /// `[retention] days`: every camera keeps at least this.
    pub days: u32,
    /// Cameras that keep longer than `days`.
    pub cameras: HashMap<String, u32>,
}

impl RetentionPolicy {
    /// The config file's settings and cameras, then the cameras an admin added (a
    /// database row whose id the config file also names is ignored, as in [`crate::fleet`]).
    pub fn new(config: &Config, added: &[CameraConfig]) -> RetentionPolicy {
        let mut cameras = HashMap::new();
        for c in added.iter().filter(|a| !config.cameras.iter().any(|c| c.id == a.id)).chain(&config.cameras) {
            if let Some(d) = c.retention_days {
                cameras.insert(c.id.to_string(), d);
            }
        }
        RetentionPolicy { floor_days: config.policy.floor_days, days: config.retention.days, cameras }
    }

    /// The days `camera` keeps: never fewer than the floor or `[retention] days`.
    pub fn days_for(&self, camera: &str) -> u32 {
        let own = self.cameras.get(camera).copied().unwrap_or(0);
        self.floor_days.max(self.days).max(own)
    }

    /// Checks a request to sweep only footage older than `days`: it may keep more than
    /// the policy, never less. The error is the message the caller shows.
    pub fn check_request(&self, days: u32) -> Result<(), String> {
        if days < self.floor_days {
            return Err(below_floor(days.into(), self.floor_days));
        }
        if days < self.days {
            return Err(format!(
                "{days} days is shorter than [retention] days = {}: a sweep can keep more footage, never less",
                self.days
            ));
        }
        Ok(())
    }
}

/// `now` minus `days`.
pub fn cutoff(now: WallUs, days: u32) -> WallUs {
    now - i64::from(days) * DAY_US
}

/// What the sweeper needs from the configuration, and one sweep at a time in this
/// process (the scheduled sweep, the API's and the CLI's share it; sweeps in other
/// processes are safe too, see [`sweeper`], merely wasteful).
pub struct Retention {
    pub db: Db,
    pub storage: Storage,
    config: Config,
    running: tokio::sync::Mutex<()>,
}

impl Retention {
    pub fn new(db: Db, storage: Storage, config: Config) -> Retention {
        Retention { db, storage, config, running: tokio::sync::Mutex::new(()) }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The policy now: the config file plus the cameras in the database.
    pub async fn policy(&self) -> Result<RetentionPolicy, SweepError> {
        let added = self.db.added_cameras().await.map_err(|e| match e {
            crate::centre::CentreError::Db(e) => SweepError::Db(e),
            other => SweepError::Cameras(other.to_string()),
        })?;
        Ok(RetentionPolicy::new(&self.config, &added))
    }

    /// Runs one sweep at `now`, after any sweep in progress in this process.
    pub async fn sweep(&self, now: WallUs, opts: &SweepOptions, who: &Actor) -> Result<SweepReport, SweepError> {
        let _one = self.running.lock().await;
        self.sweep_locked(now, opts, who).await
    }

    /// Like [`Retention::sweep`], but `None` at once when a sweep is already running.
    pub async fn try_sweep(&self, now: WallUs, opts: &SweepOptions, who: &Actor) -> Option<Result<SweepReport, SweepError>> {
        let _one = self.running.try_lock().ok()?;
        Some(self.sweep_locked(now, opts, who).await)
    }

    async fn sweep_locked(&self, now: WallUs, opts: &SweepOptions, who: &Actor) -> Result<SweepReport, SweepError> {
        let policy = self.policy().await?;
        let batch = opts.batch.unwrap_or(self.config.retention.sweep_batch);
        sweeper::sweep(&self.db, &self.storage, &policy, now, &SweepOptions { batch: Some(batch), ..opts.clone() }, who)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(days: u32, cams: &[(&str, u32)]) -> RetentionPolicy {
        RetentionPolicy {
            floor_days: 90,
            days,
            cameras: cams.iter().map(|(c, d)| (c.to_string(), *d)).collect(),
        }
    }

    #[test]
    fn a_camera_keeps_the_longest_of_floor_centre_and_its_own() {
        let p = policy(100, &[("long", 365), ("short", 95)]);
        assert_eq!(p.days_for("long"), 365);
        assert_eq!(p.days_for("short"), 100, "a camera cannot keep less than the centre");
        assert_eq!(p.days_for("decommissioned"), 100);
        let p = RetentionPolicy { floor_days: 120, days: 90, cameras: HashMap::new() };
        assert_eq!(p.days_for("x"), 120, "the floor wins even over a smaller centre setting");
    }

    #[test]
    fn a_sweep_request_below_the_floor_or_the_centre_is_refused() {
        let p = policy(100, &[]);
        let e = p.check_request(30).unwrap_err();
        assert!(e.contains("90-day retention floor"), "{e}");
        let e = p.check_request(95).unwrap_err();
        assert!(e.contains("[retention] days = 100"), "{e}");
        assert!(p.check_request(100).is_ok());
        assert!(p.check_request(400).is_ok());
    }

    #[test]
    fn config_cameras_win_over_added_ones() {
        let cfg = Config::parse(
            "[server]\n[retention]\ndays = 100\n[[cameras]]\nid=\"a\"\nurl=\"rtsp://h/1\"\nretention_days = 200\n",
            std::path::Path::new("/etc/cradle.toml"),
        )
        .unwrap();
        let mut added = cfg.cameras[0].clone();
        added.retention_days = Some(400);
        let mut other = added.clone();
        other.id = crate::config::CameraId::parse("b").unwrap();
        other.retention_days = Some(150);
        let p = RetentionPolicy::new(&cfg, &[added, other]);
        assert_eq!((p.days_for("a"), p.days_for("b"), p.days_for("c")), (200, 150, 100));
    }
}
