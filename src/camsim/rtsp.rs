//! One RTSP/1.0 connection (RFC 2326): request parsing, the method handlers
//! and the paced RTP sender, all in a single task per client.
//!
//! The task `select!`s between reading the socket and the next frame's due
//! time, so keepalives, RTCP receiver reports and TEARDOWN are handled while
//! playing. Writes happen in the select arms, never inside a racing future,
//! so a response can never land in the middle of a frame's packets. A slow
//! client simply makes `write_all` wait (TCP back-pressure); nothing is
//! queued beyond the one reused frame buffer. A client that fell behind gets
//! the overdue frames back to back (never ahead of real time); past
//! [`MAX_LAG`] the schedule is re-based instead. RTP timestamps stay
//! continuous either way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::auth::Auth;
use super::clip::FPS;
use super::rtp::Sender;
use super::{Faults, Library, Mount, Options};

/// RFC 2326 §12.37: advertised session timeout. Clients keep alive at half.
const SESSION_TIMEOUT_S: u32 = 60;
const IDLE_TIMEOUT: Duration = Duration::from_secs(SESSION_TIMEOUT_S as u64);
const SR_INTERVAL: Duration = Duration::from_secs(5);
/// How far behind schedule a slow client may fall before we stop catching up.
const MAX_LAG: Duration = Duration::from_secs(2);
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;
const FRAME_INTERVAL: Duration = Duration::from_micros(1_000_000 / FPS as u64);
const PUBLIC: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER";

/// State shared by all connections of one server.
pub(crate) struct Shared {
    streams: usize,
    auth: Option<Auth>,
    library: Library,
    faults: Faults,
}

impl Shared {
    pub(crate) fn new(opts: Options, library: Library) -> Self {
        let auth = match (opts.username, opts.password) {
            (None, None) => None,
            (u, p) => Some(Auth::new(u.unwrap_or_default(), p.unwrap_or_default())),
        };
        Shared {
            streams: opts.streams,
            auth,
            library,
            faults: opts.faults,
        }
    }
}

pub(crate) async fn serve_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    // Responses are small and must not wait for Nagle; frames are one write.
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    debug!(%peer, "camsim: connection opened");
    let mut conn = Conn {
        shared,
        peer,
        local,
        session: None,
        inbuf: BytesMut::with_capacity(4096),
        out: Vec::new(),
    };
    match conn.run(&mut stream, &shutdown).await {
        Ok(()) => debug!(%peer, "camsim: connection closed"),
        Err(e) => debug!(%peer, "camsim: connection ended: {e:#}"),
    }
    if let Some(s) = &conn.session {
        info!(%peer, mount = %s.mount, frames = s.next_frame, "camsim: session ended");
    }
}

struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// At most one session per connection: Cradle, retina and ffmpeg open a
    /// connection per stream.
    session: Option<Session>,
    inbuf: BytesMut,
    /// Reused for every response and frame.
    out: Vec<u8>,
}

struct Session {
    id: String,
    mount: Mount,
    setup_url: String,
    sender: Sender,
    /// Frames sent so far; frame k carries rtptime ts0 + k*3600.
    next_frame: u64,
    playing: Option<Playing>,
    garbage: Option<StdRng>,
}

/// Pacing: frame k is due at `base + (k - base_frame) * 40 ms`.
struct Playing {
    base: Instant,
    base_frame: u64,
    next_sr: Instant,
    /// When PLAY came (for [`Faults::drop_after`] and [`Faults::freeze_after`]).
    since: Instant,
    /// The video has frozen ([`Faults::freeze_after`]).
    frozen: bool,
}

impl Session {
    fn due(&self) -> Option<Instant> {
        let p = self.playing.as_ref()?;
        let n = u32::try_from(self.next_frame - p.base_frame).unwrap_or(u32::MAX);
        Some(p.base + FRAME_INTERVAL * n)
    }
}

struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The id part of the `Session` header (RFC 2326 §12.37).
    fn session_id(&self) -> Option<&str> {
        self.header("Session")
            .map(|s| s.split(';').next().unwrap_or("").trim())
    }
}

enum Message {
    /// `$`-framed data from the client (RTCP receiver reports): ignored.
    Interleaved,
    Request(Request),
    /// A complete but unparseable request: answer and carry on.
    Bad {
        cseq: Option<String>,
        status: u16,
    },
}

