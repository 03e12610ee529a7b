//! The sweeper: deletes segments whose end is older than their camera's retention and
//! that overlap no active legal hold, from the object store and the index.
//!
//! **Cost follows what expires, not what is kept.** Cameras are found by a skip-scan
//! (one index probe each); per camera, the active holds cut the time line before the
//! cutoff into deletable spans, and each span is read by a range scan of the
//! (camera_id, start_us) index, `LIMIT batch`. A sweep with nothing expired costs a
//! few statements per camera whatever the size of the archive (bench/results/sweep.md).
//!
//! **Crash safety.** Each batch is three statements and one multi-object delete:
//! (a) one `UPDATE … SET state = 'deleting' … RETURNING` marks the batch's rows;
//! (b) the objects are deleted (S3 `DeleteObjects`, up to 1000 keys per request; a
//! key already gone counts as deleted); (c) the rows still `deleting` are deleted.
//! Every sweep starts by finishing rows a previous one left `deleting` (it crashed
//! between (a) and (c), or storage failed): their objects are deleted again, then
//! their rows. So a crash at any point leaves neither a row without its object that
//! anyone would take for footage (it says `deleting`) nor an object without its row
//! for long (rows go only after their objects). Rows a hold placed in the meantime
//! now covers go back to `stored` instead.
//!
//! **Defence in depth.** The statements themselves refuse rows younger than the
//! policy floor and rows under an active hold (see [`crate::db::retention`]), and
//! never touch `spooled` rows, whatever cutoff this module computed.
//!
//! Every run that is not a dry run appends one `retention_deleted` audit entry with
//! its counts, also when it fails part-way (what was deleted until then is recorded).
//! `now` is a parameter: tests sweep a simulated archive at a simulated time.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;
use tracing::{info, warn};

use super::{cutoff, Actor, RetentionPolicy};
use crate::audit::{self, Action, NewEntry};
use crate::db::retention::SweepRow;
use crate::db::{Db, DbError};
use crate::storage::{Storage, StorageError};
use crate::time::{format_rfc3339, WallUs};

/// S3 deletes at most 1000 keys per request.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The request asks for fewer days than the policy allows; nothing was deleted.
    #[error("{0}")]
    Refused(String),
    #[error("index: {0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("cameras table: {0}")]
    Cameras(String),
    /// A [`SweepFault`] stopped the run (tests only).
    #[error("sweep stopped by the test fault {0:?}")]
    Fault(SweepFault),
}

/// For tests only: stop a sweep as if the process died at this point of batch `batch`
/// (1-based, counted over the whole run), leaving the database and the bucket exactly
/// as a crash would. No audit entry is written (a dead process writes none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepFault {
    /// After the batch's rows were marked `deleting`, before any object was deleted.
    AfterMark { batch: usize },
    /// After the batch's objects were deleted, before its rows were.
    AfterObjectDelete { batch: usize },
}

#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    /// Delete nothing; report what would go.
    pub dry_run: bool,
    /// Keep at least this many days in this run. Refused below the floor or below
    /// `[retention] days`: a sweep may keep more than the policy, never less.
    pub older_than_days: Option<u32>,
    /// Segments per batch (1..=1000); `[retention] sweep_batch` when `None`.
    pub batch: Option<usize>,
    /// For tests only: see [`SweepFault`].
    pub fault: Option<SweepFault>,
}

/// One camera's part of a sweep.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CameraSweep {
    pub retention_days: u32,
    /// Segments ending at or before this instant expire.
    pub cutoff: String,
    /// Segments deleted (a dry run: that would be deleted).
    pub deleted_segments: u64,
    pub deleted_bytes: u64,
    /// Starts of the oldest and newest segments deleted.
    pub first_deleted: Option<String>,
    pub last_deleted: Option<String>,
    /// Expired segments kept because an active legal hold covers them.
    pub held_kept_segments: u64,
    /// Start of the camera's oldest segment after the sweep.
    pub oldest_remaining: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SweepReport {
    pub dry_run: bool,
    pub now: String,
    pub floor_days: u32,
    /// Nothing ending after this instant (now − floor) can be deleted.
    pub floor_cutoff: String,
    pub deleted_segments: u64,
    pub deleted_bytes: u64,
    pub held_kept_segments: u64,
    /// Rows a crashed or failed earlier sweep left `deleting`, finished by this one
    /// (included in `deleted_segments`).
    pub recovered_segments: u64,
    /// Rows left `deleting` that a hold placed since covers: back to `stored`.
    pub unmarked_segments: u64,
    pub batches: u64,
    /// SQL statements this run issued.
    pub statements: u64,
    /// Multi-object delete calls to the object store.
    pub object_delete_calls: u64,
    pub duration_ms: u64,
    pub cameras: BTreeMap<String, CameraSweep>,
}

