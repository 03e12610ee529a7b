//! Evidence requests and exports (migrations 0010). The rules — who may file, approve,
//! see — live in [`crate::evidence`]; this is storage only.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Db, Result};
use crate::time::WallUs;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRow {
    pub id: i64,
    pub case_ref: String,
    pub camera_ids: Vec<String>,
    pub start_us: WallUs,
    pub end_us: WallUs,
    pub reason: String,
    pub requested_by: String,
    pub requested_at_us: WallUs,
    /// pending | approved | rejected | closed
    pub state: String,
    pub decided_by: Option<String>,
    pub decided_at_us: Option<WallUs>,
    pub decision_note: Option<String>,
    pub expires_at_us: Option<WallUs>,
    pub closed_by: Option<String>,
    pub closed_at_us: Option<WallUs>,
    pub close_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRow {
    pub id: String,
    pub request_id: i64,
    pub camera_id: String,
    pub start_us: WallUs,
    pub end_us: WallUs,
    /// pending | ready | failed
    pub state: String,
    pub error: Option<String>,
    pub created_by: String,
    pub created_at_us: WallUs,
    pub finished_at_us: Option<WallUs>,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    pub actual_start_us: Option<WallUs>,
    pub actual_end_us: Option<WallUs>,
    pub hold_id: Option<i64>,
}

const REQUEST_COLS: &str = "id, case_ref, start_us, end_us, reason, requested_by, requested_at_us, state, \
                            decided_by, decided_at_us, decision_note, expires_at_us, closed_by, closed_at_us, close_reason";
const EXPORT_COLS: &str = "id, request_id, camera_id, start_us, end_us, state, error, created_by, created_at_us, \
                           finished_at_us, bytes, sha256, actual_start_us, actual_end_us, hold_id";

fn request_row(r: &AnyRow) -> Result<RequestRow> {
    Ok(RequestRow {
        id: r.try_get("id")?,
        case_ref: r.try_get("case_ref")?,
        camera_ids: Vec::new(),
        start_us: r.try_get("start_us")?,
        end_us: r.try_get("end_us")?,
        reason: r.try_get("reason")?,
        requested_by: r.try_get("requested_by")?,
        requested_at_us: r.try_get("requested_at_us")?,
        state: r.try_get("state")?,
        decided_by: r.try_get("decided_by")?,
        decided_at_us: r.try_get("decided_at_us")?,
        decision_note: r.try_get("decision_note")?,
        expires_at_us: r.try_get("expires_at_us")?,
        closed_by: r.try_get("closed_by")?,
        closed_at_us: r.try_get("closed_at_us")?,
        close_reason: r.try_get("close_reason")?,
    })
}

fn export_row(r: &AnyRow) -> Result<ExportRow> {
    Ok(ExportRow {
        id: r.try_get("id")?,
        request_id: r.try_get("request_id")?,
        camera_id: r.try_get("camera_id")?,
        start_us: r.try_get("start_us")?,
        end_us: r.try_get("end_us")?,
        state: r.try_get("state")?,
        error: r.try_get("error")?,
        created_by: r.try_get("created_by")?,
        created_at_us: r.try_get("created_at_us")?,
        finished_at_us: r.try_get("finished_at_us")?,
        bytes: r.try_get("bytes")?,
        sha256: r.try_get("sha256")?,
        actual_start_us: r.try_get("actual_start_us")?,
        actual_end_us: r.try_get("actual_end_us")?,
        hold_id: r.try_get("hold_id")?,
    })
}

impl Db {
    /// Inserts a pending request and its cameras in one transaction; returns its id.
    pub async fn insert_evidence_request(&self, r: &RequestRow) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO evidence_requests (case_ref, start_us, end_us, reason, requested_by, requested_at_us, state)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending') RETURNING id",
        )
        .bind(&r.case_ref)
        .bind(r.start_us)
        .bind(r.end_us)
        .bind(&r.reason)
        .bind(&r.requested_by)
        .bind(r.requested_at_us)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        for c in &r.camera_ids {
            sqlx::query("INSERT INTO evidence_request_cameras (request_id, camera_id) VALUES ($1, $2)")
                .bind(id)
                .bind(c)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    async fn request_cameras(&self, id: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT camera_id FROM evidence_request_cameras WHERE request_id = $1 ORDER BY camera_id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("camera_id")?)).collect()
    }

    pub async fn evidence_request(&self, id: i64) -> Result<Option<RequestRow>> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {REQUEST_COLS} FROM evidence_requests WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = r.as_ref().map(request_row).transpose()? else { return Ok(None) };
        Ok(Some(RequestRow { camera_ids: self.request_cameras(id).await?, ..r }))
    }

    /// Every request, newest first; or only those filed by `requested_by`.
    pub async fn evidence_requests(&self, requested_by: Option<&str>) -> Result<Vec<RequestRow>> {
        let rows = match requested_by {
            Some(u) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {REQUEST_COLS} FROM evidence_requests WHERE requested_by = $1 ORDER BY id DESC"
                )))
                .bind(u)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {REQUEST_COLS} FROM evidence_requests ORDER BY id DESC")))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let r = request_row(r)?;
            out.push(RequestRow { camera_ids: self.request_cameras(r.id).await?, ..r });
        }
        Ok(out)
    }

    /// Approved (and not closed) requests of `requested_by` covering `camera` that have not
    /// expired at `now`: what an investigator may see.
    pub async fn approved_requests_for(&self, requested_by: &str, camera: &str, now: WallUs) -> Result<Vec<RequestRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLS} FROM evidence_requests r
             WHERE requested_by = $1 AND state = 'approved' AND expires_at_us > $2
               AND EXISTS (SELECT 1 FROM evidence_request_cameras c WHERE c.request_id = r.id AND c.camera_id = $3)
             ORDER BY id"
        )))
        .bind(requested_by)
        .bind(now)
        .bind(camera)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let r = request_row(r)?;
            out.push(RequestRow { camera_ids: self.request_cameras(r.id).await?, ..r });
        }
        Ok(out)
    }

    /// pending → approved | rejected, by `by`. False if the request was no longer pending
    /// (someone else decided first).
    pub async fn decide_evidence_request(
        &self,
        id: i64,
        state: &str,
        by: &str,
        at: WallUs,
        note: Option<&str>,
        expires_at: Option<WallUs>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE evidence_requests SET state = $1, decided_by = $2, decided_at_us = $3, decision_note = $4, expires_at_us = $5
             WHERE id = $6 AND state = 'pending'",
        )
        .bind(state)
        .bind(by)
        .bind(at)
        .bind(note)
        .bind(expires_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// approved → closed. False if it was not approved.
    pub async fn close_evidence_request(&self, id: i64, by: &str, at: WallUs, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE evidence_requests SET state = 'closed', closed_by = $1, closed_at_us = $2, close_reason = $3
             WHERE id = $4 AND state = 'approved'",
        )
        .bind(by)
        .bind(at)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn insert_evidence_export(&self, e: &ExportRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO evidence_exports (id, request_id, camera_id, start_us, end_us, state, created_by, created_at_us)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
        )
        .bind(&e.id)
        .bind(e.request_id)
        .bind(&e.camera_id)
        .bind(e.start_us)
        .bind(e.end_us)
        .bind(&e.created_by)
        .bind(e.created_at_us)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_export_hold(&self, id: &str, hold_id: i64) -> Result<()> {
        sqlx::query("UPDATE evidence_exports SET hold_id = $1 WHERE id = $2")
            .bind(hold_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// pending → ready, with what was written.
    pub async fn finish_export(
        &self,
        id: &str,
        at: WallUs,
        bytes: i64,
        sha256: &str,
        actual: (WallUs, WallUs),
    ) -> Result<()> {
        sqlx::query(
            "UPDATE evidence_exports SET state = 'ready', finished_at_us = $1, bytes = $2, sha256 = $3,
                    actual_start_us = $4, actual_end_us = $5
             WHERE id = $6 AND state = 'pending'",
        )
        .bind(at)
        .bind(bytes)
        .bind(sha256)
        .bind(actual.0)
        .bind(actual.1)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// pending → failed, with the reason.
    pub async fn fail_export(&self, id: &str, at: WallUs, error: &str) -> Result<()> {
        sqlx::query("UPDATE evidence_exports SET state = 'failed', finished_at_us = $1, error = $2 WHERE id = $3 AND state = 'pending'")
            .bind(at)
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn evidence_export(&self, id: &str) -> Result<Option<ExportRow>> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {EXPORT_COLS} FROM evidence_exports WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(export_row).transpose()
    }

    pub async fn evidence_exports_of(&self, request_id: i64) -> Result<Vec<ExportRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EXPORT_COLS} FROM evidence_exports WHERE request_id = $1 ORDER BY created_at_us, id"
        )))
        .bind(request_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(export_row).collect()
    }

    /// Exports left pending by a crash or a stop: they are failed at start-up (their
    /// partial files are removed by the caller).
    pub async fn pending_exports(&self) -> Result<Vec<ExportRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {EXPORT_COLS} FROM evidence_exports WHERE state = 'pending'")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(export_row).collect()
    }
}