/// Takes one complete message off the front of `buf`, if there is one.
/// Errors only when the stream can no longer be framed.
fn take_message(buf: &mut BytesMut) -> Result<Option<Message>> {
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    buf.advance(skip);
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'$' {
        // RFC 2326 §10.12: '$', channel, 16-bit length, data.
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = 4 + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < len {
            return Ok(None);
        }
        buf.advance(len);
        return Ok(Some(Message::Interleaved));
    }
    let Some(head_len) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        if buf.len() > MAX_HEAD {
            bail!("no end of request head within {MAX_HEAD} bytes");
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let cseq = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("CSeq"))
        .map(|(_, v)| v.clone());
    let body_len = match headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
    {
        None => 0,
        Some((_, v)) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_BODY => n,
            _ => bail!("bad Content-Length {v:?}"),
        },
    };
    if buf.len() < head_len + body_len {
        return Ok(None);
    }
    buf.advance(head_len + body_len);

    let parts: Vec<&str> = request_line.split_ascii_whitespace().collect();
    let msg = match parts[..] {
        [method, url, "RTSP/1.0"] => Message::Request(Request {
            method: method.to_string(),
            url: url.to_string(),
            headers,
        }),
        [_, _, v] if v.starts_with("RTSP/") => Message::Bad { cseq, status: 505 },
        _ => Message::Bad { cseq, status: 400 },
    };
    Ok(Some(msg))
}

/// The path of an RTSP URL (`rtsp://host:port/path?q` → `/path`).
fn url_path(url: &str) -> &str {
    let path = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => url,
    };
    path.split(['?', '#']).next().unwrap_or("")
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        501 => "Not Implemented",
        505 => "RTSP Version Not Supported",
        551 => "Option not supported",
        _ => "Error",
    }
}

/// A response under construction (RFC 2326 §7).
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, String)>,
}

