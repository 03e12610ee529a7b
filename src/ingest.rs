//! Ingest: one task per camera pulls RTSP with retina and feeds the camera's hub.
//!
//! Every wait has a timeout (a camera that goes silent must not hang a task), a failed
//! or ended session is retried with capped exponential backoff, and each state change
//! is written as an event, which is what later explains a gap in the recordings.
//! Frames come out in MP4 form (length-prefixed NALs, parameters out of band), the
//! form the recorder writes; they are published once, as `Arc`s, to all consumers.
//! Sessions run on the [`crate::capture`] thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use retina::client::{
    Credentials, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
    UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::capture::{self, MainDb, Unbatched, WakeHint};
use crate::config::RtspTransport;
use crate::db::Db;
use crate::hub::{CameraHub, CameraState, Frame, RecorderMsg, RecorderTx, StreamParams};
use crate::time::{now_us, ticks_to_us, WallUs};

/// Limit for each RTSP request (DESCRIBE, SETUP, PLAY).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A camera that sends no frame for this long is treated as gone and reconnected.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new session is read unbatched (see `session`).
const WARM_UP: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    Shutdown,
    /// The session failed; `delivered` says whether any frame got through (resets backoff).
    Failed { error: String, delivered: bool },
}

/// Starts one camera's RTSP sessions on the capture thread; they run until `shutdown`,
/// reconnecting with backoff. `db` receives connection events; `None` for a stream that
/// is not recorded (a live-view sub-stream), whose troubles must not appear as
/// recording gaps. Must be called from within the main runtime.
pub fn spawn(hub: Arc<CameraHub>, tx: RecorderTx, db: Option<Db>, shutdown: CancellationToken) -> JoinHandle<()> {
    capture::spawn(run_camera(hub, tx, db.map(MainDb::new), shutdown))
}