/// Sweeps the index and storage at `now` under `policy`. See the module docs.
pub async fn sweep(
    db: &Db,
    storage: &Storage,
    policy: &RetentionPolicy,
    now: WallUs,
    opts: &SweepOptions,
    who: &Actor,
) -> Result<SweepReport, SweepError> {
    if let Some(d) = opts.older_than_days {
        policy.check_request(d).map_err(SweepError::Refused)?;
    }
    let started = Instant::now();
    let floor_cutoff = cutoff(now, policy.floor_days);
    let mut run = Run {
        db,
        storage,
        floor_cutoff,
        batch_size: opts.batch.unwrap_or(MAX_BATCH).clamp(1, MAX_BATCH),
        dry_run: opts.dry_run,
        fault: opts.fault,
        pending: Vec::new(),
        report: SweepReport {
            dry_run: opts.dry_run,
            now: format_rfc3339(now),
            floor_days: policy.floor_days,
            floor_cutoff: format_rfc3339(floor_cutoff),
            ..Default::default()
        },
    };
    let result = run.go(policy, now, opts.older_than_days.unwrap_or(0)).await;
    let mut report = run.report;
    report.duration_ms = started.elapsed().as_millis() as u64;
    if let Err(SweepError::Fault(_)) = result {
        return Err(result.unwrap_err());
    }
    if !opts.dry_run {
        let mut detail = serde_json::to_value(&report).expect("report serialises");
        detail["completed"] = result.is_ok().into();
        if let Err(e) = &result {
            detail["error"] = e.to_string().into();
        }
        let entry = NewEntry {
            actor: Some(who.name.clone()),
            actor_role: who.role.clone(),
            action: Action::RetentionDeleted,
            target: Some("segments".into()),
            addr: who.addr.clone(),
            detail,
        };
        if let Err(e) = audit::append(db, entry).await {
            warn!("sweep: cannot audit the run: {e}");
            result?;
            return Err(e.into());
        }
        if report.deleted_segments > 0 || result.is_err() {
            info!(
                segments = report.deleted_segments,
                bytes = report.deleted_bytes,
                held = report.held_kept_segments,
                ms = report.duration_ms,
                "sweep: expired footage deleted{}",
                result.as_ref().err().map(|e| format!(" (stopped: {e})")).unwrap_or_default()
            );
        }
    }
    result.map(|()| report)
}

struct Run<'a> {
    db: &'a Db,
    storage: &'a Storage,
    floor_cutoff: WallUs,
    batch_size: usize,
    dry_run: bool,
    fault: Option<SweepFault>,
    /// Rows chosen for the next batch (several cameras may share one).
    pending: Vec<SweepRow>,
    report: SweepReport,
}