impl Reply {
    fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: None,
        }
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl Conn {
    async fn run(&mut self, stream: &mut TcpStream, shutdown: &CancellationToken) -> Result<()> {
        let mut timer = Box::pin(tokio::time::sleep_until(Instant::now()));
        let mut last_rx = Instant::now();
        loop {
            while let Some(msg) = self.next_message() {
                let msg = match msg {
                    Ok(msg) => msg,
                    Err(e) => {
                        // The byte stream can no longer be framed: say so and hang up.
                        self.out.clear();
                        encode(&mut self.out, None, &Reply::status(400));
                        let _ = write_all(stream, &self.out, shutdown).await;
                        return Err(e);
                    }
                };
                let (cseq, reply) = match msg {
                    Message::Interleaved => continue,
                    Message::Bad { cseq, status } => {
                        debug!(peer = %self.peer, status, "camsim: unparseable request");
                        (cseq, Reply::status(status))
                    }
                    Message::Request(req) => {
                        debug!(peer = %self.peer, method = %req.method, url = %req.url, "camsim: request");
                        (req.header("CSeq").map(str::to_string), self.handle(&req))
                    }
                };
                self.out.clear();
                encode(&mut self.out, cseq.as_deref(), &reply);
                write_all(stream, &self.out, shutdown).await?;
            }

            // While playing, the timer paces frames; otherwise it enforces the
            // advertised session timeout, so half-open connections go away.
            let due = self.session.as_ref().and_then(Session::due);
            timer.as_mut().reset(due.unwrap_or(last_rx + IDLE_TIMEOUT));
            self.inbuf.reserve(4096);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                read = stream.read_buf(&mut self.inbuf) => {
                    if read.context("reading from client")? == 0 {
                        return Ok(());
                    }
                    last_rx = Instant::now();
                }
                () = &mut timer => {
                    if due.is_none() {
                        bail!("idle for {IDLE_TIMEOUT:?} without playing");
                    }
                    self.send_frame(stream, shutdown).await?;
                }
            }
        }
    }

    fn next_message(&mut self) -> Option<Result<Message>> {
        match take_message(&mut self.inbuf) {
            Ok(None) => None,
            Ok(Some(m)) => Some(Ok(m)),
            Err(e) => {
                self.inbuf.clear();
                Some(Err(e))
            }
        }
    }

    fn handle(&mut self, req: &Request) -> Reply {
        if req.header("Require").is_some() {
            // RFC 2326 §12.32: we implement no extensions.
            return Reply::status(551).header("Unsupported", req.header("Require").unwrap_or(""));
        }
        if req.method == "OPTIONS" {
            return Reply::status(200).header("Public", PUBLIC);
        }
        if let Some(auth) = &self.shared.auth {
            if !auth.check(&req.method, req.header("Authorization")) {
                if let Some(h) = req.header("Authorization") {
                    let scheme = h.split(' ').next().unwrap_or("");
                    debug!(peer = %self.peer, scheme, "camsim: bad credentials");
                }
                let mut reply = Reply::status(401);
                for challenge in auth.challenges() {
                    reply = reply.header("WWW-Authenticate", challenge);
                }
                return reply;
            }
        }
        match req.method.as_str() {
            "DESCRIBE" => self.describe(req),
            "SETUP" => self.setup(req),
            "PLAY" => self.play(req),
            "PAUSE" => self.pause(req),
            "TEARDOWN" => self.teardown(req),
            "GET_PARAMETER" | "SET_PARAMETER" => match self.check_session(req, false) {
                Ok(_) => Reply::status(200),
                Err(status) => Reply::status(status),
            },
            _ => Reply::status(501).header("Public", PUBLIC),
        }
    }

    fn mount(&self, req: &Request) -> Option<Mount> {
        self.shared.library.resolve(url_path(&req.url), self.shared.streams)
    }

    fn describe(&mut self, req: &Request) -> Reply {
        let Some(mount) = self.mount(req) else {
            return Reply::status(404);
        };
        let (net, ip) = match self.local.map(|a| a.ip()) {
            Some(ip @ std::net::IpAddr::V6(_)) => ("IP6", ip.to_string()),
            Some(ip) => ("IP4", ip.to_string()),
            None => ("IP4", "0.0.0.0".to_string()),
        };
        // RFC 4566 §5; the session-level a=control:* makes PLAY use the
        // Content-Base, and a=range:npt=0- marks a live source.
        let sdp = format!(
            "v=0\r\n\
             o=- 0 1 IN {net} {ip}\r\n\
             s=Cradle camsim {mount}\r\n\
             t=0 0\r\n\
             a=control:*\r\n\
             a=range:npt=0-\r\n\
             {media}",
            media = self.shared.library.source(&mount).sdp_media,
        );
        let mut reply = Reply::status(200).header(
            "Content-Base",
            format!("{}/", req.url.trim_end_matches('/')),
        );
        reply.body = Some(("application/sdp", sdp));
        reply
    }

    /// Checks the request's Session header against ours. With `required`,
    /// a missing header is an error too.
    fn check_session(&self, req: &Request, required: bool) -> Result<(), u16> {
        match (req.session_id(), &self.session) {
            (Some(id), Some(s)) if id == s.id => Ok(()),
            (Some(_), _) => Err(454),
            (None, _) if required => Err(454),
            (None, _) => Ok(()),
        }
    }

    fn setup(&mut self, req: &Request) -> Reply {
        let Some(mount) = self.mount(req) else {
            return Reply::status(404);
        };
        let Some(transport) = req.header("Transport") else {
            return Reply::status(400);
        };
        // RFC 2326 §12.39: a comma-separated list of acceptable transports.
        let Some(channel) = transport.split(',').find_map(tcp_interleaved_channel) else {
            return Reply::status(461);
        };
        let Some(channel) = channel.filter(|c| *c < 255) else {
            return Reply::status(400);
        };
        if let Err(status) = self.check_session(req, false) {
            return Reply::status(status);
        }
        match &mut self.session {
            Some(s) if s.mount != mount => return Reply::status(459),
            Some(s) if s.playing.is_some() => return Reply::status(455),
            Some(s) => s.sender.channel = channel,
            None => {
                let id = format!("{:016X}", rand::rng().random::<u64>());
                let garbage = (mount == Mount::Garbage).then(|| StdRng::from_rng(&mut rand::rng()));
                self.session = Some(Session {
                    id,
                    mount,
                    setup_url: req.url.clone(),
                    sender: Sender::with_rate(channel, self.shared.faults.rtp_clock_ppm),
                    next_frame: 0,
                    playing: None,
                    garbage,
                });
            }
        }
        let s = self.session.as_ref().expect("set just above");
        Reply::status(200)
            .header(
                "Transport",
                format!(
                    "RTP/AVP/TCP;unicast;interleaved={}-{};ssrc={:08X}",
                    channel,
                    channel + 1,
                    s.sender.ssrc
                ),
            )
            .header("Session", format!("{};timeout={SESSION_TIMEOUT_S}", s.id))
    }

    fn play(&mut self, req: &Request) -> Reply {
        if let Err(status) = self.check_session(req, true) {
            return Reply::status(status);
        }
        let Some(s) = self.session.as_mut() else {
            return Reply::status(454);
        };
        if self.shared.library.resolve(url_path(&req.url), self.shared.streams).as_ref() != Some(&s.mount) {
            return Reply::status(404);
        }
        if s.playing.is_none() {
            let now = Instant::now();
            s.playing = Some(Playing {
                base: now,
                base_frame: s.next_frame,
                next_sr: now,
                since: now,
                frozen: false,
            });
            info!(peer = %self.peer, mount = %s.mount, "camsim: playing");
        }
        // RFC 2326 §12.33: seq and rtptime of the first packet to be sent.
        Reply::status(200)
            .header("Range", "npt=0.000-")
            .header(
                "RTP-Info",
                format!(
                    "url={};seq={};rtptime={}",
                    s.setup_url,
                    s.sender.seq,
                    s.sender.frame_ts(s.next_frame)
                ),
            )
            .header("Session", format!("{};timeout={SESSION_TIMEOUT_S}", s.id))
    }

    fn pause(&mut self, req: &Request) -> Reply {
        if let Err(status) = self.check_session(req, true) {
            return Reply::status(status);
        }
        if let Some(s) = &mut self.session {
            s.playing = None;
        }
        Reply::status(200)
    }

    fn teardown(&mut self, req: &Request) -> Reply {
        if let Err(status) = self.check_session(req, true) {
            return Reply::status(status);
        }
        if let Some(s) = self.session.take() {
            info!(peer = %self.peer, mount = %s.mount, frames = s.next_frame, "camsim: teardown");
        }
        Reply::status(200)
    }

    async fn send_frame(
        &mut self,
        stream: &mut TcpStream,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        let Some(due) = s.due() else { return Ok(()) };
        let Some(p) = s.playing.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        let k = s.next_frame;
        if let Some(after) = self.shared.faults.drop_after {
            if now.duration_since(p.since) >= after {
                info!(peer = %self.peer, mount = %s.mount, "camsim: dropping the connection (simulated fault)");
                bail!("dropped after {after:?} of playing (simulated fault)");
            }
        }
        let frozen = self.shared.faults.freeze_after.is_some_and(|after| now.duration_since(p.since) >= after);
        if frozen && !p.frozen {
            p.frozen = true;
            info!(peer = %self.peer, mount = %s.mount, "camsim: video frozen, RTCP goes on (simulated fault)");
        }
        if now > due + MAX_LAG {
            debug!(peer = %self.peer, mount = %s.mount, "camsim: client too slow, re-basing schedule");
            p.base = now;
            p.base_frame = k;
        }
        // RTP time of wallclock `now` on the schedule, for the sender report.
        let sr_rtp_time = (now >= p.next_sr).then(|| {
            p.next_sr = now + SR_INTERVAL;
            let ticks = now.saturating_duration_since(p.base).as_micros() * 90 / 1000;
            s.sender.frame_ts(p.base_frame).wrapping_add(s.sender.ticks(ticks))
        });
        self.out.clear();
        match &mut s.garbage {
            _ if frozen => {}
            Some(rng) => s.sender.stamp_garbage(rng, k, &mut self.out),
            None => {
                let frames = &self.shared.library.source(&s.mount).packets.frames;
                let frame = &frames[(k % frames.len() as u64) as usize];
                s.sender.stamp(frame, k, &mut self.out);
            }
        }
        if let Some(rtp_time) = sr_rtp_time {
            let offset = self.shared.faults.clock_offset_ms;
            let camera_now = if offset >= 0 {
                SystemTime::now() + Duration::from_millis(offset.unsigned_abs())
            } else {
                SystemTime::now() - Duration::from_millis(offset.unsigned_abs())
            };
            s.sender.sender_report(camera_now, rtp_time, &mut self.out);
        }
        s.next_frame += 1;
        if self.out.is_empty() {
            return Ok(());
        }
        write_all(stream, &self.out, shutdown).await
    }
}

