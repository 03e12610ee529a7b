//! Live view over WebRTC: WHEP sessions fed from the camera hubs, under the access rules.
//!
//! ```text
//!  hub (frames) ─▶ Source (one per watched camera): packetize once, keep the GOP
//!                    └─ broadcast of Arc<Packetized> ─▶ Session pump ─▶ Peer (SRTP, UDP)
//!                                                    ─▶ Session pump ─▶ Peer …
//!  guard (every 500 ms): re-checks every session's rules and login; ends the ones that fail
//! ```
//!
//! A viewer that falls behind loses frames from its own broadcast queue and skips to
//! the next keyframe; it never slows the others or the recorder (the hub's broadcast
//! drops for laggards too). A new viewer first gets the current GOP with its timestamps
//! squeezed together, so the decoder reaches the live picture at once instead of waiting
//! for the camera's next keyframe.

pub mod access;
pub mod config;
pub mod ice;
pub mod packetize;
pub mod peer;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::audit::{self, Action, NewEntry};
use crate::auth::{Principal, Role};
use crate::config::{CameraId, PolicyConfig};
use crate::db::Db;
use crate::fleet::Fleet;
use crate::hub::CameraHub;
use crate::time::{now_us, WallUs};
use access::Denial;
use config::LiveConfig;
use packetize::{Codec, Packetized, Packetizer};
use peer::{Peer, PeerError, Ports};

/// Frames a viewer may fall behind before it skips to the next keyframe.
const VIEWER_QUEUE: usize = 64;
/// How often running sessions are re-checked (a revocation ends them within 2 s).
pub const GUARD_PERIOD: Duration = Duration::from_millis(500);
/// A viewer must connect (ICE + DTLS) within this after the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A connection that stays `disconnected` this long is over.
const DISCONNECTED_GRACE: Duration = Duration::from_secs(8);
/// A source nobody watches stops after this (its GOP is rebuilt from the hub's).
const SOURCE_IDLE: Duration = Duration::from_secs(30);
/// How long the first viewer of a sub-stream waits for its first keyframe.
const SUB_STREAM_WAIT: Duration = Duration::from_secs(8);
/// Ended sessions kept for `GET /api/v1/live/sessions/{id}`.
const ENDED_KEPT: usize = 512;

/// Upper bounds (ms) of the server-added latency histogram: frame arrival at the hub
/// to its last RTP packet handed to the viewer's connection.
pub const LATENCY_BUCKETS_MS: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

#[derive(Default)]
pub struct LiveStats {
    pub sessions_started: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_skipped: AtomicU64,
    /// Counts per [`LATENCY_BUCKETS_MS`] bucket, then one for anything larger.
    pub latency: [AtomicU64; 11],
    pub latency_sum_us: AtomicU64,
}

impl LiveStats {
    fn observe(&self, us: i64) {
        let us = us.max(0) as u64;
        let i = LATENCY_BUCKETS_MS.iter().position(|b| us <= b * 1000).unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// Why a session could not start: the HTTP status follows from the variant.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The rules say no (403), with the reason.
    #[error("{}", .0.message)]
    Denied(Denial),
    /// No such camera (404).
    #[error("{0}")]
    NoCamera(String),
    /// The camera has not delivered video yet (503).
    #[error("{0}")]
    Offline(String),
    /// The offer is unusable (400) or shares no codec (406).
    #[error("{0}")]
    Offer(String),
    #[error("{0}")]
    Codec(String),
    /// No UDP port left, or the WebRTC stack failed (503 / 500).
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Internal(String),
}

/// How a session ended.
#[derive(Clone, Debug, Serialize)]
pub struct Ending {
    pub reason: &'static str,
    pub message: String,
    pub at_us: WallUs,
}

pub struct Session {
    pub id: String,
    pub camera: CameraId,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// SHA-256 of the login session that opened it (re-checked by the guard).
    login: String,
    addr: Option<String>,
    pub started_us: WallUs,
    /// Parents' sessions end here (`[live] max_session_minutes`).
    pub deadline_us: Option<WallUs>,
    pub etag: String,
    /// `sub` when the camera's sub-stream is sent, else `main`.
    pub stream: &'static str,
    pub bytes: AtomicU64,
    pub frames: AtomicU64,
    pub first_frame_us: AtomicI64,
    peer: Peer,
    stop: CancellationToken,
    ending: Mutex<Option<Ending>>,
}

impl Session {
    pub fn ending(&self) -> Option<Ending> {
        self.ending.lock().unwrap().clone()
    }

