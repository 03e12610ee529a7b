//! The index: segment rows, camera/server events and server runs, in SQLite (the
//! embedded default) or PostgreSQL (several nodes), behind one type.
//!
//! Both back ends run the same SQL through sqlx's `Any` driver (`$N` placeholders work
//! on both), and each has its own migrations directory because DDL differs. Times
//! are `i64` UTC microseconds, so no back-end-specific time types leak in. The index
//! can always be rebuilt from the bucket (`cradle reindex`); it is a cache of the
//! objects plus the events that explain gaps.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

use crate::time::WallUs;

pub mod accounts;
pub mod audit;
pub mod cameras;
pub mod centre;
pub mod coverage;
pub mod evidence;
pub mod live;
pub mod reconcile;
pub mod retention;

static MIGRATE_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MIGRATE_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A call handed to another runtime did not complete (that runtime is stopping).
    #[error("database call interrupted: {0}")]
    Interrupted(String),
}

pub type Result<T> = std::result::Result<T, DbError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    pub backend: Backend,
    /// Counts this process's changes to cameras and their placement (see
    /// [`Db::watch_cameras`]).
    cameras_changed: Arc<tokio::sync::watch::Sender<u64>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRow {
    pub camera_id: String,
    pub start_us: WallUs,
    pub end_us: WallUs,
    pub duration_90k: i64,
    pub bytes: i64,
    pub frames: i64,
    pub codec: String,
    pub object_key: String,
    pub sha256: String,
    pub run_id: String,
    pub drift_us: i64,
    /// `spooled` (on local disk, waiting for upload), `stored` (in object storage) or
    /// `deleting` (expired; the sweeper is deleting its object, see [`crate::retention`]).
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub camera_id: Option<String>,
    pub at_us: WallUs,
    pub kind: String,
    pub detail: String,
}

pub const STATE_SPOOLED: &str = "spooled";
pub const STATE_STORED: &str = "stored";