/// Parses one transport spec; `Some(channel)` if it is RTP over the RTSP
/// connection (RFC 2326 §10.12), with `None` inside for a bad channel.
fn tcp_interleaved_channel(spec: &str) -> Option<Option<u8>> {
    let mut params = spec.split(';').map(str::trim);
    let proto = params.next()?;
    if !proto.eq_ignore_ascii_case("RTP/AVP/TCP") {
        return None;
    }
    let mut channel = Some(0);
    for p in params {
        if let Some(v) = p.strip_prefix("interleaved=") {
            channel = v.split('-').next().and_then(|c| c.trim().parse().ok());
        }
    }
    Some(channel)
}

fn encode(out: &mut Vec<u8>, cseq: Option<&str>, reply: &Reply) {
    use std::fmt::Write;
    let mut head = format!("RTSP/1.0 {} {}\r\n", reply.status, reason(reply.status));
    // Values echoed from the request must not smuggle in extra lines.
    let clean = |v: &str| v.replace(['\r', '\n'], " ");
    if let Some(cseq) = cseq {
        let _ = write!(head, "CSeq: {}\r\n", clean(cseq));
    }
    head.push_str("Server: cradle-camsim\r\n");
    for (k, v) in &reply.headers {
        let _ = write!(head, "{k}: {}\r\n", clean(v));
    }
    if let Some((content_type, body)) = &reply.body {
        let _ = write!(
            head,
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    if let Some((_, body)) = &reply.body {
        out.extend_from_slice(body.as_bytes());
    }
}

/// Writes everything unless shutdown comes first (a stalled client must not
/// hold up shutdown).
async fn write_all(stream: &mut TcpStream, buf: &[u8], shutdown: &CancellationToken) -> Result<()> {
    tokio::select! {
        () = shutdown.cancelled() => Ok(()),
        r = stream.write_all(buf) => r.context("writing to client"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_all(data: &[u8]) -> (Vec<Message>, BytesMut) {
        let mut buf = BytesMut::from(data);
        let mut out = Vec::new();
        while let Some(m) = take_message(&mut buf).unwrap() {
            out.push(m);
        }
        (out, buf)
    }

    #[test]
    fn frames_requests_and_interleaved_data() {
        let data = b"$\x01\x00\x03abc\r\nOPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n\
            GET_PARAMETER rtsp://h/cam1 RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\nhello\
            $\x01\x00\x08abc";
        let (msgs, rest) = take_all(data);
        assert_eq!(msgs.len(), 3);
        assert!(matches!(msgs[0], Message::Interleaved));
        let Message::Request(r) = &msgs[1] else {
            panic!()
        };
        assert_eq!(
            (r.method.as_str(), r.url.as_str(), r.header("cseq")),
            ("OPTIONS", "*", Some("1"))
        );
        let Message::Request(r) = &msgs[2] else {
            panic!()
        };
        assert_eq!(r.header("CSeq"), Some("2"));
        assert_eq!(
            &rest[..],
            b"$\x01\x00\x08abc",
            "partial interleaved frame waits"
        );
    }

    #[test]
    fn bad_requests() {
        let (msgs, _) =
            take_all(b"hello there\r\nCSeq: 9\r\n\r\nPLAY x HTTP/1.1\r\n\r\nA b RTSP/2.0\r\n\r\n");
        let statuses: Vec<_> = msgs
            .iter()
            .map(|m| match m {
                Message::Bad { status, cseq } => (*status, cseq.clone()),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            statuses,
            vec![(400, Some("9".into())), (400, None), (505, None)]
        );

        let mut buf = BytesMut::from(&[0xffu8; MAX_HEAD + 1][..]);
        assert!(take_message(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"OPTIONS * RTSP/1.0\r\nContent-Length: -1\r\n\r\n"[..]);
        assert!(take_message(&mut buf).is_err());
    }

    #[test]
    fn urls_and_transports() {
        assert_eq!(
            url_path("rtsp://127.0.0.1:8554/cam1/trackID=0?x=1"),
            "/cam1/trackID=0"
        );
        assert_eq!(url_path("rtsp://host"), "/");
        assert_eq!(url_path("/cam1"), "/cam1");
        assert_eq!(
            tcp_interleaved_channel("RTP/AVP/TCP;unicast;interleaved=2-3"),
            Some(Some(2))
        );
        assert_eq!(
            tcp_interleaved_channel("RTP/AVP/TCP;unicast"),
            Some(Some(0))
        );
        assert_eq!(
            tcp_interleaved_channel("RTP/AVP/TCP;interleaved=x"),
            Some(None)
        );
        assert_eq!(
            tcp_interleaved_channel("RTP/AVP;unicast;client_port=5000-5001"),
            None
        );
        assert_eq!(tcp_interleaved_channel("RTP/AVP/UDP;unicast"), None);
    }

    #[test]
    fn encodes_reply() {
        let mut out = Vec::new();
        let mut r = Reply::status(200).header("Session", "AB;timeout=60");
        r.body = Some(("application/sdp", "v=0\r\n".into()));
        encode(&mut out, Some("3"), &r);
        let mut injected = Vec::new();
        encode(&mut injected, Some("1\nX: y"), &Reply::status(200));
        assert!(String::from_utf8(injected)
            .unwrap()
            .contains("CSeq: 1 X: y\r\n"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "RTSP/1.0 200 OK\r\nCSeq: 3\r\nServer: cradle-camsim\r\nSession: AB;timeout=60\r\n\
             Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"
        );
    }
}