    /// Ends the session (first reason wins); the pump closes the connection.
    pub fn end(&self, reason: &'static str, message: impl Into<String>) {
        let mut e = self.ending.lock().unwrap();
        if e.is_none() {
            *e = Some(Ending { reason, message: message.into(), at_us: now_us() });
        }
        self.stop.cancel();
    }

    pub fn json(&self) -> serde_json::Value {
        let ending = self.ending();
        let ended = ending.is_some() && self.stop.is_cancelled();
        json!({
            "id": self.id,
            "camera_id": self.camera.as_str(),
            "username": self.username,
            "role": self.role.as_str(),
            "stream": self.stream,
            "state": if ended { "ended" } else { "active" },
            "started": crate::time::format_rfc3339(self.started_us),
            "ended": ending.as_ref().map(|e| crate::time::format_rfc3339(e.at_us)),
            "end_reason": ending.as_ref().map(|e| e.reason),
            "message": ending.as_ref().map(|e| e.message.clone()),
            "bytes_sent": self.bytes.load(Ordering::Relaxed),
            "frames_sent": self.frames.load(Ordering::Relaxed),
        })
    }

    /// Trickled candidates from the viewer (an RFC 8840 SDP fragment).
    pub async fn add_candidates(&self, frag: &str) -> Result<usize, String> {
        let mut mid = None;
        let mut n = 0;
        for line in frag.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.to_owned());
            } else if let Some(c) = line.strip_prefix("a=candidate:") {
                self.peer.add_candidate(&format!("candidate:{c}"), mid.clone()).await.map_err(|e| e.to_string())?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether a fragment restarts ICE (new ufrag/pwd), which is not supported.
    pub fn is_ice_restart(frag: &str) -> bool {
        frag.lines().any(|l| l.trim().starts_with("a=ice-pwd:")) && !frag.lines().any(|l| l.trim().starts_with("a=candidate:") || l.trim() == "a=end-of-candidates")
    }
}

/// One watched camera: frames packetized once, the current GOP kept for fast start.
struct Source {
    codec: Codec,
    profile_level_id: Option<String>,
    inner: Mutex<SourceInner>,
    stop: CancellationToken,
}

struct SourceInner {
    gop: Vec<Arc<Packetized>>,
    tx: broadcast::Sender<Arc<Packetized>>,
    idle_since: Option<std::time::Instant>,
}

impl Source {
    fn start(hub: Arc<CameraHub>) -> Option<Arc<Source>> {
        let (gop_frames, mut rx) = hub.subscribe_with_gop();
        let params = gop_frames.first().map(|f| f.params.clone())?;
        let codec = Codec::of(&params)?;
        let profile_level_id = packetize::h264_profile_level_id(&params);
        let mut pk = Packetizer::default();
        let gop: Vec<Arc<Packetized>> = gop_frames.iter().filter_map(|f| pk.packetize(f)).map(Arc::new).collect();
        let (tx, _) = broadcast::channel(VIEWER_QUEUE);
        let source = Arc::new(Source {
            codec,
            profile_level_id,
            inner: Mutex::new(SourceInner { gop, tx, idle_since: None }),
            stop: CancellationToken::new(),
        });
        let s = source.clone();
        let camera = hub.id().clone();
        tokio::spawn(async move {
            let mut need_key = false;
            loop {
                let frame = tokio::select! {
                    _ = s.stop.cancelled() => return,
                    r = rx.recv() => r,
                };
                let frame = match frame {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(camera = %camera.as_str(), "live source fell {n} frames behind; waiting for a keyframe");
                        need_key = true;
                        s.inner.lock().unwrap().gop.clear();
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if need_key && !frame.is_key {
                    continue;
                }
                need_key = false;
                let Some(p) = pk.packetize(&frame) else {
                    need_key = true;
                    continue;
                };
                let p = Arc::new(p);
                let mut inner = s.inner.lock().unwrap();
                if p.is_key {
                    inner.gop.clear();
                }
                if !inner.gop.is_empty() || p.is_key {
                    inner.gop.push(p.clone());
                }
                let _ = inner.tx.send(p);
            }
        });
        Some(source)
    }

    /// The current GOP and a subscription continuing right after it.
    fn join(&self) -> (Vec<Arc<Packetized>>, broadcast::Receiver<Arc<Packetized>>) {
        let mut inner = self.inner.lock().unwrap();
        inner.idle_since = None;
        (inner.gop.clone(), inner.tx.subscribe())
    }
}

pub struct Live {
    pub cfg: LiveConfig,
    policy: PolicyConfig,
    db: Db,
    fleet: Arc<Fleet>,
    ports: Ports,
    sources: Mutex<HashMap<CameraId, Arc<Source>>>,
    /// Sub-streams (`sub_url`) being received for live view only, never recorded.
    subs: Mutex<HashMap<CameraId, (Arc<CameraHub>, CancellationToken)>>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    ended: Mutex<VecDeque<Arc<Session>>>,
    /// Serialises parents' admissions (the per-family cap).
    admit: tokio::sync::Mutex<()>,
    /// Wakes the guard when a session or a source starts; it sleeps while there is none.
    guard_wake: tokio::sync::Notify,
    pub stats: LiveStats,
}

impl Live {
    pub fn new(cfg: LiveConfig, policy: PolicyConfig, db: Db, fleet: Arc<Fleet>) -> Arc<Live> {
        Arc::new(Live {
            ports: Ports::new(cfg.udp_ports),
            cfg,
            policy,
            db,
            fleet,
            sources: Mutex::new(HashMap::new()),
            subs: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            ended: Mutex::new(VecDeque::new()),
            admit: tokio::sync::Mutex::new(()),
            guard_wake: tokio::sync::Notify::new(),
            stats: LiveStats::default(),
        })
    }

