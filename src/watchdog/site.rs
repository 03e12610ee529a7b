//! The watchdog's checks that read the index or the store rather than a hub:
//! uploads and the spool backlog, the storage forecast, the retention horizon, and
//! decommissioned cameras.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use sqlx::Row;

use super::Verdict;
use crate::db::{Db, DbError};
use crate::record::uploader::SpoolStats;
use crate::time::{format_rfc3339, WallUs};

const DAY_US: i64 = 86_400_000_000;

/// `upload_failing`: storage has refused uploads for longer than `after`.
pub fn upload_failing(spool: &SpoolStats, now: WallUs, after: std::time::Duration, storage: &str) -> Verdict {
    let since = spool.failing_since_us.load(Ordering::Relaxed);
    if since == 0 {
        return Verdict::Good(format!("uploads to {storage} succeed again"));
    }
    let failing = now - since;
    if failing < after.as_micros() as i64 {
        return Verdict::Unknown;
    }
    let err = spool.last_error.lock().unwrap().clone().unwrap_or_default();
    Verdict::Bad(format!(
        "uploads to {storage} have failed for {:.0} s (threshold {} s); {} segments wait in the spool; last error: {err}",
        failing as f64 / 1e6,
        after.as_secs(),
        spool.segments()
    ))
}

/// `spool_backlog`: the oldest segment waiting in the spool finished longer than
/// `after` ago. The spool is FIFO, so a backlog that keeps growing for that long also
/// makes its oldest segment that old.
pub async fn spool_backlog(db: &Db, spool: &SpoolStats, now: WallUs, after: std::time::Duration) -> Result<Verdict, DbError> {
    if spool.segments() == 0 {
        return Ok(Verdict::Good("the spool is drained".into()));
    }
    let r = sqlx::query("SELECT MIN(end_us) AS oldest, COUNT(*) AS n FROM segments WHERE state = 'spooled'")
        .fetch_one(db.pool())
        .await?;
    let (Some(oldest), n) = (r.try_get::<Option<i64>, _>("oldest")?, r.try_get::<i64, _>("n")?) else {
        return Ok(Verdict::Unknown); // counted but not indexed yet: a moment's race
    };
    let waited = now - oldest;
    let mb = spool.bytes() as f64 / 1e6;
    Ok(if waited > after.as_micros() as i64 {
        Verdict::Bad(format!(
            "{n} segments ({mb:.1} MB) wait in the spool; the oldest finished {:.0} s ago (threshold {} s)",
            waited as f64 / 1e6,
            after.as_secs()
        ))
    } else {
        Verdict::Good(format!("spool backlog down to {n} segments ({mb:.1} MB), the oldest {:.0} s old", waited as f64 / 1e6))
    })
}

/// Where footage goes, as the forecast sees it.
#[derive(Clone, Debug)]
pub enum Store {
    /// A local directory: its file system says how big it is.
    Dir(PathBuf),
    /// An object store of the configured size, or unknown.
    Bucket { description: String, capacity: Option<u64> },
}

impl Store {
    pub fn from_config(cfg: &crate::config::StorageConfig) -> Store {
        match cfg.url.strip_prefix("file://") {
            Some(dir) => Store::Dir(PathBuf::from(dir)),
            None => Store::Bucket { description: cfg.url.clone(), capacity: cfg.capacity_bytes },
        }
    }
}

