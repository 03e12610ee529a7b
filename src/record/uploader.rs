//! The uploader drains the spool into object storage, oldest segment first.
//!
//! Order of a segment's commit: put the object (durable when `put` returns) → mark the
//! index row `stored` → delete the spool copy. A crash between any two steps repeats
//! the later ones at the next start (puts are idempotent under the same key), so no
//! completed segment is ever lost. When storage is down, uploads retry with capped
//! backoff forever; the backlog (count and bytes) is visible in /metrics and the API.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::spool::SpooledSegment;
use crate::db::Db;
use crate::storage::Storage;
use crate::time::now_us;

/// Uploads in flight at once: enough to hide S3 latency, few enough not to flood the
/// link (each maps one segment, ~30 MB for a minute at 4 Mbit/s).
const CONCURRENCY: usize = 4;
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// With nothing to retry or drain, the longest the uploader sleeps between looks.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// Spool backlog and upload counters, shared with recorders and /metrics.
#[derive(Default, Debug)]
pub struct SpoolStats {
    segments: AtomicU64,
    bytes: AtomicU64,
    pub uploaded_segments: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    pub upload_failures: AtomicU64,
    /// Sum and count of upload latencies, for a Prometheus summary.
    pub upload_latency_us_sum: AtomicU64,
    pub upload_latency_count: AtomicU64,
    /// When storage last failed (0: healthy).
    pub failing_since_us: AtomicI64,
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl SpoolStats {
    pub fn add(&self, bytes: u64) {
        self.segments.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn remove(&self, bytes: u64) {
        self.segments.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
    pub fn segments(&self) -> u64 {
        self.segments.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

pub struct Uploader {
    pub storage: Storage,
    pub db: Db,
    pub stats: Arc<SpoolStats>,
    /// How long to keep draining after the recorders have stopped (shutdown).
    pub drain_deadline: Duration,
}

impl Uploader {
    /// Runs until `rx` is closed (all recorders finished) and the queue is empty, or the
    /// drain deadline passes after that; what is left stays in the spool for next start.
    pub async fn run(self, recovered: Vec<SpooledSegment>, mut rx: mpsc::Receiver<SpooledSegment>) {
        let mut queue: VecDeque<SpooledSegment> = VecDeque::new();
        for seg in recovered {
            self.stats.add(seg.row.bytes as u64);
            queue.push_back(seg);
        }
        let mut inflight: JoinSet<(SpooledSegment, Result<Duration, String>)> = JoinSet::new();
        let mut closed_at: Option<Instant> = None;
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut backoff = RETRY_MIN;
        loop {
            let may_start = retry_at.is_none_or(|t| tokio::time::Instant::now() >= t);
            while may_start && inflight.len() < CONCURRENCY {
                let Some(seg) = queue.pop_front() else { break };
                let (storage, db) = (self.storage.clone(), self.db.clone());
                inflight.spawn(async move {
                    let r = upload_one(&storage, &db, &seg).await;
                    (seg, r)
                });
            }
            if closed_at.is_some() && queue.is_empty() && inflight.is_empty() {
                info!("spool drained");
                return;
            }
            if let Some(t) = closed_at {
                if t.elapsed() >= self.drain_deadline {
                    warn!(left = queue.len() + inflight.len(), "drain deadline passed; the rest stays in the spool");
                    return;
                }
            }
            // Wakes for a retry or the drain deadline, whichever comes first (a retry
            // backoff must not carry a shutdown past its deadline); otherwise only a
            // segment or a finished upload wakes it (an idle uploader costs nothing).
            let deadline = closed_at.map(|closed| tokio::time::Instant::from_std(closed + self.drain_deadline));
            let sleep_until = match (retry_at, deadline) {
                (Some(t), Some(d)) => t.min(d),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => tokio::time::Instant::now() + IDLE_WAKE,
            };
            tokio::select! {
                item = rx.recv(), if closed_at.is_none() => match item {
                    Some(seg) => queue.push_back(seg),
                    None => closed_at = Some(Instant::now()),
                },
                Some(done) = inflight.join_next() => {
                    let (seg, res) = done.expect("upload task panicked");
                    match res {
                        Ok(latency) => {
                            self.stats.remove(seg.row.bytes as u64);
                            self.stats.uploaded_segments.fetch_add(1, Ordering::Relaxed);
                            self.stats.uploaded_bytes.fetch_add(seg.row.bytes as u64, Ordering::Relaxed);
                            self.stats.upload_latency_us_sum.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
                            self.stats.upload_latency_count.fetch_add(1, Ordering::Relaxed);
                            let since = self.stats.failing_since_us.swap(0, Ordering::Relaxed);
                            if since != 0 {
                                info!("storage reachable again; draining backlog of {} segments", queue.len());
                                self.event("storage_ok", &format!("storage reachable again; backlog {} segments", self.stats.segments())).await;
                            }
                            backoff = RETRY_MIN;
                            retry_at = None;
                        }
                        Err(e) => {
                            self.stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                            *self.stats.last_error.lock().unwrap() = Some(e.clone());
                            if self.stats.failing_since_us.load(Ordering::Relaxed) == 0 {
                                self.stats.failing_since_us.store(now_us(), Ordering::Relaxed);
                                warn!("upload of {} failed: {e}; footage stays in the spool and is retried", seg.row.object_key);
                                self.event("storage_error", &e).await;
                            }
                            // Keep order: the failed segment goes back to the front.
                            queue.push_front(seg);
                            retry_at = Some(tokio::time::Instant::now() + backoff);
                            backoff = (backoff * 2).min(RETRY_MAX);
                        }
                    }
                },
                _ = tokio::time::sleep_until(sleep_until) => {}
            }
        }
    }

    async fn event(&self, kind: &str, detail: &str) {
        if let Err(e) = self.db.insert_event(None, now_us(), kind, detail).await {
            warn!("cannot record event {kind}: {e}");
        }
    }
}

async fn upload_one(storage: &Storage, db: &Db, seg: &SpooledSegment) -> Result<Duration, String> {
    let path = &seg.path;
    let started = Instant::now();
    storage
        .put_file(&seg.row.object_key, path, &seg.row.sha256)
        .await
        .map_err(|e| format!("uploading {} to {}: {e}", seg.row.object_key, storage.description))?;
    let latency = started.elapsed();
    // The row may be missing (recovered segment, or the recorder's insert failed).
    db.upsert_segment(&seg.row).await.map_err(|e| format!("indexing {}: {e}", seg.row.object_key))?;
    db.mark_stored(&seg.row.object_key, now_us()).await.map_err(|e| format!("indexing {}: {e}", seg.row.object_key))?;
    tokio::fs::remove_file(&path).await.map_err(|e| format!("removing spool copy {}: {e}", path.display()))?;
    Ok(latency)
}
