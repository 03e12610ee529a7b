//! Recording: frames from the hub become fragmented-MP4 segments in the spool, then
//! objects in storage with an index row each.
//!
//! Per camera, a [`Recorder`] collects one GOP in memory and writes it as one durable
//! fragment when the next keyframe arrives (so every frame's duration is known from
//! the RTP clock; on a direct file the write is asynchronous and its result taken at the
//! next batch, see [`spool`]), and closes the segment at the first keyframe after the target
//! length. Wall time is anchored at the first frame of each camera session and then
//! advanced by the RTP clock, slewed by at most 0.1 % toward the server clock so the
//! drift stays bounded without jumps; a drift beyond `max_drift` re-anchors the run.
//!
//! The spool full (or over its cap) is a decision, not an accident: new footage is
//! dropped at GOP granularity, the gap is recorded with cause `spool_full`, and nothing
//! already spooled or stored is ever evicted. Recording resumes at the first keyframe
//! after space returns.

mod aio;
pub mod fmp4;
pub mod spool;
pub mod uploader;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::capture::MainDb;
use crate::config::{RecordingConfig, SpoolConfig};
use crate::hub::{CameraHub, Frame, RecorderMsg, RecorderRx, StreamParams};
use crate::time::{now_us, ticks_to_us, WallUs, TICKS_PER_SEC};
use spool::{SegmentFile, SpooledSegment};
use uploader::SpoolStats;

/// Maximum slew of wall time toward the server clock: 1000 ppm of a segment's duration.
const MAX_SLEW_PPM: i64 = 1000;
/// Fallback duration of a run's very last frame, whose successor never came (25 fps).
const DEFAULT_FRAME_TICKS: u32 = 3600;

struct Open {
    file: SegmentFile,
    params: Arc<StreamParams>,
    /// RTP timestamp of the segment's first frame.
    start_ts: i64,
}

pub struct Recorder {
    hub: Arc<CameraHub>,
    db: MainDb,
    cfg: RecordingConfig,
    spool: SpoolConfig,
    spool_stats: Arc<SpoolStats>,
    done_tx: mpsc::Sender<SpooledSegment>,
    run_id: Option<String>,
    /// Wall time of the next segment's start, carried across segments of one run so that
    /// consecutive segments are contiguous.
    next_start: Option<WallUs>,
    open: Option<Open>,
    gop: Vec<Arc<Frame>>,
    /// Dropping footage because the spool is full; value: when it started.
    spool_full_since: Option<WallUs>,
    /// The capture thread's tick at which the write in flight was last looked at.
    write_looked_at: u64,
}

impl Recorder {
    pub fn new(
        hub: Arc<CameraHub>,
        db: MainDb,
        cfg: RecordingConfig,
        spool: SpoolConfig,
        spool_stats: Arc<SpoolStats>,
        done_tx: mpsc::Sender<SpooledSegment>,
    ) -> Self {
        Recorder {
            hub,
            db,
            cfg,
            spool,
            spool_stats,
            done_tx,
            run_id: None,
            next_start: None,
            open: None,
            gop: Vec::with_capacity(64),
            spool_full_since: None,
            write_looked_at: 0,
        }
    }

    /// Runs until ingest drops its sender (shutdown); the segment in progress is then
    /// closed and handed to the uploader.
    pub async fn run(mut self, mut rx: RecorderRx) {
        while let Some(msg) = rx.recv().await {
            match msg {
                RecorderMsg::RunStarted { run_id } => {
                    self.end_run().await;
                    self.run_id = Some(run_id);
                    self.next_start = None;
                }
                RecorderMsg::Frame(f) => self.on_frame(f).await,
                RecorderMsg::RunEnded { cause: _ } => self.end_run().await,
            }
        }
        self.end_run().await;
    }

