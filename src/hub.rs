//! The per-camera meeting point between ingest and every consumer.
//!
//! Ingest publishes each frame once, as an `Arc<Frame>`; consumers never talk to the
//! camera or to each other. The recorder is the one consumer allowed to push back:
//! it gets a bounded queue and ingest awaits when it is full (TCP back-pressure to the
//! camera beats silently dropping footage). Live view subscribes to a broadcast that
//! drops the oldest frames for a laggard, so a slow viewer can never slow the recorder;
//! health and snapshots read the counters and the kept GOP instead.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use crate::capture::Unbatched;
use crate::config::{CameraConfig, CameraId};
use crate::time::WallUs;

/// Codec parameters of a video stream, as the recorder needs them.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamParams {
    /// RFC 6381 codec string, e.g. `avc1.640028`.
    pub codec: String,
    /// The complete ISO BMFF VisualSampleEntry (`avc1`+`avcC` or `hvc1`+`hvcC`).
    pub sample_entry: Vec<u8>,
    pub width: u16,
    pub height: u16,
}

/// One access unit in MP4 form (4-byte length-prefixed NAL units).
#[derive(Debug)]
pub struct Frame {
    /// 90 kHz timestamp, extended (monotonic within one run of a camera session).
    pub ts_90k: i64,
    /// Server wall time when the frame arrived.
    pub arrival_us: WallUs,
    pub is_key: bool,
    pub data: Bytes,
    pub params: Arc<StreamParams>,
}

/// What the recorder receives, in order.
#[derive(Debug)]
pub enum RecorderMsg {
    /// A new camera session starts delivering (new RTP clock origin).
    RunStarted { run_id: String },
    Frame(Arc<Frame>),
    /// The session ended; `cause` says why (for the gap that follows).
    RunEnded { cause: String },
}

/// Capacity of the recorder queue: ~10 s of 25 fps video. When full, ingest waits.
pub const RECORDER_QUEUE: usize = 256;
/// Capacity of the broadcast for other consumers; a laggard loses the oldest frames.
pub const BROADCAST_QUEUE: usize = 128;
/// The current GOP is kept (for a live viewer's fast start and for snapshots) up to
/// this many frames or bytes; a longer GOP is dropped until the next keyframe.
pub const GOP_MAX_FRAMES: usize = 600;
pub const GOP_MAX_BYTES: usize = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CameraState {
    Connecting,
    Recording,
    Failed { error: String },
}

impl CameraState {
    pub fn name(&self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Recording => "recording",
            CameraState::Failed { .. } => "failed",
        }
    }
}

/// The watchdog's verdict on a camera: its state-machine state (`starting`,
/// `recording`, `degraded`, `stalled`, `offline`, `decommissioned`), since when, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub state: &'static str,
    pub since_us: WallUs,
    pub detail: String,
}

/// Counters read by /metrics and the API; written with relaxed atomics on the hot path.
#[derive(Default, Debug)]
pub struct CameraStats {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub reconnects: AtomicU64,
    pub last_frame_us: AtomicI64,
    pub segments: AtomicU64,
    /// Frames the recorder could not keep (spool full); each also leaves a recorded gap.
    pub frames_dropped: AtomicU64,
    /// Latest measured (server wall − RTP) drift within the current run, microseconds.
    pub drift_us: AtomicI64,
    /// Wall-clock start of the segment being written (0: none). Footage after it is in
    /// the spool but not yet indexed; the API shows it as in progress, not as a gap.
    pub open_segment_start_us: AtomicI64,
    /// Camera sessions that delivered frames (a new RTP clock origin each).
    pub runs: AtomicU64,
    /// Smallest `arrival − RTP time since the run began` of the frames since the
    /// watchdog last took it (`swap(i64::MAX)`; 0 or `i64::MAX`: no frame). Constant for
    /// a camera whose RTP clock keeps the server's pace; arrival jitter only raises it.
    pub rtp_origin_min_us: AtomicI64,
    /// The camera's wall clock minus the server's at the latest RTCP sender report
    /// (RFC 3550 §6.4.1 NTP timestamp), and when that report arrived (0: none yet).
    pub sr_offset_us: AtomicI64,
    pub sr_at_us: AtomicI64,
    /// Since when the recorder has been dropping footage because the spool is full
    /// (0: it is not).
    pub spool_full_since_us: AtomicI64,
    /// Byte and keyframe counts at the latest keyframe, so the watchdog can measure
    /// bitrate over whole GOPs (written once per GOP).
    pub key_mark: Mutex<KeyMark>,
}

/// Counters as they stood when the latest keyframe arrived.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KeyMark {
    /// Keyframes so far.
    pub keyframes: u64,
    /// All bytes received before this keyframe: the end of the previous GOP.
    pub bytes_before: u64,
    /// Sum of the sizes of all keyframes so far.
    pub key_bytes: u64,
    pub at_us: WallUs,
}