    pub fn policy(&self) -> &PolicyConfig {
        &self.policy
    }

    pub fn active(&self) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self.sessions.lock().unwrap().values().cloned().collect();
        v.sort_by_key(|s| s.started_us);
        v
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        if let Some(s) = self.sessions.lock().unwrap().get(id) {
            return Some(s.clone());
        }
        self.ended.lock().unwrap().iter().find(|s| s.id == id).cloned()
    }

    /// Active streams of a family.
    pub fn family_streams(&self, family: &[String]) -> usize {
        self.sessions.lock().unwrap().values().filter(|s| family.contains(&s.username)).count()
    }

    pub fn ports_in_use(&self) -> usize {
        self.ports.in_use()
    }

    /// The camera's live source: its sub-stream when `sub_url` is set, else the
    /// recorded main stream. A sub-stream is received only while someone watches; the
    /// first viewer waits (at most [`SUB_STREAM_WAIT`]) for its first keyframe.
    async fn source(&self, hub: &Arc<CameraHub>) -> Option<Arc<Source>> {
        if let Some(s) = self.sources.lock().unwrap().get(hub.id()) {
            return Some(s.clone());
        }
        let feed = match &hub.config.sub_url {
            None => hub.clone(),
            Some(sub) => {
                let feed = self.sub_stream(hub, sub);
                let deadline = tokio::time::Instant::now() + SUB_STREAM_WAIT;
                while feed.latest_keyframe().is_none() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                feed
            }
        };
        let mut sources = self.sources.lock().unwrap();
        if let Some(s) = sources.get(hub.id()) {
            return Some(s.clone());
        }
        match Source::start(feed) {
            Some(s) => {
                sources.insert(hub.id().clone(), s.clone());
                self.guard_wake.notify_one();
                Some(s)
            }
            None => {
                if let Some((_, stop)) = self.subs.lock().unwrap().remove(hub.id()) {
                    stop.cancel();
                }
                None
            }
        }
    }

    fn sub_stream(&self, hub: &Arc<CameraHub>, sub: &url::Url) -> Arc<CameraHub> {
        let mut subs = self.subs.lock().unwrap();
        if let Some((h, _)) = subs.get(hub.id()) {
            return h.clone();
        }
        let mut cfg = hub.config.clone();
        cfg.url = sub.clone();
        cfg.sub_url = None;
        let feed = CameraHub::new(cfg);
        let (tx, mut rx) = crate::hub::recorder_queue();
        let stop = CancellationToken::new();
        // Nothing records the sub-stream: its recorder queue is drained and dropped.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        crate::ingest::spawn(feed.clone(), tx, None, stop.clone());
        info!(camera = %hub.id().as_str(), "live view: receiving the sub-stream {}{}", sub.host_str().unwrap_or(""), sub.path());
        subs.insert(hub.id().clone(), (feed.clone(), stop));
        feed
    }

