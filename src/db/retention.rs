//! The index side of retention: the sweeper's statements over `segments` and the
//! `legal_holds` table (migration 0006). The rules — which footage may go, in what
//! order, and why a crash leaves nothing behind — are in [`crate::retention`]; every
//! method here is one SQL statement, so the sweeper can count what it costs.
//!
//! Every statement that changes a segment row carries its own guard: only rows whose
//! end is at or before `floor_cutoff` (now − the policy floor) and that overlap no
//! active legal hold are marked, and only rows at or before `floor_cutoff` are deleted.
//! A caller that computed a wrong cutoff still cannot remove younger footage.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Db, Result};
use crate::time::WallUs;

/// A segment row as the sweeper sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepRow {
    pub id: i64,
    pub camera_id: String,
    pub start_us: WallUs,
    pub end_us: WallUs,
    pub bytes: i64,
    pub object_key: String,
}

/// A row of `legal_holds`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRow {
    pub id: i64,
    pub camera_id: String,
    pub start_us: WallUs,
    pub end_us: WallUs,
    pub case_ref: String,
    pub reason: String,
    pub created_by: String,
    pub created_at_us: WallUs,
    pub released_at_us: Option<WallUs>,
    pub released_by: Option<String>,
    pub release_reason: Option<String>,
}

/// The state of a segment the sweeper has claimed: its object is being (or was)
/// deleted, and the row goes next.
pub const STATE_DELETING: &str = "deleting";

/// `segments` rows that overlap an active hold of their camera. Holds are inclusive at
/// both ends: a segment that merely touches a hold's edge is kept.
macro_rules! held {
    () => {
        "EXISTS (SELECT 1 FROM legal_holds h WHERE h.camera_id = segments.camera_id
                 AND h.released_at_us IS NULL
                 AND h.start_us <= segments.end_us AND h.end_us >= segments.start_us)"
    };
}

const SWEEP_COLS: &str = "id, camera_id, start_us, end_us, bytes, object_key";
const HOLD_COLS: &str = "id, camera_id, start_us, end_us, case_ref, reason, created_by, created_at_us, \
                         released_at_us, released_by, release_reason";

fn sweep_row(r: &AnyRow) -> Result<SweepRow> {
    Ok(SweepRow {
        id: r.try_get("id")?,
        camera_id: r.try_get("camera_id")?,
        start_us: r.try_get("start_us")?,
        end_us: r.try_get("end_us")?,
        bytes: r.try_get("bytes")?,
        object_key: r.try_get("object_key")?,
    })
}

fn hold_row(r: &AnyRow) -> Result<HoldRow> {
    Ok(HoldRow {
        id: r.try_get("id")?,
        camera_id: r.try_get("camera_id")?,
        start_us: r.try_get("start_us")?,
        end_us: r.try_get("end_us")?,
        case_ref: r.try_get("case_ref")?,
        reason: r.try_get("reason")?,
        created_by: r.try_get("created_by")?,
        created_at_us: r.try_get("created_at_us")?,
        released_at_us: r.try_get("released_at_us")?,
        released_by: r.try_get("released_by")?,
        release_reason: r.try_get("release_reason")?,
    })
}

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

impl Db {
    // ---- the sweeper ---------------------------------------------------------------------