pub struct CameraHub {
    pub config: CameraConfig,
    pub stats: CameraStats,
    state: Mutex<CameraState>,
    health: Mutex<Health>,
    codec: Mutex<Option<String>>,
    /// The frames since the latest keyframe (empty until one arrives), and the
    /// broadcast: both change under this one lock, so a subscriber gets the GOP and
    /// every frame after it exactly once.
    fanout: Mutex<Fanout>,
}

struct Fanout {
    gop: Vec<Arc<Frame>>,
    gop_bytes: usize,
    broadcast: broadcast::Sender<Arc<Frame>>,
}

impl CameraHub {
    pub fn new(config: CameraConfig) -> Arc<Self> {
        let (broadcast, _) = broadcast::channel(BROADCAST_QUEUE);
        Arc::new(CameraHub {
            config,
            stats: CameraStats { rtp_origin_min_us: AtomicI64::new(i64::MAX), ..CameraStats::default() },
            state: Mutex::new(CameraState::Connecting),
            health: Mutex::new(Health { state: "starting", since_us: crate::time::now_us(), detail: String::new() }),
            codec: Mutex::new(None),
            fanout: Mutex::new(Fanout { gop: Vec::new(), gop_bytes: 0, broadcast }),
        })
    }

    pub fn id(&self) -> &CameraId {
        &self.config.id
    }

    pub fn state(&self) -> CameraState {
        self.state.lock().unwrap().clone()
    }

    pub fn set_state(&self, s: CameraState) {
        *self.state.lock().unwrap() = s;
    }

    /// The watchdog's view of this camera (see [`Health`]).
    pub fn health(&self) -> Health {
        self.health.lock().unwrap().clone()
    }

    pub fn set_health(&self, h: Health) {
        *self.health.lock().unwrap() = h;
    }

    pub fn codec(&self) -> Option<String> {
        self.codec.lock().unwrap().clone()
    }

    pub fn set_codec(&self, codec: &str) {
        *self.codec.lock().unwrap() = Some(codec.to_owned());
    }

    /// The frames of the current GOP (keyframe first; empty when none is kept) and a
    /// subscription that continues right after them.
    pub fn subscribe_with_gop(&self) -> (Vec<Arc<Frame>>, Subscription) {
        let f = self.fanout.lock().unwrap();
        (f.gop.clone(), Subscription { rx: f.broadcast.subscribe(), _now: Unbatched::new() })
    }

    /// The latest keyframe, if the current GOP is kept.
    pub fn latest_keyframe(&self) -> Option<Arc<Frame>> {
        self.fanout.lock().unwrap().gop.first().cloned()
    }

    /// Forgets the GOP (the camera session ended: the next one starts afresh).
    pub fn reset_gop(&self) {
        let mut f = self.fanout.lock().unwrap();
        f.gop.clear();
        f.gop_bytes = 0;
    }

    /// Called by ingest for every frame: counts it and fans it out to non-recorder
    /// consumers. Never blocks.
    pub fn publish(&self, frame: &Arc<Frame>) {
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        let before = self.stats.bytes.fetch_add(frame.data.len() as u64, Ordering::Relaxed);
        self.stats.last_frame_us.store(frame.arrival_us, Ordering::Relaxed);
        // For the watchdog: a few relaxed atomics per frame, a lock once per GOP.
        let origin = frame.arrival_us - crate::time::ticks_to_us(frame.ts_90k);
        self.stats.rtp_origin_min_us.fetch_min(origin, Ordering::Relaxed);
        if frame.is_key {
            let mut m = self.stats.key_mark.lock().unwrap();
            m.keyframes += 1;
            m.bytes_before = before;
            m.key_bytes += frame.data.len() as u64;
            m.at_us = frame.arrival_us;
        }
        let mut f = self.fanout.lock().unwrap();
        if frame.is_key {
            f.gop.clear();
            f.gop_bytes = 0;
        }
        if frame.is_key || !f.gop.is_empty() {
            if f.gop.len() < GOP_MAX_FRAMES && f.gop_bytes + frame.data.len() <= GOP_MAX_BYTES {
                f.gop_bytes += frame.data.len();
                f.gop.push(frame.clone());
            } else {
                f.gop.clear();
                f.gop_bytes = 0;
            }
        }
        if f.broadcast.receiver_count() > 0 {
            let _ = f.broadcast.send(frame.clone());
        }
    }
}

/// A consumer's place in a camera's frame broadcast. While it exists the capture
/// thread delivers every frame as it arrives (no batching: live view).
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Frame>>,
    _now: Unbatched,
}

impl Subscription {
    pub async fn recv(&mut self) -> Result<Arc<Frame>, broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

/// The sending half ingest holds for the recorder.
pub type RecorderTx = mpsc::Sender<RecorderMsg>;
pub type RecorderRx = mpsc::Receiver<RecorderMsg>;

pub fn recorder_queue() -> (RecorderTx, RecorderRx) {
    mpsc::channel(RECORDER_QUEUE)
}
