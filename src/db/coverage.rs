//! The index as the proof of coverage reads it ([`crate::coverage`]), and the ledger of
//! closed days (`coverage_days`, migration 0008).
//!
//! Every query here is a short range scan or an index probe: the (camera_id, start_us)
//! index of `segments`, the (camera_id, at_us) index of `events`, and the ledger's own
//! keys. Segment queries bound `start_us` from below by [`MAX_SEGMENT_US`] so that
//! "segments overlapping [a, b)" does not scan everything the camera ever recorded.
//!
//! Invalidation: a segment row inserted (or moved) after its day was closed marks the
//! day stale through a trigger (0008), so reindex, the reconciler and spool recovery
//! need not remember to. [`Db::ledger_invalidate`] does the same by hand for any other
//! writer that changes what a past day recorded.

use sqlx::Row;

use super::{Db, EventRow, Result};
use crate::time::WallUs;

/// No segment is longer than this (`[recording] segment_seconds` ≤ 3600, closed at the
/// next keyframe); a segment overlapping `[a, b)` starts after `a − MAX_SEGMENT_US`.
pub const MAX_SEGMENT_US: i64 = 2 * 3600 * 1_000_000;

/// Event kinds that start and end server runs (server-wide rows, `camera_id` NULL).
pub const LIFECYCLE_KINDS: [&str; 3] = ["server_started", "server_stopped", "server_crashed"];

/// One closed day of one camera as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    pub camera_id: String,
    pub time_zone: String,
    /// `YYYY-MM-DD` in `time_zone`.
    pub day: String,
    pub start_us: WallUs,
    pub end_us: WallUs,
    pub recorded_us: i64,
    pub gap_us: i64,
    pub excused_us: i64,
    pub first_recorded_us: Option<WallUs>,
    pub last_recorded_us: Option<WallUs>,
    pub segments: i64,
    /// JSON array of [`crate::coverage::CoverageGap`].
    pub gaps: String,
    /// A segment for this day was indexed after it was computed.
    pub stale: bool,
    pub computed_at_us: WallUs,
}

const LEDGER_COLS: &str = "camera_id, time_zone, day, start_us, end_us, recorded_us, gap_us, excused_us, \
     first_recorded_us, last_recorded_us, segments, gaps, stale, computed_at_us";

fn ledger_from(r: &sqlx::any::AnyRow) -> std::result::Result<LedgerRow, sqlx::Error> {
    Ok(LedgerRow {
        camera_id: r.try_get("camera_id")?,
        time_zone: r.try_get("time_zone")?,
        day: r.try_get("day")?,
        start_us: r.try_get("start_us")?,
        end_us: r.try_get("end_us")?,
        recorded_us: r.try_get("recorded_us")?,
        gap_us: r.try_get("gap_us")?,
        excused_us: r.try_get("excused_us")?,
        first_recorded_us: r.try_get("first_recorded_us")?,
        last_recorded_us: r.try_get("last_recorded_us")?,
        segments: r.try_get("segments")?,
        gaps: r.try_get("gaps")?,
        stale: r.try_get::<i64, _>("stale")? != 0,
        computed_at_us: r.try_get("computed_at_us")?,
    })
}

fn event_from(r: &sqlx::any::AnyRow) -> std::result::Result<EventRow, sqlx::Error> {
    Ok(EventRow {
        camera_id: r.try_get("camera_id")?,
        at_us: r.try_get("at_us")?,
        kind: r.try_get("kind")?,
        detail: r.try_get("detail")?,
    })
}