    /// The camera ids that have rows in the index, by skip-scan: one index probe per
    /// camera (`MIN(camera_id) > previous`) instead of a `DISTINCT` over every row.
    pub async fn indexed_camera_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "WITH RECURSIVE cams(id) AS (
                 SELECT MIN(camera_id) FROM segments
                 UNION ALL
                 SELECT (SELECT MIN(s.camera_id) FROM segments s WHERE s.camera_id > cams.id)
                 FROM cams WHERE cams.id IS NOT NULL
             )
             SELECT id FROM cams WHERE id IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>("id")?)).collect()
    }

    /// Up to `limit` stored segments of `camera` with `start_us >= from` and
    /// `end_us <= to`, oldest first: a range scan of the (camera_id, start_us) index that
    /// reads only the span asked for.
    pub async fn expired_between(&self, camera: &str, from: WallUs, to: WallUs, limit: usize) -> Result<Vec<SweepRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SWEEP_COLS} FROM segments
             WHERE camera_id = $1 AND start_us >= $2 AND start_us <= $3 AND end_us <= $3 AND state = 'stored'
             ORDER BY start_us LIMIT $4"
        )))
        .bind(camera)
        .bind(from)
        .bind(to)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sweep_row).collect()
    }

    /// Step (a) of a batch: marks the rows `ids` as `deleting` — those that are still
    /// stored, ended at or before `floor_cutoff` and overlap no active hold — and returns
    /// the rows it marked.
    pub async fn mark_deleting(&self, ids: &[i64], floor_cutoff: WallUs) -> Result<Vec<SweepRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE segments SET state = 'deleting'
             WHERE id IN ({}) AND state = 'stored' AND end_us <= $1 AND NOT {}
             RETURNING {SWEEP_COLS}",
            placeholders(2, ids.len()),
            held!()
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(floor_cutoff);
        for id in ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(sweep_row).collect()
    }

    /// Step (c): deletes the rows `ids` that are still `deleting` (their objects are
    /// gone) and ended at or before `floor_cutoff`; returns the rows deleted.
    pub async fn delete_marked(&self, ids: &[i64], floor_cutoff: WallUs) -> Result<Vec<SweepRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "DELETE FROM segments WHERE id IN ({}) AND state = 'deleting' AND end_us <= $1 RETURNING {SWEEP_COLS}",
            placeholders(2, ids.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(floor_cutoff);
        for id in ids {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(sweep_row).collect()
    }

    /// Rows a previous sweep marked and did not finish (it crashed, or its object
    /// deletes failed), up to `limit`, that may still go.
    pub async fn leftover_deleting(&self, floor_cutoff: WallUs, limit: usize) -> Result<Vec<SweepRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SWEEP_COLS} FROM segments WHERE state = 'deleting' AND end_us <= $1 ORDER BY id LIMIT $2"
        )))
        .bind(floor_cutoff)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sweep_row).collect()
    }

    /// Returns marked rows that must not go after all — younger than the floor (never
    /// marked by this code; a guard against anything else) or now under a hold placed
    /// after they were marked — to `stored`. If the crash came after their objects were
    /// deleted, the reconciler reports those rows as footage missing: loudly, not silently.
    pub async fn unmark_protected(&self, floor_cutoff: WallUs) -> Result<Vec<SweepRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE segments SET state = 'stored'
             WHERE state = 'deleting' AND (end_us > $1 OR {})
             RETURNING {SWEEP_COLS}",
            held!()
        )))
        .bind(floor_cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sweep_row).collect()
    }

    /// Stored segments of `camera` that ended at or before `cutoff` and overlap
    /// `[start, end]`: the expired footage a hold keeps.
    pub async fn count_expired_overlapping(&self, camera: &str, start: WallUs, end: WallUs, cutoff: WallUs) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT COUNT(*) AS n FROM segments
             WHERE camera_id = $1 AND start_us <= $2 AND end_us >= $3 AND end_us <= $4",
        )
        .bind(camera)
        .bind(end)
        .bind(start)
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?)
    }

    /// The start of a camera's oldest segment (one index probe).
    pub async fn oldest_segment_start(&self, camera: &str) -> Result<Option<WallUs>> {
        Ok(sqlx::query("SELECT MIN(start_us) AS m FROM segments WHERE camera_id = $1")
            .bind(camera)
            .fetch_one(&self.pool)
            .await?
            .try_get("m")?)
    }

    // ---- legal holds -----------------------------------------------------------------------

    pub async fn insert_hold(&self, h: &HoldRow) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO legal_holds (camera_id, start_us, end_us, case_ref, reason, created_by, created_at_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&h.camera_id)
        .bind(h.start_us)
        .bind(h.end_us)
        .bind(&h.case_ref)
        .bind(&h.reason)
        .bind(&h.created_by)
        .bind(h.created_at_us)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn hold(&self, id: i64) -> Result<Option<HoldRow>> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {HOLD_COLS} FROM legal_holds WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(hold_row).transpose()
    }

    /// Every hold (or the active ones), by camera and start.
    pub async fn list_holds(&self, active_only: bool) -> Result<Vec<HoldRow>> {
        let sql = if active_only {
            format!("SELECT {HOLD_COLS} FROM legal_holds WHERE released_at_us IS NULL ORDER BY camera_id, start_us, id")
        } else {
            format!("SELECT {HOLD_COLS} FROM legal_holds ORDER BY camera_id, start_us, id")
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.iter().map(hold_row).collect()
    }

    /// Records a release; false when the hold was already released (or does not exist).
    pub async fn release_hold(&self, id: i64, by: &str, at_us: WallUs, reason: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE legal_holds SET released_at_us = $1, released_by = $2, release_reason = $3
             WHERE id = $4 AND released_at_us IS NULL",
        )
        .bind(at_us)
        .bind(by)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(n.rows_affected() == 1)
    }

    /// Segments (any state) of `camera` overlapping `[start, end]`: what a hold covers.
    pub async fn count_segments_overlapping(&self, camera: &str, start: WallUs, end: WallUs) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM segments WHERE camera_id = $1 AND start_us <= $2 AND end_us >= $3")
            .bind(camera)
            .bind(end)
            .bind(start)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}
