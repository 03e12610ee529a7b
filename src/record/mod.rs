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

/// A spool write failed (the disk full despite the reserve: another writer, or no
/// reserve configured; or an I/O error): new footage is dropped until the spool's file
/// system has [`RETRY_FREED`] more free than at the failure (uploads drained it), or
/// until `wait` has passed. Retrying at every keyframe would fail every GOP and write a
/// `spool_full` and a `spool_ok` event each time, all day.
struct Retry {
    free: u64,
    at: std::time::Instant,
    wait: std::time::Duration,
}

const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(10);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(300);
const RETRY_FREED: u64 = 16 << 20;

/// The first segment of a run (or of a re-anchored one), before its file exists.
///
/// A run's wall time is anchored at its first keyframe, and every later segment follows
/// from it by the RTP clock (slewed by at most 0.1 %). But the first frames of a session
/// are the ones most likely to be read late: the camera's encoder starting up, the
/// server busy (a login's password hash, other cameras connecting). Read 0.6 s late, the
/// keyframe would date the whole run 0.6 s late, for ten minutes of slewing. Each frame
/// of the first GOP is another reading of the same anchor (its arrival less its RTP
/// time since the keyframe), and a frame is read late, never early: the earliest
/// reading is the best.
struct Pending {
    params: Arc<StreamParams>,
    start_ts: i64,
    /// The earliest reading so far of the keyframe's arrival.
    start: WallUs,
    /// The keyframe's own reading, for the log.
    first: WallUs,
}