    /// Whether `p` may watch `camera` now (for parents: every rule; operators and
    /// admins: any camera; other roles: never).
    pub async fn check(&self, p: &Principal, camera: &str) -> crate::centre::Result<Result<access::Grant, Denial>> {
        match p.role {
            Role::Admin | Role::Operator => Ok(Ok(access::Grant { classroom: None, until: None, until_us: None })),
            Role::Parent => access::parent_access(&self.db, &self.policy, &p.username, camera, now_us()).await,
            other => Ok(Err(Denial::new("role", format!("the {} role cannot watch live video", other.as_str())))),
        }
    }

    /// Admits `p` to watch `camera` with the SDP `offer`: checks the rules, answers,
    /// audits the start, and starts sending. Returns the session and the answer.
    pub async fn start(self: &Arc<Self>, p: &Principal, camera: &str, offer: &str) -> Result<(Arc<Session>, String), StartError> {
        let refuse = |e: StartError| {
            self.stats.sessions_refused.fetch_add(1, Ordering::Relaxed);
            e
        };
        let id = CameraId::parse(camera).map_err(|_| refuse(StartError::NoCamera(format!("no camera {camera:?}"))))?;
        let hub = self.fleet.hub(&id).ok_or_else(|| refuse(StartError::NoCamera(format!("no camera {camera:?}"))))?;
        match self.check(p, camera).await {
            Ok(Ok(_)) => {}
            Ok(Err(d)) => return Err(refuse(StartError::Denied(d))),
            Err(e) => return Err(refuse(StartError::Internal(e.to_string()))),
        }
        let Some(source) = self.source(&hub).await else {
            return Err(refuse(StartError::Offline(format!(
                "camera {camera:?} is not delivering video now ({}); try again when it is recording",
                hub.state().name()
            ))));
        };
        // Parents are admitted one at a time, so two requests cannot both take a
        // family's last stream; staff have no cap and never wait here.
        let admission = if p.role == Role::Parent { Some(self.admit.lock().await) } else { None };
        if admission.is_some() {
            let family = self.db.family_of(&p.username).await.map_err(|e| refuse(StartError::Internal(e.to_string())))?;
            let n = self.family_streams(&family);
            if n >= self.cfg.max_streams_per_family {
                return Err(refuse(StartError::Denied(Denial::new(
                    "family_limit",
                    format!("your family already watches {n} live streams (at most {}); stop one first", self.cfg.max_streams_per_family),
                ))));
            }
        }
        let (peer, answer) = Peer::answer(&self.cfg, &self.ports, source.codec, source.profile_level_id.as_deref(), offer)
            .await
            .map_err(|e| {
                refuse(match e {
                    PeerError::Offer(m) if m.contains("never transcodes") => StartError::Codec(m),
                    PeerError::Offer(m) => StartError::Offer(m),
                    e @ PeerError::NoPort(..) => StartError::Busy(e.to_string()),
                    PeerError::Internal(m) => StartError::Internal(m),
                })
            })?;
        let started_us = now_us();
        let session = Arc::new(Session {
            id: random_id(),
            camera: id.clone(),
            username: p.username.clone(),
            display_name: p.display_name.clone(),
            role: p.role,
            login: p.session.clone(),
            addr: p.addr.clone(),
            started_us,
            deadline_us: (p.role == Role::Parent).then(|| started_us + self.cfg.max_session.as_micros() as i64),
            etag: format!("\"{}\"", random_id()),
            stream: if hub.config.sub_url.is_some() { "sub" } else { "main" },
            bytes: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            first_frame_us: AtomicI64::new(0),
            peer,
            stop: CancellationToken::new(),
            ending: Mutex::new(None),
        });
        self.sessions.lock().unwrap().insert(session.id.clone(), session.clone());
        self.guard_wake.notify_one();
        drop(admission);
        self.stats.sessions_started.fetch_add(1, Ordering::Relaxed);
        self.audit(&session, Action::LiveViewStart, json!({ "session": session.id, "codec": source.codec.mime(), "port": session.peer.port })).await;
        info!(camera = %camera, user = %p.username, session = %session.id, "live view started");
        let live = self.clone();
        let s = session.clone();
        tokio::spawn(async move { live.run(s, source).await });
        Ok((session, answer))
    }