async fn run_camera(hub: Arc<CameraHub>, tx: RecorderTx, db: Option<MainDb>, shutdown: CancellationToken) {
    let cam = hub.id().to_string();
    let group = Arc::new(SessionGroup::default().named(cam.clone()));
    let mut backoff = BACKOFF_MIN;
    let mut last_error: Option<String> = None;
    let mut attempt: u64 = 0;
    let hint = WakeHint::new();
    loop {
        hub.set_state(CameraState::Connecting);
        attempt += 1;
        let run_id = format!("{}-{}", now_us(), attempt);
        let end = tokio::select! {
            end = session(&hub, &tx, db.as_ref(), &group, &run_id, &hint) => end,
            _ = shutdown.cancelled() => SessionEnd::Shutdown,
        };
        // Reconnecting: its timers need the ticks.
        hint.every_tick();
        match end {
            SessionEnd::Shutdown => {
                let _ = tx.send(RecorderMsg::RunEnded { cause: "server stopping".into() }).await;
                return;
            }
            SessionEnd::Failed { error, delivered } => {
                hub.reset_gop();
                let _ = tx.send(RecorderMsg::RunEnded { cause: error.clone() }).await;
                hub.set_state(CameraState::Failed { error: error.clone() });
                if delivered {
                    backoff = BACKOFF_MIN;
                    hub.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                // One event per distinct failure, not one per retry: a camera that is
                // down for a day must not write thousands of identical rows.
                if delivered || last_error.as_deref() != Some(error.as_str()) {
                    warn!(camera = %cam, "{error}; retrying in {backoff:?}");
                    record_event(db.as_ref(), &cam, if delivered { "disconnected" } else { "connect_failed" }, &error).await;
                }
                last_error = Some(error);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        // Some cameras keep a dropped TCP session alive for a while and refuse a new one
        // (retina's "stale sessions"); wait for those to be torn down, briefly.
        let stale = group.stale_sessions();
        let _ = timeout(Duration::from_secs(5), group.await_stale_sessions(&stale)).await;
    }
}

async fn record_event(db: Option<&MainDb>, cam: &str, kind: &str, detail: &str) {
    let Some(db) = db else { return };
    if let Err(e) = db.insert_event(Some(cam), now_us(), kind, detail).await {
        warn!(camera = %cam, "cannot record event {kind}: {e}");
    }
}

/// Keeps the camera's wall clock as its RTCP sender report states it (RFC 3550 §6.4.1:
/// the NTP time at which the report was sent) against the server's clock at arrival,
/// for the watchdog's clock check. Transit time on a LAN is far below any alarm bound.
fn note_sender_report(
    hub: &CameraHub,
    rtcp: &retina::rtcp::ReceivedCompoundPacket,
    frames: &ArrivalClock,
    reports: &mut ArrivalClock,
) {
    let Some(Ok(Some(sr))) = rtcp.pkts().next().map(|p| p.as_sender_report()) else { return };
    // Read up to a batch late. Both estimates below are never early by more than the
    // network jitter they remove, so the earlier one is the better: the reports' own
    // floor (the first report after warm-up is up to a batch late, later ones less) and
    // the frames' floor (exact unless the camera's encoder delays frames: a frame's RTP
    // time is when it was captured, a report's when it was sent).
    let now = match rtcp.rtp_timestamp() {
        Some(ts) => {
            let (now, ts_us) = (now_us(), crate::time::ticks_to_us(ts.elapsed()));
            reports.arrival(now, ts_us).min(frames.date(now, ts_us))
        }
        None => now_us(),
    };
    hub.stats.sr_offset_us.store(ntp_to_unix_us(sr.ntp_timestamp().0) - now, Ordering::Relaxed);
    hub.stats.sr_at_us.store(now, Ordering::Relaxed);
}

/// When each frame reached the server, with the waits it met on the way taken out.
///
/// A frame is read late, never early: the capture thread reads in batches (`batch_ms`), and
/// networks queue. So the server time minus the frame's RTP time has a floor, the
/// moment the camera's clock started as seen from the server, and every delay only
/// adds to it. The clock keeps that floor (the lowest offset seen, allowed to rise
/// slowly so a camera whose clock runs slow is followed) and dates each frame at floor
/// plus RTP time: as late as the least delayed frame of the last moments (a few
/// milliseconds) instead of up to a batch late, and never later than it was read. An
/// offset more than a second (plus a batch, which any frame may wait) above the floor
/// means the camera's clock jumped back; the floor starts again from it. RTCP sender
/// reports keep a clock of their own.
#[derive(Default)]
struct ArrivalClock {
    floor: Option<(i64, WallUs)>,
}

impl ArrivalClock {
    /// How fast the floor may rise: 0.5 %, fifty times any camera clock's error
    /// (≤ 0.01 %).
    const RISE_PER_MILLION: i64 = 5_000;
    const JUMP_US: i64 = 1_000_000;

    /// The arrival time of a frame read at `now` with RTP time `ts_us` (since the
    /// session's first frame).
    fn arrival(&mut self, now: WallUs, ts_us: i64) -> WallUs {
        let offset = now - ts_us;
        let floor = match self.risen_floor(now) {
            Some(risen) if offset > risen + Self::JUMP_US + capture::longest_wait().as_micros() as i64 => offset,
            Some(risen) => offset.min(risen),
            None => offset,
        };
        self.floor = Some((floor, now));
        floor + ts_us
    }

    /// When something read at `now` and stamped `ts_us` on this clock's RTP timeline
    /// would have arrived by this floor; leaves the floor alone.
    fn date(&self, now: WallUs, ts_us: i64) -> WallUs {
        self.risen_floor(now).map_or(now, |floor| (floor + ts_us).min(now))
    }

    fn risen_floor(&self, now: WallUs) -> Option<i64> {
        self.floor.map(|(floor, at)| floor + (now - at).max(0) * Self::RISE_PER_MILLION / 1_000_000)
    }
}

/// Paces the capture thread's ticks to one camera's keyframes (see [`crate::capture`]):
/// once its GOP is regular, the camera next needs reading just after its next keyframe
/// has arrived — its last keyframe's arrival, plus a GOP, plus [`KEY_MARGIN_US`] for the
/// keyframe's transfer and the camera's jitter. A camera whose keyframes keep coming
/// later than that (or whose GOP changes, or is larger than [`MAX_PACED_GOP_BYTES`])
/// is read at every batch tick instead.
#[derive(Default)]
struct KeyframePace {
    last_key_ts: Option<i64>,
    /// RTP ticks between the last two keyframes.
    gop: Option<i64>,
    /// Bytes of the frames since the last keyframe.
    gop_bytes: usize,
    /// When the next keyframe should have arrived, and the capture tick that first came
    /// after that (while it has not come yet: None).
    expected: Option<(WallUs, Option<u64>)>,
    /// Keyframes in a row not read in the tick meant for them.
    misses: u32,
    /// Keyframes left before this camera's ticks are paced again, after repeated misses.
    resting: u32,
}

/// Time after a keyframe's expected arrival (its first packet's, as dated by
/// [`ArrivalClock`]) at which the camera is read: the rest of the keyframe (a few
/// hundred KB, tens of milliseconds at a camera's upload rate) and the encoder's jitter.
const KEY_MARGIN_US: i64 = 150_000;
/// A GOP larger than this is not paced: the socket would hold it all (a 2 s GOP of a
/// camera above 8 Mbit/s), and Linux grows a TCP receive window only so fast.
const MAX_PACED_GOP_BYTES: usize = 2 << 20;
const MISSES_BEFORE_REST: u32 = 3;
const REST_KEYFRAMES: u32 = 30;

impl KeyframePace {
    /// At a keyframe with RTP time `ts`, dated `arrival`, read in capture tick number
    /// `tick` (before [`Self::frame`] for it): when this camera next needs reading (None:
    /// at every tick).
    fn keyframe(&mut self, ts: i64, arrival: WallUs, tick: u64) -> Option<WallUs> {
        if let Some((_, first_tick)) = self.expected.take() {
            match first_tick {
                Some(first) if first != tick => self.misses += 1,
                _ => self.misses = 0,
            }
            if self.misses >= MISSES_BEFORE_REST {
                self.misses = 0;
                self.resting = REST_KEYFRAMES;
                info!(keyframes = REST_KEYFRAMES, "keyframes keep coming later than expected; reading this camera at every batch for a while");
            }
        }
        let gop = self.last_key_ts.map(|last| ts - last).filter(|g| *g > 0);
        let regular = matches!((gop, self.gop), (Some(g), Some(p)) if (g - p).abs() <= p / 8);
        let bytes = std::mem::take(&mut self.gop_bytes);
        self.last_key_ts = Some(ts);
        self.gop = gop;
        if self.resting > 0 {
            self.resting -= 1;
            return None;
        }
        if !regular || bytes > MAX_PACED_GOP_BYTES {
            return None;
        }
        let at = arrival + ticks_to_us(gop?) + KEY_MARGIN_US;
        self.expected = Some((at, None));
        Some(at)
    }

    /// Every frame, of `bytes`, read in capture tick number `tick`, which the thread
    /// slept to `tick_at`.
    fn frame(&mut self, bytes: usize, tick: u64, tick_at: WallUs) {
        self.gop_bytes += bytes;
        if let Some((at, first_tick @ None)) = &mut self.expected {
            if tick_at >= *at {
                *first_tick = Some(tick);
            }
        }
    }
}

/// NTP 32.32 fixed point, seconds since 1900 (RFC 5905 §6), to µs since the Unix epoch.
fn ntp_to_unix_us(ntp: u64) -> i64 {
    const UNIX_EPOCH_NTP: i128 = 2_208_988_800 << 32;
    ((((ntp as i128) - UNIX_EPOCH_NTP) * 1_000_000) >> 32) as i64
}

/// Adds an operator's hint to the errors people actually hit.
fn explain(hub: &CameraHub, e: impl std::fmt::Display) -> String {
    let msg = e.to_string();
    format!("camera {:?}: {msg}{}", hub.id().as_str(), hint(&msg))
}

/// What to check, for the errors whose cause is usually the configuration.
fn hint(msg: &str) -> &'static str {
    // The status as retina words it ("404 response to DESCRIBE"): a bare "401" also
    // matches ports, byte positions and session ids elsewhere in the message.
    let status = |code: &str| msg.contains(&format!("{code} response")) || msg.contains(&format!("RTSP/1.0 {code}"));
    if status("401") {
        " — check username/password in [[cameras]]"
    } else if msg.contains("Connection refused") || msg.contains("connection refused") {
        " — is the camera on and the URL's host:port right?"
    } else if status("404") {
        " — check the stream path in the camera URL"
    } else {
        ""
    }
}

/// An RTSP session that is playing, and the index of its video stream.
struct Playing {
    demuxed: retina::client::Demuxed,
    stream_i: usize,
    /// Taken just before PLAY: the PLAY answer, the first frames and the first sender
    /// report are read as they come, not at the next batch tick; they anchor the
    /// session's clocks (see `ArrivalClock`). The session drops it after `WARM_UP`.
    warming: Unbatched,
}

/// DESCRIBE, SETUP (the first H.264 or H.265 video stream) and PLAY, each within
/// [`REQUEST_TIMEOUT`]. The error is the bare reason; callers say which camera.
async fn connect(cfg: &crate::config::CameraConfig, group: Option<Arc<SessionGroup>>) -> Result<Playing, String> {
    let creds = cfg.username.as_ref().map(|u| Credentials {
        username: u.clone(),
        password: cfg.password.clone().unwrap_or_default(),
    });
    let mut opts = SessionOptions::default().creds(creds).user_agent(format!("Cradle/{}", env!("CARGO_PKG_VERSION")));
    if let Some(g) = group {
        opts = opts.session_group(g);
    }
    let mut described = match timeout(REQUEST_TIMEOUT, Session::describe(cfg.url.clone(), opts)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("RTSP DESCRIBE timed out".into()),
    };
    let Some(stream_i) = described.streams().iter().position(|s| {
        s.media() == "video"
            && (s.encoding_name().eq_ignore_ascii_case("h264") || s.encoding_name().eq_ignore_ascii_case("h265"))
    }) else {
        let found: Vec<String> =
            described.streams().iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
        return Err(format!("no H.264 or H.265 video stream (found {found:?})"));
    };
    let transport = match cfg.transport {
        RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
        RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
    };
    let setup = SetupOptions::default().transport(transport).frame_format(FrameFormat::MP4);
    match timeout(REQUEST_TIMEOUT, described.setup(stream_i, setup)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("RTSP SETUP timed out".into()),
    }
    let warming = Unbatched::new();
    let playing = match timeout(REQUEST_TIMEOUT, described.play(PlayOptions::default())).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("RTSP PLAY timed out".into()),
    };
    let demuxed = playing.demuxed().map_err(|e| e.to_string())?;
    Ok(Playing { demuxed, stream_i, warming })
}

/// The stream's parameters as the recorder and decoders need them, once known.
fn stream_params(demuxed: &retina::client::Demuxed, stream_i: usize) -> Result<Option<StreamParams>, String> {
    match demuxed.streams()[stream_i].parameters() {
        Some(ParametersRef::Video(v)) => {
            let sample_entry = v.mp4_sample_entry().build().map_err(|e| e.to_string())?;
            let (w, h) = v.pixel_dimensions();
            Ok(Some(StreamParams {
                codec: v.rfc6381_codec().to_owned(),
                sample_entry,
                width: w.min(u16::MAX as u32) as u16,
                height: h.min(u16::MAX as u32) as u16,
            }))
        }
        _ => Ok(None),
    }
}

/// "Test connection": connects to a camera that is not (yet) recorded, waits for its
/// first keyframe and hangs up. Everything within `within`. The error says why, with
/// the same hints a recorded camera's state gives.
pub async fn probe(cfg: &crate::config::CameraConfig, within: Duration) -> Result<Frame, String> {
    let attempt = async {
        let Playing { mut demuxed, stream_i, .. } = connect(cfg, None).await?;
        let mut params: Option<Arc<StreamParams>> = None;
        loop {
            let item = match demuxed.next().await {
                None => return Err("the camera closed the stream before its first keyframe".to_owned()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(item)) => item,
            };
            let CodecItem::VideoFrame(f) = item else { continue };
            if f.stream_id() != stream_i {
                continue;
            }
            if params.is_none() || f.has_new_parameters() {
                params = stream_params(&demuxed, stream_i)?.map(Arc::new);
            }
            let (Some(p), true) = (&params, f.is_random_access_point()) else { continue };
            return Ok(Frame {
                ts_90k: f.timestamp().elapsed(),
                arrival_us: now_us(),
                is_key: true,
                params: p.clone(),
                data: Bytes::from(f.into_data()),
            });
        }
    };
    match timeout(within, attempt).await {
        // retina's errors go on with connection details over several lines; the first says it.
        Ok(r) => r.map_err(|e| {
            let first = e.lines().next().unwrap_or_default().trim_end_matches(|c: char| c == ':' || c.is_whitespace());
            format!("{first}{}", hint(&e))
        }),
        Err(_) => Err(format!("no keyframe within {} s — is this an RTSP video stream?", within.as_secs())),
    }
}

async fn session(
    hub: &CameraHub,
    tx: &RecorderTx,
    db: Option<&MainDb>,
    group: &Arc<SessionGroup>,
    run_id: &str,
    hint: &WakeHint,
) -> SessionEnd {
    let failed = |error: String| SessionEnd::Failed { error, delivered: false };
    let Playing { mut demuxed, stream_i, warming } = match connect(&hub.config, Some(group.clone())).await {
        Ok(p) => p,
        Err(e) => return failed(explain(hub, e)),
    };
    let mut warming = Some((warming, Instant::now()));
    // Over UDP nothing pushes back: datagrams beyond the socket's receive buffer (208 KiB
    // by Linux's default) are dropped, and a quarter second of an 8 Mbit/s camera, or
    // one large keyframe, fills it. So a UDP session is read as it arrives, never in
    // batches.
    let _udp = (hub.config.transport == RtspTransport::Udp).then(Unbatched::new);

    let mut params: Option<Arc<StreamParams>> = None;
    let mut delivered = false;
    let mut arrivals = ArrivalClock::default();
    let mut reports = ArrivalClock::default();
    let mut pace = KeyframePace::default();
    // The session is given up after FRAME_TIMEOUT without a video frame: RTCP and other
    // streams do not count (a camera whose encoder hung may go on sending sender
    // reports). One timer, moved only when it fires, not one per item.
    let mut last_frame = tokio::time::Instant::now();
    let no_frames = tokio::time::sleep(FRAME_TIMEOUT);
    tokio::pin!(no_frames);
    loop {
        let next = tokio::select! {
            biased;
            next = demuxed.next() => next,
            () = &mut no_frames => {
                if last_frame.elapsed() < FRAME_TIMEOUT {
                    no_frames.as_mut().reset(last_frame + FRAME_TIMEOUT);
                    continue;
                }
                return SessionEnd::Failed {
                    error: explain(hub, format!("no frames for {} s", FRAME_TIMEOUT.as_secs())),
                    delivered,
                };
            }
        };
        let item = match next {
            None => return SessionEnd::Failed { error: explain(hub, "camera closed the stream"), delivered },
            Some(Err(e)) => return SessionEnd::Failed { error: explain(hub, e), delivered },
            Some(Ok(item)) => item,
        };
        let f = match item {
            CodecItem::VideoFrame(f) => f,
            CodecItem::Rtcp(r) if r.stream_id() == stream_i => {
                note_sender_report(hub, &r, &arrivals, &mut reports);
                continue;
            }
            _ => continue,
        };
        if f.stream_id() != stream_i {
            continue;
        }
        last_frame = tokio::time::Instant::now();
        if params.is_none() || f.has_new_parameters() {
            match stream_params(&demuxed, stream_i) {
                Ok(Some(p)) => {
                    info!(camera = %hub.id(), codec = %p.codec, width = p.width, height = p.height, "stream parameters");
                    hub.set_codec(&p.codec);
                    params = Some(Arc::new(p));
                }
                Ok(None) => continue, // no parameters yet: nothing decodable to record
                Err(e) => return SessionEnd::Failed { error: explain(hub, e), delivered },
            }
        }
        if warming.as_ref().is_some_and(|(_, since)| since.elapsed() >= WARM_UP) {
            warming = None;
        }
        let ts_90k = f.timestamp().elapsed();
        let arrival_us = arrivals.arrival(now_us(), ticks_to_us(ts_90k));
        let is_key = f.is_random_access_point();
        let tick = capture::ticks();
        if is_key {
            match pace.keyframe(ts_90k, arrival_us, tick) {
                Some(at) => hint.next_at(at),
                None => hint.every_tick(),
            }
        }
        pace.frame(f.data().len(), tick, capture::last_tick_us());
        let frame = Arc::new(Frame {
            ts_90k,
            arrival_us,
            is_key,
            params: params.clone().expect("set above"),
            data: Bytes::from(f.into_data()),
        });
        if !delivered {
            delivered = true;
            hub.stats.runs.fetch_add(1, Ordering::Relaxed);
            hub.set_state(CameraState::Recording);
            record_event(db, hub.id().as_str(), "recording", &format!("run {run_id}")).await;
            if tx.send(RecorderMsg::RunStarted { run_id: run_id.to_owned() }).await.is_err() {
                return SessionEnd::Shutdown;
            }
        }
        hub.publish(&frame);
        // The recorder's queue is bounded; awaiting here pushes back on the camera's TCP
        // stream rather than dropping footage.
        if tx.send(RecorderMsg::Frame(frame)).await.is_err() {
            return SessionEnd::Shutdown;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ArrivalClock, KeyframePace, KEY_MARGIN_US, MISSES_BEFORE_REST, REST_KEYFRAMES};

    const GOP: i64 = 180_000; // 2 s at 90 kHz: 50 frames at 25 fps
    const S: i64 = 1_000_000;

    /// Feeds a GOP's 49 frames after its keyframe, read in `tick` slept to `tick_at`.
    fn rest_of_gop(pace: &mut KeyframePace, tick: u64, tick_at: i64) {
        for _ in 1..50 {
            pace.frame(20_000, tick, tick_at);
        }
    }

    #[test]
    fn a_regular_gop_paces_the_reads_to_just_after_each_keyframe() {
        let mut pace = KeyframePace::default();
        // The first two keyframes: no GOP yet, then one GOP measured: every tick.
        assert_eq!(pace.keyframe(0, 10 * S, 1), None);
        pace.frame(150_000, 1, 0);
        rest_of_gop(&mut pace, 1, 0);
        assert_eq!(pace.keyframe(GOP, 12 * S, 2), None);
        pace.frame(150_000, 2, 0);
        rest_of_gop(&mut pace, 2, 0);
        // Two equal GOPs: read next just after the next keyframe arrives.
        let mut tick = 3;
        let next = pace.keyframe(2 * GOP, 14 * S, tick);
        assert_eq!(next, Some(16 * S + KEY_MARGIN_US));
        // Read at the tick meant for it (frames before it in the same tick): on pace.
        for k in 3..30u64 {
            let at = (k as i64 + 5) * 2 * S + KEY_MARGIN_US;
            pace.frame(150_000, tick, at - 2 * S);
            tick += 1;
            rest_of_gop(&mut pace, tick, at);
            assert_eq!(pace.keyframe(k as i64 * GOP, at - KEY_MARGIN_US, tick), Some(at + 2 * S), "keyframe {k}");
        }
        assert_eq!(pace.misses, 0);
        // A keyframe a second early (a new GOP length): every tick until it is regular again.
        assert_eq!(pace.keyframe(30 * GOP - GOP / 2, 70 * S, tick), None);
    }

    #[test]
    fn keyframes_that_keep_missing_their_tick_rest_the_pacing() {
        let mut pace = KeyframePace::default();
        let mut tick = 1;
        for k in 0..3 {
            pace.keyframe(k * GOP, 10 * S + 2 * k * S, tick);
            tick += 1;
        }
        // Each keyframe is read a tick after the one meant for it (dated on time: it
        // arrived on time, and waited).
        let last_miss = 2 + MISSES_BEFORE_REST as i64;
        for k in 3..=last_miss {
            let meant = 10 * S + 2 * k * S + KEY_MARGIN_US;
            rest_of_gop(&mut pace, tick, meant);
            tick += 1;
            let hint = pace.keyframe(k * GOP, 10 * S + 2 * k * S, tick);
            assert_eq!(hint.is_some(), k < last_miss, "keyframe {k}");
        }
        // That one and the next REST_KEYFRAMES - 1: every tick; then paced again.
        for k in last_miss + 1..last_miss + REST_KEYFRAMES as i64 {
            assert_eq!(pace.keyframe(k * GOP, 10 * S + 2 * k * S, tick), None, "resting at keyframe {k}");
        }
        let k = last_miss + REST_KEYFRAMES as i64;
        assert_eq!(pace.keyframe(k * GOP, 10 * S + 2 * k * S, tick), Some(12 * S + 2 * k * S + KEY_MARGIN_US));
    }

    #[test]
    fn a_gop_too_large_for_the_socket_is_read_every_tick() {
        let mut pace = KeyframePace::default();
        for k in 0..4 {
            let hint = pace.keyframe(k * GOP, 10 * S + 2 * k * S, 1);
            assert_eq!(hint, None, "keyframe {k}: a 2.5 MB GOP (10 Mbit/s)");
            for _ in 0..50 {
                pace.frame(50_000, 1, 0);
            }
        }
    }

    #[test]
    fn arrivals_lose_the_batch_delay() {
        // 25 fps frames arriving every 40 ms from t = 5 s, read at the next 250 ms tick.
        let mut clock = ArrivalClock::default();
        let t0 = 5_000_000;
        let mut worst_late = 0;
        for k in 0..250i64 {
            let true_arrival = t0 + 13_000 + k * 40_000;
            let read_at = (true_arrival / 250_000 + 1) * 250_000;
            let dated = clock.arrival(read_at, k * 40_000);
            assert!(dated <= read_at, "never dated after it was read");
            assert!(dated >= true_arrival - 1, "never dated before it arrived: frame {k}");
            if k >= 25 {
                worst_late = worst_late.max(dated - true_arrival);
            }
        }
        // Without the clock, frames would be dated up to 250 ms late; here the least
        // delayed frame (one a second: 40 ms frames meet the 250 ms grid again after
        // 1 s) waits 7 ms for its tick, and the floor rises up to 5 ms in between.
        assert!(worst_late <= 12_000, "dated up to {worst_late} µs late after the first second");
    }

    #[test]
    fn arrivals_follow_a_slow_camera_clock_and_a_jump_back() {
        let mut clock = ArrivalClock::default();
        // The camera's clock runs 0.1 % slow: RTP time falls behind server time.
        let mut last = 0;
        for k in 0..1000i64 {
            let now = 1_000_000 + k * 40_000;
            let dated = clock.arrival(now, k * 39_960);
            assert!((now - dated).abs() <= 2_000, "frame {k}: dated {dated}, read {now}");
            last = now;
        }
        // The RTP clock jumps back 10 s: dates follow the server clock again at once.
        let now = last + 40_000;
        assert_eq!(clock.arrival(now, 1_000 * 39_960 - 10_000_000), now);
    }

    #[test]
    fn ntp_time_converts_to_unix_microseconds() {
        // 1.5 s after the Unix epoch, as camsim's sender report test writes it.
        assert_eq!(super::ntp_to_unix_us((2_208_988_801u64 << 32) | (1 << 31)), 1_500_000);
        // A camera whose clock says 1900 (never set) lands far in the past, not in a panic.
        assert_eq!(super::ntp_to_unix_us(0), -2_208_988_800_000_000);
    }
}