impl Pending {
    fn read(&mut self, f: &Frame) {
        self.start = self.start.min(f.arrival_us - ticks_to_us(f.ts_90k - self.start_ts));
    }
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
    /// A run's first segment, held back until its first GOP is complete so that its
    /// start can be dated by the whole GOP rather than by the first keyframe alone.
    pending: Option<Pending>,
    /// Dropping footage because the spool is full; value: when it started.
    spool_full_since: Option<WallUs>,
    /// After a spool write failed: when to try again (see [`Retry`]).
    retry: Option<Retry>,
    /// The wait after the next failure: doubles while writes keep failing.
    retry_wait: std::time::Duration,
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
            pending: None,
            gop: Vec::with_capacity(64),
            spool_full_since: None,
            retry: None,
            retry_wait: RETRY_FIRST,
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
        if let Some(p) = &mut self.pending {
            p.read(&f);
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
        if self.open.is_some() || self.pending.is_some() {
            self.gop.push(f);
        } else {
            self.hub.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// At a keyframe: closes the open segment if it is long (or large) enough, the codec
    /// parameters changed, or the clocks drifted apart; opens one if none is open.
    async fn maybe_cut(&mut self, key: &Arc<Frame>) {
        if let Some(open) = &self.open {
            let elapsed = key.ts_90k - open.start_ts;
            let long_enough = elapsed >= self.cfg.segment_duration.as_secs() as i64 * TICKS_PER_SEC
                || open.file.bytes() >= self.cfg.segment_max_bytes;
            let params_changed = open.params != key.params;
            let rtp_wall = open.file.start_us() + ticks_to_us(elapsed);
            let drift = key.arrival_us - rtp_wall;
            self.hub.stats.drift_us.store(drift, Ordering::Relaxed);
            let drifted = drift.abs() > self.cfg.max_drift.as_micros() as i64;
            if long_enough || params_changed || drifted {
                if long_enough {
                    // A whole segment written: the next failure is a new episode.
                    self.retry_wait = RETRY_FIRST;
                }
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
            match self.next_start {
                Some(start) => self.open_segment(start, key.params.clone(), key.ts_90k).await,
                None => {
                    // Shown as recording from the keyframe's own reading until the GOP ends.
                    self.hub.stats.open_segment_start_us.store(key.arrival_us, Ordering::Relaxed);
                    self.pending = Some(Pending {
                        params: key.params.clone(),
                        start_ts: key.ts_90k,
                        start: key.arrival_us,
                        first: key.arrival_us,
                    });
                }
            }
        }
    }

    /// Creates the segment file that starts at `start` (wall) and `start_ts` (RTP).
    async fn open_segment(&mut self, start: WallUs, params: Arc<StreamParams>, start_ts: i64) {
        let run_id = self.run_id.clone().unwrap_or_default();
        let (dir, cam, p) = (self.spool.dir.clone(), self.hub.id().clone(), params.clone());
        let created = tokio::task::spawn_blocking(move || {
            let created = SegmentFile::create(&dir, &cam, start, &run_id, &p);
            crate::capture::hurry();
            created
        })
        .await
        .expect("spool task panicked");
        match created {
            Ok(file) => {
                self.hub.stats.open_segment_start_us.store(start, Ordering::Relaxed);
                self.open = Some(Open { file, params, start_ts });
                self.next_start = Some(start);
            }
            Err(e) => self.spool_failed(e).await,
        }
    }

    /// Writes the collected GOP as one fragment. `next` is the frame that follows it
    /// (gives the last frame's duration); without one the previous duration is reused.
    async fn flush_gop(&mut self, next: Option<&Arc<Frame>>) {
        if let Some(p) = self.pending.take() {
            if p.first - p.start >= 1_000 {
                info!(camera = %self.hub.id(), late_ms = (p.first - p.start) / 1000, "run anchored earlier than its first keyframe was read");
            }
            self.open_segment(p.start, p.params, p.start_ts).await;
        }
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
        self.close_at_footage_end().await;
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
        if let Some(r) = self.retry.as_ref().filter(|_| !full) {
            if free < r.free.saturating_add(RETRY_FREED) && r.at.elapsed() < r.wait {
                // A segment opened since the failure (the one after a failed last write)
                // ends with its footage.
                self.stop_segment().await;
                return false;
            }
            // Try again, still "full" (no `spool_ok`, the alarm stays) until this
            // keyframe's GOP is written: the next keyframe finds no new failure.
            self.retry = None;
            return true;
        }
        match (full, self.spool_full_since) {
            (true, None) => {
                self.spool_full_since = Some(now_us());
                self.hub.stats.spool_full_since_us.store(now_us(), Ordering::Relaxed);
                let why = if over_cap { "spool backlog cap reached" } else { "spool disk below its free-space reserve" };
                error!(camera = %self.hub.id(), free, "{why}: dropping new footage until space returns");
                self.stop_segment().await;
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
        self.stop_segment().await;
    }

    /// Stops recording for now: the GOP being collected is dropped, the open segment ends
    /// with its footage, and the next one starts on its own time.
    async fn stop_segment(&mut self) {
        self.gop.clear();
        self.pending = None;
        self.close_at_footage_end().await;
        self.no_segment_in_progress();
        self.next_start = None;
    }

    /// Closes the open segment where its written footage ends.
    async fn close_at_footage_end(&mut self) {
        if let Some(open) = &self.open {
            let end_ts = open.start_ts + open.file.duration_90k() as i64;
            self.close_segment(end_ts, None).await;
        }
    }

    async fn note_spool_failure(&mut self, e: std::io::Error) {
        let free = spool::free_bytes(&self.spool.dir).unwrap_or(0);
        self.retry = Some(Retry { free, at: std::time::Instant::now(), wait: self.retry_wait });
        error!(camera = %self.hub.id(), "spool write failed: {e}; new footage dropped, trying again in {:?} or once {} MiB more are free", self.retry_wait, RETRY_FREED >> 20);
        self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
        if self.spool_full_since.is_none() {
            // One event per episode: a retry that fails again is the same gap.
            self.event("spool_full", &format!("spool write failed: {e}")).await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CameraConfig, RtspTransport};
    use crate::hub::recorder_queue;
    use std::time::Duration;

    const T0: WallUs = 1_764_000_000_000_000;
    const FRAME_US: i64 = 40_000;

    /// Records one run of `frames` frames in 25-frame GOPs, frame `i` read at `read(i)`,
    /// and returns the index rows of its segments.
    async fn record_run(frames: i64, segment_max_bytes: u64, read: impl Fn(i64) -> WallUs) -> Vec<crate::db::SegmentRow> {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::Db::connect(&format!("sqlite://{}/cradle.db", dir.path().display())).await.unwrap();
        let hub = CameraHub::new(CameraConfig {
            id: crate::config::CameraId::parse("room-1").unwrap(),
            name: "Room 1".into(),
            url: "rtsp://127.0.0.1:1/x".parse().unwrap(),
            username: None,
            password: None,
            sub_url: None,
            transport: RtspTransport::Tcp,
            retention_days: None,
        });
        let cfg = RecordingConfig {
            segment_duration: Duration::from_secs(60),
            segment_max_bytes,
            max_drift: Duration::from_secs(2),
            batch: Duration::ZERO,
        };
        let spool = SpoolConfig { dir: dir.path().join("spool"), min_free_bytes: 0, max_bytes: None };
        let (done_tx, mut done_rx) = mpsc::channel(64);
        let rec = Recorder::new(hub, MainDb::new(db), cfg, spool, Arc::default(), done_tx);
        let (tx, rx) = recorder_queue();
        let recording = tokio::spawn(rec.run(rx));
        let params = Arc::new(StreamParams {
            codec: "avc1.640028".into(),
            sample_entry: fmp4::tests::sample_entry(b"avc1", 1920, 1080),
            width: 1920,
            height: 1080,
        });
        tx.send(RecorderMsg::RunStarted { run_id: "run-1".into() }).await.unwrap();
        for i in 0..frames {
            let frame = Frame {
                ts_90k: i * 3600,
                arrival_us: read(i),
                is_key: i % 25 == 0,
                data: vec![i as u8; 1000].into(),
                params: params.clone(),
            };
            tx.send(RecorderMsg::Frame(Arc::new(frame))).await.unwrap();
        }
        tx.send(RecorderMsg::RunEnded { cause: "test".into() }).await.unwrap();
        drop(tx);
        recording.await.unwrap();
        let mut rows = Vec::new();
        while let Ok(seg) = done_rx.try_recv() {
            rows.push(seg.row);
        }
        rows
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_is_dated_by_its_first_gop_not_by_a_late_first_keyframe() {
        // The keyframe read 600 ms late (the server busy), the rest on time.
        let rows = record_run(50, 1 << 30, |i| if i == 0 { T0 + 600_000 } else { T0 + i * FRAME_US + 300 }).await;
        let [row] = &rows[..] else { panic!("one segment: {rows:?}") };
        assert_eq!(row.start_us, T0 + 300, "dated by the earliest reading, not the keyframe's");
        assert_eq!(row.end_us, row.start_us + 50 * FRAME_US, "the RTP clock's 2 s");
        assert_eq!(row.frames, 50);
        assert!(row.object_key.contains(&crate::time::format_compact(T0 + 300)), "{}", row.object_key);

        // Read on time: the keyframe's own time.
        let rows = record_run(50, 1 << 30, |i| T0 + i * FRAME_US + 1_000 + (i % 3) * 5_000).await;
        assert_eq!(rows[0].start_us, T0 + 1_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_is_cut_at_the_first_keyframe_past_its_byte_cap() {
        // 25 kB GOPs, a 40 kB cap: every segment closes at its second GOP's end.
        let rows = record_run(125, 40_000, |i| T0 + i * FRAME_US).await;
        let frames: Vec<i64> = rows.iter().map(|r| r.frames).collect();
        assert_eq!(frames, [50, 50, 25], "{rows:?}");
        assert!(rows.iter().all(|r| r.bytes < 40_000 + 26_000), "{rows:?}");
        for w in rows.windows(2) {
            assert_eq!(w[0].end_us, w[1].start_us, "contiguous");
        }
        assert_eq!(rows[2].end_us, T0 + 125 * FRAME_US);
    }
}