    async fn audit(&self, s: &Session, action: Action, detail: serde_json::Value) {
        let entry = NewEntry {
            actor: Some(s.username.clone()),
            actor_role: Some(s.role.as_str().to_owned()),
            action,
            target: Some(format!("camera:{}", s.camera.as_str())),
            addr: s.addr.clone(),
            detail,
        };
        if let Err(e) = audit::append(&self.db, entry).await {
            // The session is already running; refusing now would not undo the view.
            warn!(session = %s.id, "cannot audit live view: {e}");
        }
    }

    /// Runs a session to its end, then closes, audits and files it.
    async fn run(self: Arc<Self>, s: Arc<Session>, source: Arc<Source>) {
        let (reason, message) = match self.pump(&s, &source).await {
            Ok(()) => ("ended", String::new()),
            Err((r, m)) => (r, m),
        };
        s.end(reason, message);
        s.peer.close().await;
        self.ports.give_back(s.peer.port);
        self.sessions.lock().unwrap().remove(&s.id);
        {
            let mut ended = self.ended.lock().unwrap();
            ended.push_back(s.clone());
            while ended.len() > ENDED_KEPT {
                ended.pop_front();
            }
        }
        if source.inner.lock().unwrap().tx.receiver_count() == 0 {
            source.inner.lock().unwrap().idle_since = Some(std::time::Instant::now());
        }
        let e = s.ending().expect("ended above");
        info!(camera = %s.camera.as_str(), user = %s.username, session = %s.id, reason = e.reason, "live view ended");
        self.audit(
            &s,
            Action::LiveViewStop,
            json!({
                "session": s.id,
                "started": crate::time::format_rfc3339(s.started_us),
                "ended": crate::time::format_rfc3339(e.at_us),
                "reason": e.reason,
                "message": e.message,
                "bytes_sent": s.bytes.load(Ordering::Relaxed),
                "frames_sent": s.frames.load(Ordering::Relaxed),
            }),
        )
        .await;
    }