    async fn on_frame(&mut self, f: Arc<Frame>) {
        if self.run_id.is_none() {
            return;
        }
        self.look_at_write().await;
        if self.gop.is_empty() && !f.is_key {
            // Before the first keyframe of a run (or after dropping): nothing decodable.
            if self.spool_full_since.is_some() {
                self.hub.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if f.is_key && !self.gop.is_empty() {
            self.flush_gop(Some(&f)).await;
        }
        if f.is_key {
            if !self.spool_has_room().await {
                self.hub.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.maybe_cut(&f).await;
        }
        if self.open.is_some() {
            self.gop.push(f);
        } else {
            self.hub.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// At a keyframe: closes the open segment if it is long enough, the codec
    /// parameters changed, or the clocks drifted apart; opens one if none is open.
    async fn maybe_cut(&mut self, key: &Arc<Frame>) {
        if let Some(open) = &self.open {
            let elapsed = key.ts_90k - open.start_ts;
            let long_enough = elapsed >= self.cfg.segment_duration.as_secs() as i64 * TICKS_PER_SEC;
            let params_changed = open.params != key.params;
            let rtp_wall = open.file.start_us() + ticks_to_us(elapsed);
            let drift = key.arrival_us - rtp_wall;
            self.hub.stats.drift_us.store(drift, Ordering::Relaxed);
            let drifted = drift.abs() > self.cfg.max_drift.as_micros() as i64;
            if long_enough || params_changed || drifted {
                self.close_segment(key.ts_90k, Some(drift)).await;
                if drifted {
                    warn!(camera = %self.hub.id(), drift_ms = drift / 1000, "camera clock drifted; re-anchoring");
                    self.event(
                        "clock_drift",
                        &format!("camera RTP clock drifted {} ms from server clock; re-anchored", drift / 1000),
                    )
                    .await;
                    self.next_start = None;
                }
            }
        }
        if self.open.is_none() {
            let start = self.next_start.unwrap_or(key.arrival_us);
            let run_id = self.run_id.clone().unwrap_or_default();
            let (dir, cam, params) = (self.spool.dir.clone(), self.hub.id().clone(), key.params.clone());
            let created = tokio::task::spawn_blocking(move || {
                let created = SegmentFile::create(&dir, &cam, start, &run_id, &params);
                crate::capture::hurry();
                created
            })
            .await
            .expect("spool task panicked");
            match created {
                Ok(file) => {
                    self.hub.stats.open_segment_start_us.store(start, Ordering::Relaxed);
                    self.open = Some(Open { file, params: key.params.clone(), start_ts: key.ts_90k });
                    self.next_start = Some(start);
                }
                Err(e) => self.spool_failed(e).await,
            }
        }
    }

    /// Writes the collected GOP as one fragment. `next` is the frame that follows it
    /// (gives the last frame's duration); without one the previous duration is reused.
    async fn flush_gop(&mut self, next: Option<&Arc<Frame>>) {
        let Some(mut open) = self.open.take() else {
            self.gop.clear();
            return;
        };
        let frames = std::mem::take(&mut self.gop);
        let mut durations = Vec::with_capacity(frames.len());
        for w in frames.windows(2) {
            durations.push(clamp_duration(w[1].ts_90k - w[0].ts_90k));
        }
        let last = match next {
            Some(n) => clamp_duration(n.ts_90k - frames[frames.len() - 1].ts_90k),
            None => durations.last().copied().unwrap_or(DEFAULT_FRAME_TICKS),
        };
        durations.push(last);
        // The previous fragment's write finished long ago, normally (a GOP ago).
        let mut res = settle(&mut open.file).await;
        if res.is_ok() && open.file.is_async() {
            match open.file.submit_fragment(&frames, &durations) {
                Ok(true) => {
                    self.reuse_gop(frames);
                    self.open = Some(open);
                    self.write_looked_at = crate::capture::ticks();
                    return;
                }
                Ok(false) => {}
                Err(e) => res = Err(e),
            }
        }
        let (res, open, frames) = match res {
            Ok(()) => {
                tokio::task::spawn_blocking(move || {
                    let r = open.file.append_fragment(&frames, &durations);
                    (r, open, frames)
                })
                .await
                .expect("spool task panicked")
            }
            Err(e) => (Err(e), open, frames),
        };
        self.reuse_gop(frames);
        self.open = Some(open);
        if let Err(e) = res {
            self.spool_failed(e).await;
        }
    }

    /// Once per tick of the capture thread while a fragment's write is in flight: takes
    /// its result if it has come (normally at the first tick after the write), so its
    /// buffer goes back to the pool and a failure is acted on now, not a GOP later.
    async fn look_at_write(&mut self) {
        let Some(open) = self.open.as_mut().filter(|o| o.file.writing()) else { return };
        let tick = crate::capture::ticks();
        if tick == self.write_looked_at {
            return;
        }
        self.write_looked_at = tick;
        if let Err(e) = open.file.settle(std::time::Duration::ZERO) {
            self.spool_failed(e).await;
        }
    }

    fn reuse_gop(&mut self, mut frames: Vec<Arc<Frame>>) {
        frames.clear();
        self.gop = frames; // reuse the allocation
    }

    /// Nothing is being written for this camera any more (the run ended, or footage is
    /// being dropped): called after the last segment's index row is written.
    fn no_segment_in_progress(&self) {
        self.hub.stats.open_segment_start_us.store(0, Ordering::Relaxed);
    }

    /// Closes the open segment; `end_ts` is the RTP time where it ends.
    async fn close_segment(&mut self, end_ts: i64, drift: Option<i64>) {
        let Some(mut open) = self.open.take() else { return };
        // `open_segment_start_us` keeps this segment's start until its index row is
        // written (and the next segment opens, or the run ends): coverage and the
        // recordings API read it before the index, so the footage is never in neither.
        let drift = drift.unwrap_or(0);
        let (settled, end, res) = tokio::task::spawn_blocking(move || {
            // The last fragment's write may still be in flight. If it fails, its
            // fragment is taken back and the segment ends where its footage does.
            let settled = open.file.settle_wait();
            let end_ts = if settled.is_ok() { end_ts } else { open.start_ts };
            let start = open.file.start_us();
            let rtp_elapsed = ticks_to_us(end_ts - open.start_ts).max(ticks_to_us(open.file.duration_90k() as i64));
            let max_slew = rtp_elapsed * MAX_SLEW_PPM / 1_000_000;
            let end = start + rtp_elapsed + drift.clamp(-max_slew, max_slew);
            let finished = open.file.finish(end, drift);
            crate::capture::hurry();
            (settled, end, finished)
        })
        .await
        .expect("spool task panicked");
        self.next_start = Some(end);
        if let Err(e) = settled {
            // Footage is missing before the next segment: it starts on its own time.
            self.note_spool_failure(e).await;
            self.next_start = None;
        }
        match res {
            Ok(Some(seg)) => {
                self.hub.stats.segments.fetch_add(1, Ordering::Relaxed);
                self.spool_stats.add(seg.row.bytes as u64);
                if let Err(e) = self.db.upsert_segment(&seg.row).await {
                    // The uploader writes the row again before it deletes the spool copy.
                    warn!(camera = %self.hub.id(), "index row for {} deferred: {e}", seg.row.object_key);
                }
                if self.done_tx.send(seg).await.is_err() {
                    error!(camera = %self.hub.id(), "uploader gone; segment stays in the spool for the next start");
                }
            }
            Ok(None) => {}
            Err(e) => {
                // The file keeps its complete fragments; recovery finishes it at the next start.
                error!(camera = %self.hub.id(), "cannot finish spooled segment: {e}");
                self.event("spool_error", &format!("cannot finish spooled segment: {e}")).await;
            }
        }
    }

    async fn end_run(&mut self) {
        if !self.gop.is_empty() {
            self.flush_gop(None).await;
        }
        if let Some(open) = &self.open {
            let end_ts = open.start_ts + open.file.duration_90k() as i64;
            self.close_segment(end_ts, None).await;
        }
        self.no_segment_in_progress();
        self.run_id = None;
        self.next_start = None;
    }

    /// Checks the spool has room for another GOP; records the start and end of a
    /// spool-full period as events (the cause of the gap).
    async fn spool_has_room(&mut self) -> bool {
        let free = spool::free_bytes(&self.spool.dir).unwrap_or(u64::MAX);
        let over_cap = self.spool.max_bytes.is_some_and(|m| self.spool_stats.bytes() >= m);
        let full = free < self.spool.min_free_bytes || over_cap;
        match (full, self.spool_full_since) {
            (true, None) => {
                self.spool_full_since = Some(now_us());
                self.hub.stats.spool_full_since_us.store(now_us(), Ordering::Relaxed);
                let why = if over_cap { "spool backlog cap reached" } else { "spool disk below its free-space reserve" };
                error!(camera = %self.hub.id(), free, "{why}: dropping new footage until space returns");
                if let Some(open) = &self.open {
                    let end_ts = open.start_ts + open.file.duration_90k() as i64;
                    self.gop.clear();
                    self.close_segment(end_ts, None).await;
                }
                self.no_segment_in_progress();
                self.next_start = None;
                self.event("spool_full", &format!("{why} ({free} bytes free); new footage dropped")).await;
            }
            (false, Some(_)) => {
                self.spool_full_since = None;
                self.hub.stats.spool_full_since_us.store(0, Ordering::Relaxed);
                info!(camera = %self.hub.id(), "spool has room again; recording resumes");
                self.event("spool_ok", "spool has room again; recording resumes").await;
            }
            _ => {}
        }
        !full
    }

    async fn spool_failed(&mut self, e: std::io::Error) {
        self.note_spool_failure(e).await;
        self.gop.clear();
        if let Some(open) = &self.open {
            let end_ts = open.start_ts + open.file.duration_90k() as i64;
            self.close_segment(end_ts, None).await;
        }
        self.no_segment_in_progress();
        self.next_start = None;
    }

    async fn note_spool_failure(&mut self, e: std::io::Error) {
        error!(camera = %self.hub.id(), "spool write failed: {e}");
        self.event("spool_full", &format!("spool write failed: {e}")).await;
        let since = *self.spool_full_since.get_or_insert_with(now_us);
        self.hub.stats.spool_full_since_us.store(since, Ordering::Relaxed);
    }

    async fn event(&self, kind: &str, detail: &str) {
        if let Err(e) = self.db.insert_event(Some(self.hub.id().as_str()), now_us(), kind, detail).await {
            warn!(camera = %self.hub.id(), "cannot record event {kind}: {e}");
        }
    }
}

/// How often a recorder looks again for a fragment's write that has not finished when
/// the next one is due (on the capture thread such sleeps end at the next tick).
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Takes the result of `file`'s write in flight, waiting for it without blocking the
/// thread.
async fn settle(file: &mut SegmentFile) -> std::io::Result<()> {
    while !file.settle(std::time::Duration::ZERO)? {
        tokio::time::sleep(SETTLE_POLL).await;
    }
    Ok(())
}

/// A frame duration from an RTP timestamp difference; a camera that repeats or jumps
/// its timestamps must not produce a zero or absurd sample duration.
fn clamp_duration(ticks: i64) -> u32 {
    if ticks <= 0 || ticks > 10 * TICKS_PER_SEC {
        DEFAULT_FRAME_TICKS
    } else {
        ticks as u32
    }
}