/// Total and available bytes of the file system holding `dir` (statvfs).
pub fn fs_size(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// Bytes per day of one camera: its bytes per recorded second over the last 24 hours,
/// times a day (it is meant to record around the clock). One range read of the
/// (camera_id, start_us) index.
pub async fn bytes_per_day(db: &Db, camera: &str, now: WallUs) -> Result<Option<f64>, DbError> {
    let r = sqlx::query(
        "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS b, CAST(COALESCE(SUM(end_us - start_us), 0) AS BIGINT) AS d
         FROM segments WHERE camera_id = $1 AND start_us >= $2 AND start_us <= $3",
    )
    .bind(camera)
    .bind(now - DAY_US)
    .bind(now)
    .fetch_one(db.pool())
    .await?;
    let (b, d): (i64, i64) = (r.try_get("b")?, r.try_get("d")?);
    Ok((d > 0).then(|| b as f64 / d as f64 * DAY_US as f64))
}

/// The footage bytes the index knows of (spooled rows included: they are on their way),
/// kept up to date cheaply: new rows (by id) are added at every check, and the whole sum
/// is read again every `FULL_EVERY` checks to take deletions (the sweeper) into account.
/// Between full reads it over-counts what was swept, which errs towards not alarming
/// for those minutes.
#[derive(Debug, Default)]
pub struct FootageBytes {
    sum: i64,
    max_id: i64,
    checks: u32,
}

const FULL_EVERY: u32 = 10;

impl FootageBytes {
    async fn get(&mut self, db: &Db) -> Result<i64, DbError> {
        let full = self.checks.is_multiple_of(FULL_EVERY);
        self.checks = self.checks.wrapping_add(1);
        let from = if full { 0 } else { self.max_id };
        let r = sqlx::query("SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS b, MAX(id) AS m FROM segments WHERE id > $1")
            .bind(from)
            .fetch_one(db.pool())
            .await?;
        let (b, m): (i64, Option<i64>) = (r.try_get("b")?, r.try_get("m")?);
        if full {
            (self.sum, self.max_id) = (b, m.unwrap_or(0));
        } else {
            self.sum += b;
            self.max_id = m.unwrap_or(self.max_id);
        }
        Ok(self.sum)
    }
}

/// `storage_forecast`: at the recording cameras' bytes per day, can the store hold
/// `floor_days` of footage? A directory holds its free space plus the footage already
/// in it (the file system's size less everything else on it); a bucket holds
/// `[storage] capacity_gb`, and without it nothing is forecast.
pub async fn storage_forecast(
    db: &Db,
    store: &Store,
    cameras: &[String],
    floor_days: u32,
    now: WallUs,
    footage: &mut FootageBytes,
) -> Result<Verdict, DbError> {
    let mut per_day = 0.0;
    let mut counted = 0;
    for c in cameras {
        if let Some(b) = bytes_per_day(db, c, now).await? {
            per_day += b;
            counted += 1;
        }
    }
    if counted == 0 {
        return Ok(Verdict::Unknown);
    }
    let need = per_day * floor_days as f64;
    let (capacity, what) = match store {
        Store::Bucket { capacity: None, .. } => return Ok(Verdict::Unknown),
        Store::Bucket { description, capacity: Some(c) } => {
            (*c as f64, format!("{description} holds {} ([storage] capacity_gb)", human(*c as f64)))
        }
        Store::Dir(dir) => {
            let (total, free) = match fs_size(dir) {
                Ok(v) => v,
                Err(e) => return Ok(Verdict::Bad(format!("cannot read the size of {}: {e}", dir.display()))),
            };
            let footage = footage.get(db).await?.max(0) as f64;
            let capacity = (free as f64 + footage).min(total as f64);
            (
                capacity,
                format!(
                    "{} holds {} for footage ({} free + {} of footage; file system {})",
                    dir.display(),
                    human(capacity),
                    human(free as f64),
                    human(footage),
                    human(total as f64)
                ),
            )
        }
    };
    let rate = format!("{}/day from {counted} camera{}", human(per_day), if counted == 1 { "" } else { "s" });
    Ok(if need > capacity {
        Verdict::Bad(format!(
            "at {rate} (last 24 h), {floor_days} days of footage need {} but {what}: it cannot keep the {floor_days}-day floor",
            human(need)
        ))
    } else {
        Verdict::Good(format!("at {rate}, {floor_days} days need {}; {what}", human(need)))
    })
}

fn human(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// Oldest footage may start this much after the floor's horizon without an alarm: a
/// camera that was offline for a few hours 90 days ago legitimately has nothing then.
pub const RETENTION_TOLERANCE_US: i64 = DAY_US;

/// `retention_short` for one camera: first recorded more than `floor_days` ago, but its
/// oldest footage is younger than the floor (by more than a day). Notes the camera's
/// first recording in `camera_first_recorded`, which survives the sweeper.
/// `recording`: the server records this camera now (a camera that stopped long ago
/// may rightly have no footage left).
pub async fn retention_short(
    db: &Db,
    camera: &str,
    recording: bool,
    floor_days: u32,
    now: WallUs,
) -> Result<Verdict, DbError> {
    let oldest = db.oldest_segment_start(camera).await?;
    let noted: Option<i64> = sqlx::query("SELECT first_start_us FROM camera_first_recorded WHERE camera_id = $1")
        .bind(camera)
        .fetch_optional(db.pool())
        .await?
        .map(|r| r.try_get("first_start_us"))
        .transpose()?;
    let first = match (noted, oldest) {
        (Some(f), Some(o)) if o >= f => f,
        (None, None) => return Ok(Verdict::Unknown),
        (Some(f), None) => f,
        (_, Some(o)) => {
            // New, or older footage turned up (reindex): lower it; it is never raised.
            sqlx::query(
                "INSERT INTO camera_first_recorded (camera_id, first_start_us, noted_at_us) VALUES ($1, $2, $3)
                 ON CONFLICT (camera_id) DO UPDATE SET first_start_us = excluded.first_start_us
                 WHERE excluded.first_start_us < camera_first_recorded.first_start_us",
            )
            .bind(camera)
            .bind(o)
            .bind(now)
            .execute(db.pool())
            .await?;
            o
        }
    };
    let horizon = now - floor_days as i64 * DAY_US;
    let days = |us: i64| us as f64 / DAY_US as f64;
    if first > horizon {
        return Ok(Verdict::Good(format!(
            "camera {camera:?} has recorded for {:.1} days, less than the {floor_days}-day floor",
            days(now - first)
        )));
    }
    Ok(match oldest {
        None if !recording => Verdict::Good(format!("camera {camera:?} is not recorded any more and its footage has expired")),
        None => Verdict::Bad(format!(
            "camera {camera:?} was first recorded {} ({:.1} days ago) but has no footage at all: the {floor_days}-day floor is not kept",
            format_rfc3339(first),
            days(now - first)
        )),
        Some(o) if o > horizon + RETENTION_TOLERANCE_US => Verdict::Bad(format!(
            "camera {camera:?} was first recorded {} ({:.1} days ago) but its oldest footage starts {} ({:.1} days ago): \
             {:.1} days short of the {floor_days}-day floor",
            format_rfc3339(first),
            days(now - first),
            format_rfc3339(o),
            days(now - o),
            days(o - horizon)
        )),
        Some(o) => Verdict::Good(format!(
            "camera {camera:?} keeps {:.1} days of footage (floor {floor_days})",
            days(now - o)
        )),
    })
}

/// Every camera ever recorded, as `camera_first_recorded` remembers them.
pub async fn first_recorded_cameras(db: &Db) -> Result<Vec<String>, DbError> {
    let rows = sqlx::query("SELECT camera_id FROM camera_first_recorded ORDER BY camera_id").fetch_all(db.pool()).await?;
    rows.iter().map(|r| r.try_get("camera_id")).collect::<Result<_, sqlx::Error>>().map_err(DbError::from)
}

/// A camera an admin took out of service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decommissioned {
    pub camera: String,
    pub at_us: WallUs,
    pub by: String,
    pub reason: String,
}

impl Decommissioned {
    pub fn detail(&self, floor_days: u32) -> String {
        format!(
            "camera {:?} was decommissioned by {} at {}: {}. It is no longer watched; its footage is kept at least {floor_days} days",
            self.camera,
            self.by,
            format_rfc3339(self.at_us),
            self.reason
        )
    }
}

/// Every decommissioned camera (a small table: one row per camera ever placed).
pub async fn decommissioned(db: &Db) -> Result<Vec<Decommissioned>, DbError> {
    let rows = sqlx::query(
        "SELECT camera_id, decommissioned_at_us, decommission_reason, updated_by FROM camera_placement
         WHERE decommissioned_at_us IS NOT NULL ORDER BY camera_id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Decommissioned {
                camera: r.try_get("camera_id")?,
                at_us: r.try_get("decommissioned_at_us")?,
                by: r.try_get("updated_by")?,
                reason: r.try_get::<Option<String>, _>("decommission_reason")?.unwrap_or_default(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(DbError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human(999.0), "999.0 B");
        assert_eq!(human(43_200_000_000.0), "43.2 GB");
        assert_eq!(human(3.888e12), "3.9 TB");
    }

    #[test]
    fn a_directory_store_reports_its_file_system() {
        let (total, free) = fs_size(Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
    }
}