    /// Waits for the connection, then sends the GOP and every frame after it until the
    /// session is ended or the connection goes away.
    async fn pump(&self, s: &Session, source: &Source) -> Result<(), (&'static str, String)> {
        let mut state = s.peer.state.clone();
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match *state.borrow_and_update() {
                    RTCPeerConnectionState::Connected => return Ok(()),
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => return Err(()),
                    _ => {}
                }
                if state.changed().await.is_err() {
                    return Err(());
                }
            }
        });
        tokio::select! {
            _ = s.stop.cancelled() => return Ok(()),
            r = connected => match r {
                Ok(Ok(())) => {}
                _ => return Err(("connection_lost", "the viewer did not connect (ICE/DTLS failed or timed out)".into())),
            },
        }
        let (gop, mut rx) = source.join();
        let mut out = Outgoing { ssrc: s.peer.ssrc, pt: s.peer.payload_type, seq: rand::random(), base: rand::random::<u32>() as i64, last: None };
        // Fast start: the current GOP, squeezed to one tick per frame and ending at the
        // newest frame's own time, so live frames continue from it.
        let n = gop.len() as i64;
        for (i, f) in gop.iter().enumerate() {
            let ts = f.ts_90k - (n - 1 - i as i64);
            self.send(s, &mut out, f, ts, false).await?;
        }
        let mut follow = Follow { need_key: gop.is_empty() };
        let mut disconnected_at: Option<tokio::time::Instant> = None;
        loop {
            let frame = tokio::select! {
                _ = s.stop.cancelled() => return Ok(()),
                _ = state.changed() => {
                    match *state.borrow_and_update() {
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                            return Err(("connection_lost", "the viewer's connection closed".into()));
                        }
                        RTCPeerConnectionState::Disconnected => disconnected_at = Some(tokio::time::Instant::now()),
                        _ => disconnected_at = None,
                    }
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)), if disconnected_at.is_some() => {
                    if disconnected_at.is_some_and(|t| t.elapsed() >= DISCONNECTED_GRACE) {
                        return Err(("connection_lost", "the viewer stopped answering".into()));
                    }
                    continue;
                }
                r = rx.recv() => r,
            };
            match follow.take(frame) {
                Step::Send(f) => {
                    if f.codec != source.codec {
                        return Err(("stream_changed", "the camera changed codec; start again".into()));
                    }
                    let ts = f.ts_90k;
                    self.send(s, &mut out, &f, ts, true).await?;
                }
                Step::Skip(k) => {
                    self.stats.frames_skipped.fetch_add(k, Ordering::Relaxed);
                }
                Step::Closed => return Err(("camera_gone", "the camera's stream ended".into())),
            }
        }
    }

    async fn send(&self, s: &Session, out: &mut Outgoing, f: &Packetized, ts_90k: i64, live: bool) -> Result<(), (&'static str, String)> {
        let ts = out.timestamp(ts_90k);
        let last = f.payloads.len() - 1;
        let mut bytes = 0u64;
        for (i, payload) in f.payloads.iter().enumerate() {
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    marker: i == last,
                    payload_type: out.pt,
                    sequence_number: out.seq,
                    timestamp: ts,
                    ssrc: out.ssrc,
                    ..Default::default()
                },
                payload: payload.clone(),
            };
            out.seq = out.seq.wrapping_add(1);
            bytes += payload.len() as u64 + 12;
            if let Err(e) = s.peer.send(packet).await {
                return Err(("connection_lost", format!("cannot send to the viewer: {e}")));
            }
        }
        s.bytes.fetch_add(bytes, Ordering::Relaxed);
        if s.frames.fetch_add(1, Ordering::Relaxed) == 0 {
            s.first_frame_us.store(now_us(), Ordering::Relaxed);
        }
        self.stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        self.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
        if live {
            self.stats.observe(now_us() - f.arrival_us);
        }
        Ok(())
    }

    /// Ends a session at the viewer's request (`DELETE`).
    pub fn stop(&self, id: &str) -> bool {
        match self.sessions.lock().unwrap().get(id) {
            Some(s) => {
                s.end("ended_by_viewer", "the viewer stopped");
                true
            }
            None => false,
        }
    }

    /// Ends every session (server stopping) and waits briefly for their audit entries.
    pub async fn stop_all(&self) {
        for s in self.active() {
            s.end("server_shutdown", "the server is stopping");
        }
        for _ in 0..30 {
            if self.sessions.lock().unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Re-checks every running session; ends those whose rules no longer hold. While no
    /// session runs and no source is kept, it sleeps until one starts.
    pub async fn guard(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(GUARD_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let idle = self.sessions.lock().unwrap().is_empty() && self.sources.lock().unwrap().is_empty();
            if idle {
                // A start between the check and the wait leaves a permit: no wake is lost.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.guard_wake.notified() => tick.reset(),
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.recheck().await {
                warn!("live view: cannot re-check sessions: {e}");
            }
            self.stop_idle_sources();
        }
    }

    fn stop_idle_sources(&self) {
        let mut sources = self.sources.lock().unwrap();
        let mut stopped = Vec::new();
        sources.retain(|id, s| {
            let mut inner = s.inner.lock().unwrap();
            if inner.tx.receiver_count() > 0 {
                inner.idle_since = None;
                return true;
            }
            let since = *inner.idle_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= SOURCE_IDLE {
                s.stop.cancel();
                stopped.push(id.clone());
                return false;
            }
            true
        });
        drop(sources);
        let mut subs = self.subs.lock().unwrap();
        for id in stopped {
            if let Some((_, stop)) = subs.remove(&id) {
                stop.cancel();
            }
        }
    }

    /// One pass of the guard.
    pub async fn recheck(&self) -> crate::centre::Result<()> {
        let sessions = self.active();
        if sessions.is_empty() {
            return Ok(());
        }
        let now = now_us();
        let mut logins: HashMap<String, Option<(&'static str, String)>> = HashMap::new();
        let mut rules: HashMap<(String, String), Option<Denial>> = HashMap::new();
        for s in sessions {
            if s.deadline_us.is_some_and(|d| now >= d) {
                s.end("session_limit", format!("live sessions last at most {} minutes; start again to keep watching", self.cfg.max_session.as_secs() / 60));
                continue;
            }
            if !logins.contains_key(&s.login) {
                let verdict = self.login_verdict(&s, now).await?;
                logins.insert(s.login.clone(), verdict);
            }
            if let Some((reason, msg)) = logins[&s.login].clone() {
                s.end(reason, msg);
                continue;
            }
            if s.role != Role::Parent {
                continue;
            }
            let key = (s.username.clone(), s.camera.as_str().to_owned());
            if !rules.contains_key(&key) {
                let d = access::parent_access(&self.db, &self.policy, &key.0, &key.1, now).await?.err();
                rules.insert(key.clone(), d);
            }
            if let Some(d) = &rules[&key] {
                let reason = if d.code == "not_yours" { "moved" } else { d.code };
                let message = if d.code == "not_yours" {
                    "this camera is no longer in your child's classroom (child moved, link ended or camera changed)".to_owned()
                } else {
                    d.message.clone()
                };
                s.end(reason, message);
            }
        }
        Ok(())
    }

    /// Whether the login behind a session still stands (`None`) or why not.
    async fn login_verdict(&self, s: &Session, now: WallUs) -> crate::centre::Result<Option<(&'static str, String)>> {
        let row = self.db.session(&s.login).await?;
        Ok(match row {
            None => Some(("account", "the login session is gone".into())),
            Some(r) if r.revoked_at_us.is_some() => Some(("account", "the login session was ended (signed out or revoked)".into())),
            Some(r) if now >= r.expires_at_us => Some(("account", "the login session expired; sign in again".into())),
            Some(r) if r.user.disabled_at_us.is_some() => Some(("account", "the account is disabled".into())),
            Some(r) if r.user.role != s.role.as_str() => Some(("account", "the account's role changed".into())),
            Some(_) => None,
        })
    }

    /// Prometheus lines for /metrics.
    pub fn metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let st = &self.stats;
        let _ = writeln!(out, "# HELP cradle_live_sessions Live-view sessions now running.\n# TYPE cradle_live_sessions gauge\ncradle_live_sessions {}", self.sessions.lock().unwrap().len());
        let _ = writeln!(out, "# TYPE cradle_live_sessions_started_total counter\ncradle_live_sessions_started_total {}", st.sessions_started.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE cradle_live_sessions_refused_total counter\ncradle_live_sessions_refused_total {}", st.sessions_refused.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE cradle_live_bytes_sent_total counter\ncradle_live_bytes_sent_total {}", st.bytes_sent.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE cradle_live_frames_sent_total counter\ncradle_live_frames_sent_total {}", st.frames_sent.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE cradle_live_frames_skipped_total counter\ncradle_live_frames_skipped_total {}", st.frames_skipped.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP cradle_live_send_delay_seconds Frame arrival at the hub to its last RTP packet handed to the viewer's connection.\n# TYPE cradle_live_send_delay_seconds histogram");
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cum += st.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "cradle_live_send_delay_seconds_bucket{{le=\"{}\"}} {cum}", *b as f64 / 1000.0);
        }
        cum += st.latency[LATENCY_BUCKETS_MS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "cradle_live_send_delay_seconds_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "cradle_live_send_delay_seconds_sum {}", st.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "cradle_live_send_delay_seconds_count {cum}");
    }
}

/// Which frames a viewer sends: every one, except after frames were lost (the viewer
/// fell behind, or joined without a GOP) until the next keyframe, which the decoder can
/// start from.
struct Follow {
    need_key: bool,
}

enum Step {
    Send(Arc<Packetized>),
    Skip(u64),
    Closed,
}

impl Follow {
    fn take(&mut self, r: Result<Arc<Packetized>, broadcast::error::RecvError>) -> Step {
        match r {
            Ok(f) if self.need_key && !f.is_key => Step::Skip(1),
            Ok(f) => {
                self.need_key = false;
                Step::Send(f)
            }
            Err(broadcast::error::RecvError::Lagged(k)) => {
                self.need_key = true;
                Step::Skip(k)
            }
            Err(broadcast::error::RecvError::Closed) => Step::Closed,
        }
    }
}

/// Per-viewer RTP numbering.
struct Outgoing {
    ssrc: u32,
    pt: u8,
    seq: u16,
    /// Added to the camera's 90 kHz time (random start, re-based on jumps).
    base: i64,
    last: Option<(i64, u32)>,
}

impl Outgoing {
    /// The RTP timestamp for a frame at `ts_90k`: continuous across camera reconnects
    /// (a new run restarts the camera's clock) and never going backwards.
    fn timestamp(&mut self, ts_90k: i64) -> u32 {
        if let Some((prev_in, prev_out)) = self.last {
            let d = ts_90k - prev_in;
            if !(0..=10 * 90_000).contains(&d) {
                // Jumped: continue one 25 fps frame after the previous output.
                self.base = (prev_out as i64 + 3600) - ts_90k;
            }
        }
        let out = (ts_90k + self.base) as u32;
        self.last = Some((ts_90k, out));
        out
    }
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_continue_across_a_camera_reconnect() {
        let mut o = Outgoing { ssrc: 1, pt: 102, seq: 0, base: 1000, last: None };
        assert_eq!(o.timestamp(0), 1000);
        assert_eq!(o.timestamp(3600), 4600);
        // New camera run: its clock starts again near zero.
        assert_eq!(o.timestamp(90), 8200);
        assert_eq!(o.timestamp(3690), 11800);
    }

    fn hub() -> Arc<CameraHub> {
        let cfg = crate::config::CameraFields {
            id: "cam".into(),
            name: None,
            url: "rtsp://127.0.0.1:1/x".into(),
            username: None,
            password: None,
            sub_url: None,
            transport: None,
            retention_days: None,
        }
        .validate(crate::config::EnvRefs::Literal)
        .unwrap();
        CameraHub::new(cfg)
    }

    fn publish(hub: &CameraHub, params: &Arc<crate::hub::StreamParams>, n: i64, key: bool) {
        let data = bytes::Bytes::from(vec![0, 0, 0, 4, if key { 0x65 } else { 0x41 }, 1, 2, 3]);
        hub.publish(&Arc::new(crate::hub::Frame { ts_90k: n * 3600, arrival_us: n, is_key: key, data, params: params.clone() }));
    }

    #[tokio::test]
    async fn a_viewer_joins_at_the_gop_and_a_laggard_resumes_at_a_keyframe() {
        let hub = hub();
        let sps = [0x67, 0x42, 0xe0, 0x1f, 0xda];
        let mut avcc = vec![1, 0x42, 0xe0, 0x1f, 0xff, 0xe1, 0, sps.len() as u8];
        avcc.extend_from_slice(&sps);
        avcc.extend_from_slice(&[1, 0, 2, 0x68, 0xce]);
        let mut entry = vec![0u8; 78];
        entry.extend_from_slice(&((avcc.len() + 8) as u32).to_be_bytes());
        entry.extend_from_slice(b"avcC");
        entry.extend_from_slice(&avcc);
        let params = Arc::new(crate::hub::StreamParams { codec: "avc1.42e01f".into(), sample_entry: entry, width: 64, height: 64 });
        // Before any keyframe there is nothing to start from.
        publish(&hub, &params, 0, false);
        assert!(Source::start(hub.clone()).is_none());
        publish(&hub, &params, 1, true);
        publish(&hub, &params, 2, false);
        publish(&hub, &params, 3, false);
        let source = Source::start(hub.clone()).unwrap();
        let (gop, mut rx) = source.join();
        assert_eq!(gop.iter().map(|f| (f.ts_90k / 3600, f.is_key)).collect::<Vec<_>>(), vec![(1, true), (2, false), (3, false)]);
        assert_eq!(gop[0].payloads[0][0] & 0x1f, 24, "the keyframe starts with SPS+PPS");

        // The viewer reads nothing while far more than its queue arrives.
        for n in 4..(4 + VIEWER_QUEUE as i64 + 10) {
            publish(&hub, &params, n, false);
            tokio::task::yield_now().await;
        }
        let key_at = 4 + VIEWER_QUEUE as i64 + 10;
        publish(&hub, &params, key_at, true);
        publish(&hub, &params, key_at + 1, false);
        let mut follow = Follow { need_key: false };
        let mut sent = Vec::new();
        let mut skipped = 0;
        while sent.len() < 2 {
            let r = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.expect("frames keep coming");
            match follow.take(r) {
                Step::Send(f) => sent.push(f.ts_90k / 3600),
                Step::Skip(k) => skipped += k,
                Step::Closed => panic!("closed"),
            }
        }
        assert!(skipped >= 10, "the laggard lost frames ({skipped})");
        assert_eq!(sent, vec![key_at, key_at + 1], "it resumed at the next keyframe, then followed it");
        // The hub's GOP restarted at that keyframe too.
        assert_eq!(hub.latest_keyframe().unwrap().ts_90k, key_at * 3600);
    }

    #[test]
    fn latency_lands_in_its_bucket() {
        let st = LiveStats::default();
        st.observe(500);
        st.observe(15_000);
        st.observe(5_000_000);
        assert_eq!(st.latency[0].load(Ordering::Relaxed), 1);
        assert_eq!(st.latency[4].load(Ordering::Relaxed), 1);
        assert_eq!(st.latency[10].load(Ordering::Relaxed), 1);
    }
}