impl Db {
    /// The recorded spans of `camera` overlapping `[start, end)`, oldest first, whatever
    /// their state (spooled, stored, or being swept: all were recorded).
    pub async fn coverage_spans(&self, camera: &str, start: WallUs, end: WallUs) -> Result<Vec<(WallUs, WallUs)>> {
        let rows = sqlx::query(
            "SELECT start_us, end_us FROM segments
             WHERE camera_id = $1 AND start_us > $2 AND start_us < $3 AND end_us > $4
             ORDER BY start_us",
        )
        .bind(camera)
        .bind(start - MAX_SEGMENT_US)
        .bind(end)
        .bind(start)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("start_us")?, r.try_get("end_us")?))).collect()
    }

    /// The end of the camera's last footage that started before `t` (where a hole that
    /// opens a day really began).
    pub async fn footage_end_before(&self, camera: &str, t: WallUs) -> Result<Option<WallUs>> {
        let r = sqlx::query(
            "SELECT end_us FROM segments WHERE camera_id = $1 AND start_us < $2 ORDER BY start_us DESC LIMIT 1",
        )
        .bind(camera)
        .bind(t)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.map(|r| r.try_get("end_us")).transpose()?)
    }

    /// The start of the camera's last footage (for cameras no longer configured: the
    /// ledger stops at their last day).
    pub async fn footage_last_start(&self, camera: &str) -> Result<Option<WallUs>> {
        let r = sqlx::query("SELECT start_us FROM segments WHERE camera_id = $1 ORDER BY start_us DESC LIMIT 1")
            .bind(camera)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get("start_us")).transpose()?)
    }

    /// The start of the oldest footage still indexed (an index probe, not a count).
    pub async fn oldest_footage(&self, camera: &str) -> Result<Option<WallUs>> {
        let r = sqlx::query("SELECT start_us FROM segments WHERE camera_id = $1 ORDER BY start_us LIMIT 1")
            .bind(camera)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get("start_us")).transpose()?)
    }

    /// The earliest and latest instants of the footage still indexed that overlaps
    /// `[start, end)` (two index probes): whether the sweeper took a day's footage.
    pub async fn footage_bounds(&self, camera: &str, start: WallUs, end: WallUs) -> Result<Option<(WallUs, WallUs)>> {
        let first = sqlx::query(
            "SELECT start_us FROM segments WHERE camera_id = $1 AND start_us > $2 AND start_us < $3 AND end_us > $4
             ORDER BY start_us LIMIT 1",
        )
        .bind(camera)
        .bind(start - MAX_SEGMENT_US)
        .bind(end)
        .bind(start)
        .fetch_optional(&self.pool)
        .await?;
        let Some(first) = first else { return Ok(None) };
        let last = sqlx::query(
            "SELECT end_us FROM segments WHERE camera_id = $1 AND start_us < $2 ORDER BY start_us DESC LIMIT 1",
        )
        .bind(camera)
        .bind(end)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some((first.try_get("start_us")?, last.try_get("end_us")?)))
    }

    /// The oldest footage the ledger remembers for the camera (the index forgets swept
    /// footage; the ledger does not).
    pub async fn ledger_first_recorded(&self, camera: &str) -> Result<Option<WallUs>> {
        let r = sqlx::query("SELECT MIN(first_recorded_us) AS t FROM coverage_days WHERE camera_id = $1")
            .bind(camera)
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("t")?)
    }

    /// The first event ever recorded for the camera (a camera that never delivered a
    /// frame still leaves `connect_failed`).
    pub async fn first_camera_event(&self, camera: &str) -> Result<Option<WallUs>> {
        let r = sqlx::query("SELECT at_us FROM events WHERE camera_id = $1 ORDER BY at_us LIMIT 1")
            .bind(camera)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get("at_us")).transpose()?)
    }

    /// When and why the camera was decommissioned (the event
    /// [`Db::decommission_camera`](super::Db::decommission_camera) writes).
    pub async fn decommissioned_at(&self, camera: &str) -> Result<Option<(WallUs, String)>> {
        let r = sqlx::query(
            "SELECT at_us, detail FROM events WHERE camera_id = $1 AND kind = 'decommissioned' ORDER BY at_us LIMIT 1",
        )
        .bind(camera)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match r {
            Some(r) => Some((r.try_get("at_us")?, r.try_get("detail")?)),
            None => None,
        })
    }

    /// Per camera, the start of its oldest segment still waiting in the spool: days from
    /// then on are not closed yet. One query for all cameras through the state index (a
    /// per-camera query would scan the camera's every row on SQLite).
    pub async fn earliest_spooled(&self) -> Result<Vec<(String, WallUs)>> {
        let rows = sqlx::query(
            "SELECT camera_id, MIN(start_us) AS t FROM segments WHERE state = 'spooled' GROUP BY camera_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("camera_id")?, r.try_get("t")?))).collect()
    }

    /// This camera's own events (not server-wide ones) within `[start, end]`, oldest first.
    pub async fn camera_events(&self, camera: &str, start: WallUs, end: WallUs) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT camera_id, at_us, kind, detail FROM events
             WHERE camera_id = $1 AND at_us >= $2 AND at_us <= $3 ORDER BY at_us, id",
        )
        .bind(camera)
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(event_from).collect::<std::result::Result<_, _>>()?)
    }

    /// Every server start, clean stop and crash, oldest first: two rows per run, so
    /// years of restarts are a few thousand rows.
    pub async fn server_lifecycle(&self) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT camera_id, at_us, kind, detail FROM events
             WHERE camera_id IS NULL AND kind IN ('server_started', 'server_stopped', 'server_crashed')
             ORDER BY at_us, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(event_from).collect::<std::result::Result<_, _>>()?)
    }

    /// Every camera that has segment rows, by a loose index scan of (camera_id, start_us):
    /// one probe per camera, not one row per segment.
    pub async fn cameras_with_footage(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "WITH RECURSIVE cams(id) AS (
                 SELECT MIN(camera_id) FROM segments
                 UNION ALL
                 SELECT (SELECT MIN(camera_id) FROM segments WHERE camera_id > cams.id) FROM cams WHERE cams.id IS NOT NULL
             )
             SELECT id FROM cams WHERE id IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Whether the camera has footage overlapping `[start, end)` (one index probe).
    pub async fn has_footage_in(&self, camera: &str, start: WallUs, end: WallUs) -> Result<bool> {
        Ok(self.footage_bounds(camera, start, end).await?.is_some())
    }

    /// Cameras with ledger rows for days `from..=to` (`YYYY-MM-DD`) in `time_zone`.
    pub async fn ledger_cameras(&self, time_zone: &str, from: &str, to: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT camera_id FROM coverage_days WHERE time_zone = $1 AND day >= $2 AND day <= $3
             ORDER BY camera_id",
        )
        .bind(time_zone)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("camera_id")?)).collect()
    }

    /// The camera's ledger rows for days `from..=to` in `time_zone`, oldest first.
    pub async fn ledger_days(&self, camera: &str, time_zone: &str, from: &str, to: &str) -> Result<Vec<LedgerRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEDGER_COLS} FROM coverage_days
             WHERE camera_id = $1 AND time_zone = $2 AND day >= $3 AND day <= $4 ORDER BY day"
        )))
        .bind(camera)
        .bind(time_zone)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(ledger_from).collect::<std::result::Result<_, _>>()?)
    }

    /// The latest day the ledger holds for the camera in `time_zone`.
    pub async fn ledger_latest_day(&self, camera: &str, time_zone: &str) -> Result<Option<String>> {
        let r = sqlx::query(
            "SELECT day FROM coverage_days WHERE camera_id = $1 AND time_zone = $2 ORDER BY day DESC LIMIT 1",
        )
        .bind(camera)
        .bind(time_zone)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.map(|r| r.try_get("day")).transpose()?)
    }

    /// Up to `limit` stale days in `time_zone`: (camera, day).
    pub async fn ledger_stale(&self, time_zone: &str, limit: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT camera_id, day FROM coverage_days WHERE stale = 1 AND time_zone = $1 ORDER BY camera_id, day LIMIT $2",
        )
        .bind(time_zone)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("camera_id")?, r.try_get("day")?))).collect()
    }

    /// Writes (or replaces) a closed day; clears its stale mark.
    pub async fn ledger_put(&self, d: &LedgerRow) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO coverage_days ({LEDGER_COLS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13)
             ON CONFLICT (camera_id, time_zone, day) DO UPDATE SET
                 start_us = excluded.start_us, end_us = excluded.end_us,
                 recorded_us = excluded.recorded_us, gap_us = excluded.gap_us, excused_us = excluded.excused_us,
                 first_recorded_us = excluded.first_recorded_us, last_recorded_us = excluded.last_recorded_us,
                 segments = excluded.segments, gaps = excluded.gaps, stale = 0,
                 computed_at_us = excluded.computed_at_us"
        )))
        .bind(&d.camera_id)
        .bind(&d.time_zone)
        .bind(&d.day)
        .bind(d.start_us)
        .bind(d.end_us)
        .bind(d.recorded_us)
        .bind(d.gap_us)
        .bind(d.excused_us)
        .bind(d.first_recorded_us)
        .bind(d.last_recorded_us)
        .bind(d.segments)
        .bind(&d.gaps)
        .bind(d.computed_at_us)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks the camera's closed days overlapping `[start, end)` stale, in every time
    /// zone: the next read recomputes them from the index and keeps what they already
    /// proved. For writers that change what a past day recorded other than by
    /// inserting or moving a segment row (those are caught by a trigger). Answers how
    /// many days were marked.
    pub async fn ledger_invalidate(&self, camera: &str, start: WallUs, end: WallUs) -> Result<u64> {
        let r =
            sqlx::query("UPDATE coverage_days SET stale = 1 WHERE camera_id = $1 AND start_us < $2 AND end_us > $3")
                .bind(camera)
                .bind(end)
                .bind(start)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected())
    }
}