impl Run<'_> {
    async fn go(&mut self, policy: &RetentionPolicy, now: WallUs, at_least_days: u32) -> Result<(), SweepError> {
        if !self.dry_run {
            self.finish_leftovers().await?;
        }
        let holds = self.db.list_holds(true).await?;
        self.report.statements += 1;
        let mut spans: HashMap<&str, Vec<(WallUs, WallUs)>> = HashMap::new();
        for h in &holds {
            spans.entry(h.camera_id.as_str()).or_default().push((h.start_us, h.end_us));
        }
        let cameras = self.db.indexed_camera_ids().await?;
        self.report.statements += 1;
        for camera in &cameras {
            let days = policy.days_for(camera).max(at_least_days);
            // The floor cutoff bounds every camera's even if a policy were wrong.
            let cut = cutoff(now, days).min(self.floor_cutoff);
            let held = merge(spans.remove(camera.as_str()).unwrap_or_default());
            // The entry may exist already: rows an earlier sweep left were finished above.
            let entry = self.report.cameras.entry(camera.clone()).or_default();
            entry.retention_days = days;
            entry.cutoff = format_rfc3339(cut);
            let mut from = WallUs::MIN;
            for &(hs, he) in &held {
                if from > cut {
                    break;
                }
                let to = cut.min(hs.saturating_sub(1));
                if to >= from {
                    self.scan(camera, from, to).await?;
                }
                from = he.saturating_add(1);
            }
            if from <= cut {
                self.scan(camera, from, cut).await?;
            }
            let mut kept = 0;
            for &(hs, he) in held.iter().filter(|(hs, _)| *hs <= cut) {
                kept += self.db.count_expired_overlapping(camera, hs, he, cut).await?;
                self.report.statements += 1;
            }
            self.report.cameras.get_mut(camera).expect("inserted above").held_kept_segments = kept as u64;
            self.report.held_kept_segments += kept as u64;
        }
        self.flush().await?;
        for camera in &cameras {
            let oldest = self.db.oldest_segment_start(camera).await?;
            self.report.statements += 1;
            self.report.cameras.get_mut(camera).expect("inserted above").oldest_remaining = oldest.map(format_rfc3339);
        }
        Ok(())
    }

    /// Queues the stored segments of `camera` with start and end in `[from, to]`,
    /// flushing full batches as it goes.
    async fn scan(&mut self, camera: &str, mut from: WallUs, to: WallUs) -> Result<(), SweepError> {
        loop {
            let want = self.batch_size - self.pending.len();
            let rows = self.db.expired_between(camera, from, to, want).await?;
            self.report.statements += 1;
            let got = rows.len();
            if let Some(last) = rows.last() {
                // Past the last row read: rows the batch's guards refuse are not read again.
                from = last.start_us + 1;
            }
            self.pending.extend(rows);
            if self.pending.len() >= self.batch_size {
                self.flush().await?;
            }
            if got < want {
                return Ok(());
            }
        }
    }

    /// Deletes the pending batch: mark, delete objects, delete rows.
    async fn flush(&mut self) -> Result<(), SweepError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.report.batches += 1;
        let n = self.report.batches as usize;
        if self.dry_run {
            self.count_deleted(&batch);
            return Ok(());
        }
        let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
        let marked = self.db.mark_deleting(&ids, self.floor_cutoff).await?;
        self.report.statements += 1;
        if marked.len() < batch.len() {
            warn!(
                "sweep: {} of {} segments were not marked (a hold placed meanwhile, or another sweep took them)",
                batch.len() - marked.len(),
                batch.len()
            );
        }
        self.crash_here(SweepFault::AfterMark { batch: n })?;
        // A hold placed since the rows were chosen wins: check again, under the gate
        // that `place_hold` waits on, right before the objects go. (A hold placed by
        // another process — the CLI — can still slip into this short window; the
        // reconciler then reports the footage missing rather than losing it silently.)
        let gate = super::HOLD_GATE.read().await;
        let back = self.db.unmark_protected(self.floor_cutoff).await?;
        self.report.statements += 1;
        let marked: Vec<SweepRow> = if back.is_empty() {
            marked
        } else {
            warn!("sweep: {} marked segments are now under a legal hold and are kept", back.len());
            marked.into_iter().filter(|m| !back.iter().any(|b| b.id == m.id)).collect()
        };
        self.delete_objects(&marked).await?;
        drop(gate);
        self.crash_here(SweepFault::AfterObjectDelete { batch: n })?;
        self.delete_rows(&marked).await?;
        Ok(())
    }

    fn crash_here(&self, at: SweepFault) -> Result<(), SweepError> {
        if self.fault == Some(at) {
            return Err(SweepError::Fault(at));
        }
        Ok(())
    }

    /// Step (b).
    async fn delete_objects(&mut self, rows: &[SweepRow]) -> Result<(), SweepError> {
        if rows.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = rows.iter().map(|r| r.object_key.clone()).collect();
        self.storage.delete_many(&keys).await?;
        self.report.object_delete_calls += keys.len().div_ceil(MAX_BATCH) as u64;
        Ok(())
    }

    /// Step (c); answers how many rows went.
    async fn delete_rows(&mut self, rows: &[SweepRow]) -> Result<usize, SweepError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let deleted = self.db.delete_marked(&ids, self.floor_cutoff).await?;
        self.report.statements += 1;
        self.count_deleted(&deleted);
        Ok(deleted.len())
    }

    /// Finishes what an earlier sweep left `deleting`.
    async fn finish_leftovers(&mut self) -> Result<(), SweepError> {
        let back = self.db.unmark_protected(self.floor_cutoff).await?;
        self.report.statements += 1;
        if !back.is_empty() {
            warn!(
                "sweep: {} segments marked for deletion by an earlier sweep are kept (now under a legal hold); \
                 any whose object was already deleted will be reported missing by the reconciler",
                back.len()
            );
            self.report.unmarked_segments = back.len() as u64;
        }
        loop {
            let rows = self.db.leftover_deleting(self.floor_cutoff, self.batch_size).await?;
            self.report.statements += 1;
            if rows.is_empty() {
                return Ok(());
            }
            // Not a numbered batch: a fault aimed at batch N stays aimed at the Nth new one.
            self.delete_objects(&rows).await?;
            let deleted = self.delete_rows(&rows).await?;
            self.report.recovered_segments += deleted as u64;
            if deleted == 0 {
                // Another process is finishing them; do not spin.
                return Ok(());
            }
        }
    }

    fn count_deleted(&mut self, rows: &[SweepRow]) {
        for r in rows {
            self.report.deleted_segments += 1;
            self.report.deleted_bytes += r.bytes.max(0) as u64;
            let c = self.report.cameras.entry(r.camera_id.clone()).or_default();
            c.deleted_segments += 1;
            c.deleted_bytes += r.bytes.max(0) as u64;
            let start = format_rfc3339(r.start_us);
            // RFC 3339 with fixed width and `Z` sorts as time does.
            if c.first_deleted.as_ref().is_none_or(|f| &start < f) {
                c.first_deleted = Some(start.clone());
            }
            if c.last_deleted.as_ref().is_none_or(|l| &start > l) {
                c.last_deleted = Some(start);
            }
        }
    }
}

/// Sorted, overlapping or touching spans merged.
fn merge(mut spans: Vec<(WallUs, WallUs)>) -> Vec<(WallUs, WallUs)> {
    spans.sort_unstable();
    let mut out: Vec<(WallUs, WallUs)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_merge_when_they_overlap_or_touch() {
        assert_eq!(merge(vec![(10, 20), (0, 5), (6, 8), (15, 30), (40, 41)]), vec![(0, 8), (10, 30), (40, 41)]);
        assert_eq!(merge(vec![]), vec![]);
    }
}