impl Db {
    /// Connects (creating a SQLite file if needed) and applies migrations.
    pub async fn connect(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url),
            Backend::Postgres => url.to_owned(),
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            // SQLite serialises writers anyway; a few readers for the API are plenty.
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            // A ping before every query is a second round trip to SQLite's worker thread
            // (and a wake-up); a local file has no connection to go stale.
            .test_before_acquire(backend == Backend::Postgres)
            .connect_with(opts)
            .await?;
        if backend == Backend::Sqlite {
            // WAL: readers (API) never block the writer (recorder), and a crash loses
            // at most uncommitted transactions.
            sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await?;
        }
        let db = Db { pool, backend, cameras_changed: Arc::new(tokio::sync::watch::Sender::new(0)) };
        match backend {
            Backend::Sqlite => MIGRATE_SQLITE.run(&db.pool).await?,
            Backend::Postgres => MIGRATE_POSTGRES.run(&db.pool).await?,
        }
        Ok(db)
    }

    /// Changes when this process adds, edits or decommissions a camera, so that those
    /// who poll the cameras (the reconciler, the watchdog) look now. Changes made by
    /// another process (the CLI) reach them at their next poll.
    pub fn watch_cameras(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cameras_changed.subscribe()
    }

    pub(crate) fn cameras_changed(&self) {
        self.cameras_changed.send_modify(|n| *n += 1);
    }

    /// The pool, for modules that keep their own tables (alarms).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Inserts a segment row, or updates the existing row with the same object key
    /// (recovery and reindex may see a segment twice; the key identifies it).
    pub async fn upsert_segment(&self, s: &SegmentRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO segments (camera_id, start_us, end_us, duration_90k, bytes, frames, codec,
                                   object_key, sha256, run_id, drift_us, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (object_key) DO UPDATE SET
                 end_us = excluded.end_us, duration_90k = excluded.duration_90k,
                 bytes = excluded.bytes, frames = excluded.frames, sha256 = excluded.sha256,
                 state = CASE WHEN segments.state = 'stored' THEN 'stored' ELSE excluded.state END",
        )
        .bind(&s.camera_id)
        .bind(s.start_us)
        .bind(s.end_us)
        .bind(s.duration_90k)
        .bind(s.bytes)
        .bind(s.frames)
        .bind(&s.codec)
        .bind(&s.object_key)
        .bind(&s.sha256)
        .bind(&s.run_id)
        .bind(s.drift_us)
        .bind(&s.state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn mark_stored(&self, object_key: &str, at_us: WallUs) -> Result<()> {
        sqlx::query("UPDATE segments SET state = 'stored', stored_at_us = $1 WHERE object_key = $2")
            .bind(at_us)
            .bind(object_key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Segments of a camera overlapping `[start, end)`, oldest first.
    pub async fn segments_between(&self, camera: &str, start: WallUs, end: WallUs) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(
            "SELECT camera_id, start_us, end_us, duration_90k, bytes, frames, codec, object_key,
                    sha256, run_id, drift_us, state
             FROM segments WHERE camera_id = $1 AND start_us < $2 AND end_us > $3
             ORDER BY start_us",
        )
        .bind(camera)
        .bind(end)
        .bind(start)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(segment_from_row).collect()
    }

    pub async fn segment_by_key(&self, key: &str) -> Result<Option<SegmentRow>> {
        let row = sqlx::query(
            "SELECT camera_id, start_us, end_us, duration_90k, bytes, frames, codec, object_key,
                    sha256, run_id, drift_us, state
             FROM segments WHERE object_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(segment_from_row).transpose()
    }

    /// Spool backlog per camera as the index sees it: (camera, segments, bytes).
    pub async fn spooled_by_camera(&self) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT camera_id, COUNT(*) AS n, CAST(SUM(bytes) AS BIGINT) AS b FROM segments WHERE state = 'spooled'
             GROUP BY camera_id ORDER BY camera_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("camera_id")?, r.try_get("n")?, r.try_get::<Option<i64>, _>("b")?.unwrap_or(0))))
            .collect()
    }

    /// Oldest and newest footage of a camera, and how many segments it has.
    pub async fn camera_extent(&self, camera: &str) -> Result<(Option<WallUs>, Option<WallUs>, i64)> {
        let r = sqlx::query(
            "SELECT MIN(start_us) AS first, MAX(end_us) AS last, COUNT(*) AS n FROM segments WHERE camera_id = $1",
        )
        .bind(camera)
        .fetch_one(&self.pool)
        .await?;
        Ok((r.try_get("first")?, r.try_get("last")?, r.try_get("n")?))
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn count_segments(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM segments").fetch_one(&self.pool).await?.try_get("n")?)
    }

    pub async fn insert_event(&self, camera: Option<&str>, at_us: WallUs, kind: &str, detail: &str) -> Result<()> {
        sqlx::query("INSERT INTO events (camera_id, at_us, kind, detail) VALUES ($1, $2, $3, $4)")
            .bind(camera)
            .bind(at_us)
            .bind(kind)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Events of this camera and server-wide events within `[start, end]`, oldest first.
    pub async fn events_between(&self, camera: &str, start: WallUs, end: WallUs) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT camera_id, at_us, kind, detail FROM events
             WHERE (camera_id = $1 OR camera_id IS NULL) AND at_us >= $2 AND at_us <= $3
             ORDER BY at_us, id",
        )
        .bind(camera)
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    camera_id: r.try_get("camera_id")?,
                    at_us: r.try_get("at_us")?,
                    kind: r.try_get("kind")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Records this process's run and returns the previous runs that never said
    /// goodbye (crashed or killed), with their last sign of life: the database's
    /// heartbeat, or `last_sign` (run id, time; [`crate::lifesign`]) where it names that
    /// run and is later.
    pub async fn begin_server_run(
        &self,
        run_id: &str,
        now: WallUs,
        last_sign: Option<(&str, WallUs)>,
    ) -> Result<Vec<(String, WallUs)>> {
        let rows = sqlx::query("SELECT id, alive_us FROM server_runs WHERE stopped_us IS NULL")
            .fetch_all(&self.pool)
            .await?;
        let unclean = rows
            .iter()
            .map(|r| {
                let (id, alive) = (r.try_get::<String, _>("id")?, r.try_get::<i64, _>("alive_us")?);
                let alive = match last_sign {
                    Some((run, at)) if run == id => alive.max(at.min(now)),
                    _ => alive,
                };
                Ok((id, alive))
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        for (id, alive) in &unclean {
            // Close the dead run at its last sign of life so it is reported once.
            sqlx::query("UPDATE server_runs SET stopped_us = $1 WHERE id = $2")
                .bind(*alive)
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        sqlx::query("INSERT INTO server_runs (id, started_us, alive_us) VALUES ($1, $2, $2)")
            .bind(run_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(unclean)
    }

    pub async fn heartbeat(&self, run_id: &str, now: WallUs) -> Result<()> {
        sqlx::query("UPDATE server_runs SET alive_us = $1 WHERE id = $2")
            .bind(now)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn end_server_run(&self, run_id: &str, now: WallUs) -> Result<()> {
        sqlx::query("UPDATE server_runs SET alive_us = $1, stopped_us = $1 WHERE id = $2")
            .bind(now)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn segment_from_row(r: &sqlx::any::AnyRow) -> Result<SegmentRow> {
    Ok(SegmentRow {
        camera_id: r.try_get("camera_id")?,
        start_us: r.try_get("start_us")?,
        end_us: r.try_get("end_us")?,
        duration_90k: r.try_get("duration_90k")?,
        bytes: r.try_get("bytes")?,
        frames: r.try_get("frames")?,
        codec: r.try_get("codec")?,
        object_key: r.try_get("object_key")?,
        sha256: r.try_get("sha256")?,
        run_id: r.try_get("run_id")?,
        drift_us: r.try_get("drift_us")?,
        state: r.try_get("state")?,
    })
}

/// SQLite URLs get `mode=rwc` (create the file if missing) and the parent directory is
/// created, so the embedded default works on a fresh data dir.
fn sqlite_url(url: &str) -> String {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let file = path.split('?').next().unwrap_or("");
    if !file.is_empty() && file != ":memory:" {
        if let Some(parent) = std::path::Path::new(file).parent() {
            let _ = std::fs::create_dir_all(parent);
        }
    }
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_run_ends_at_its_last_sign_of_life_the_database_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/r.db", dir.path().display())).await.unwrap();
        assert!(db.begin_server_run("run-a", 0, None).await.unwrap().is_empty());
        db.heartbeat("run-a", 60_000_000).await.unwrap();
        // A sign of another run does not count.
        let dead = db.begin_server_run("run-b", 100_000_000, Some(("run-x", 95_000_000))).await.unwrap();
        assert_eq!(dead, [("run-a".to_owned(), 60_000_000)]);
        // A later sign of the dead run does, but never later than the start that finds it.
        db.heartbeat("run-b", 110_000_000).await.unwrap();
        let dead = db.begin_server_run("run-c", 120_000_000, Some(("run-b", 115_000_000))).await.unwrap();
        assert_eq!(dead, [("run-b".to_owned(), 115_000_000)]);
        let dead = db.begin_server_run("run-d", 140_000_000, Some(("run-c", 500_000_000))).await.unwrap();
        assert_eq!(dead, [("run-c".to_owned(), 140_000_000)]);
        // An older sign than the database's does not move it back.
        db.heartbeat("run-d", 150_000_000).await.unwrap();
        let dead = db.begin_server_run("run-e", 160_000_000, Some(("run-d", 145_000_000))).await.unwrap();
        assert_eq!(dead, [("run-d".to_owned(), 150_000_000)]);
    }
}
