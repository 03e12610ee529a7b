//! The index side of the reconciler (`retention::reconciler`): one camera-day of rows
//! at a time, and inserting a row for an object found without one. Every statement is a
//! range scan or skip-scan of the (camera_id, start_us) index or a probe of the object_key index, so
//! a pass costs what it checks, not the size of the archive.

use sqlx::Row;

use super::{Db, Result, SegmentRow};
use crate::time::WallUs;

/// A row as the reconciler compares it with the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    pub object_key: String,
    pub state: String,
    pub start_us: WallUs,
    pub end_us: WallUs,
}

impl Db {
    /// The rows of `camera` starting in `[from, to)` (one UTC day: the rows whose objects
    /// are under `CAMERA/YYYY-MM-DD/`), every state, oldest first.
    pub async fn rows_starting_between(&self, camera: &str, from: WallUs, to: WallUs) -> Result<Vec<KeyRow>> {
        let rows = sqlx::query(
            "SELECT object_key, state, start_us, end_us FROM segments
             WHERE camera_id = $1 AND start_us >= $2 AND start_us < $3 ORDER BY start_us",
        )
        .bind(camera)
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyRow {
                    object_key: r.try_get("object_key")?,
                    state: r.try_get("state")?,
                    start_us: r.try_get("start_us")?,
                    end_us: r.try_get("end_us")?,
                })
            })
            .collect()
    }

    /// The state of the row for `key`, if there is one.
    pub async fn segment_state(&self, key: &str) -> Result<Option<String>> {
        let r = sqlx::query("SELECT state FROM segments WHERE object_key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        Ok(r.map(|r| r.try_get("state")).transpose()?)
    }

    /// The UTC days (days since the epoch) on which `camera` has rows, by skip-scan: one
    /// probe of the (camera_id, start_us) index per day, whatever the rows per day.
    pub async fn camera_row_days(&self, camera: &str) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "WITH RECURSIVE days(d) AS (
                 SELECT (SELECT MIN(start_us) FROM segments WHERE camera_id = $1) / 86400000000
                 UNION ALL
                 SELECT (SELECT MIN(s.start_us) FROM segments s
                         WHERE s.camera_id = $1 AND s.start_us >= (days.d + 1) * 86400000000) / 86400000000
                 FROM days WHERE days.d IS NOT NULL
             )
             SELECT d FROM days WHERE d IS NOT NULL",
        )
        .bind(camera)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<i64, _>("d")?)).collect()
    }

    /// Inserts `row` (state `stored`) unless a row with its object key exists, whatever
    /// that row's state: a `deleting` row is the sweeper's and must not come back, a
    /// `spooled` one the uploader's. True when inserted.
    pub async fn insert_segment_if_absent(&self, s: &SegmentRow, stored_at: WallUs) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO segments (camera_id, start_us, end_us, duration_90k, bytes, frames, codec,
                                   object_key, sha256, run_id, drift_us, state, stored_at_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'stored', $12)
             ON CONFLICT (object_key) DO NOTHING",
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
        .bind(stored_at)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
