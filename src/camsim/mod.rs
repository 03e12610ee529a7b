//! `cradle camsim`: an RTSP server that impersonates N IP cameras.
//!
//! The demo, the tests and the benchmarks need cameras that always exist and
//! behave alike, so camsim serves a short clip embedded in the binary, looped
//! forever with continuous RTP timestamps, on these paths:
//!
//! * `/cam1` … `/camN`: H.264 1920x1080 25 fps ~4 Mbit/s (`h264-1080p.h264`)
//! * `/cam1-h265` … `/camN-h265`: H.265 1280x720 25 fps ~1.5 Mbit/s
//! * `/garbage`: announces H.264 like `/cam1`, then sends RTP packets whose
//!   payloads are random bytes — a camera gone bad, for fault tests.
//!
//! Every client gets its own RTSP session (random SSRC, seq and timestamp
//! base) paced in real time from when it sent PLAY; there is no shared
//! broadcast. [`Faults`] make every camera of a server misbehave on purpose (a
//! wrong wall clock, a fast RTP clock, dropped connections) for the watchdog's
//! tests. Only RTP over the RTSP connection (RFC 2326 §10.12) is offered,
//! which is what Cradle's ingest uses.
//!
//! Layout: [`clip`] splits the clips into access units, [`rtp`] pre-packetizes
//! them once and stamps per-session headers, [`rtsp`] runs each connection,
//! [`auth`] does Basic/Digest. This file holds the public entry point, the
//! embedded clips and path routing.

mod auth;
mod clip;
mod rtp;
mod rtsp;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use clip::{Clip, Codec};
use rtp::Packetized;

/// What [`serve`] offers.
#[derive(Clone)]
pub struct Options {
    /// Cameras served: `/cam1` … `/camN` (H.264) and `/cam1-h265` … `/camN-h265` (H.265).
    pub streams: usize,
    /// If set, every request but OPTIONS needs these credentials, by RTSP
    /// Basic or Digest authentication (either is accepted); 401 otherwise.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Faults a real camera has, for the watchdog's tests. All off by default.
    pub faults: Faults,
}

/// A camera gone wrong in ways the watchdog must notice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The camera's wall clock is off by this much: the NTP time in its RTCP sender
    /// reports (RFC 3550 §6.4.1) is the real time plus this offset.
    pub clock_offset_ms: i64,
    /// Its RTP clock runs this many parts per million fast (negative: slow), so RTP
    /// time gains on real time while frames still leave at the real 25 fps.
    pub rtp_clock_ppm: i64,
    /// It drops every connection after playing for this long (a flaky camera or link).
    pub drop_after: Option<Duration>,
}

impl Options {
    /// `streams` cameras, no authentication, no faults.
    pub fn new(streams: usize) -> Options {
        Options { streams, username: None, password: None, faults: Faults::default() }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("streams", &self.streams)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("faults", &self.faults)
            .finish()
    }
}

static H264_CLIP: &[u8] = include_bytes!("../../assets/clips/h264-1080p.h264");
static H265_CLIP: &[u8] = include_bytes!("../../assets/clips/h265-720p.h265");

/// The `a=control` of the only media stream; SETUP URLs end in it.
pub(crate) const TRACK_CONTROL: &str = "trackID=0";

/// One embedded clip, parsed and packetized, plus its SDP media section.
pub(crate) struct Source {
    pub(crate) packets: Packetized,
    pub(crate) sdp_media: String,
}

pub(crate) struct Sources {
    h264: Source,
    h265: Source,
}

impl Sources {
    pub(crate) fn get(&self, codec: Codec) -> &Source {
        match codec {
            Codec::H264 => &self.h264,
            Codec::H265 => &self.h265,
        }
    }
}

/// Parses and packetizes both clips on first use, once per process, however
/// many servers or clients there are.
fn sources() -> Result<&'static Sources> {
    static SOURCES: OnceLock<Result<Sources, String>> = OnceLock::new();
    let built = SOURCES.get_or_init(|| {
        let load = |codec, data| -> Result<Source> {
            let clip = Clip::parse(codec, data)?;
            Ok(Source {
                packets: Packetized::new(&clip),
                sdp_media: clip.sdp_media(),
            })
        };
        let both = || -> Result<Sources> {
            Ok(Sources {
                h264: load(Codec::H264, H264_CLIP)?,
                h265: load(Codec::H265, H265_CLIP)?,
            })
        };
        both().map_err(|e| format!("{e:#}"))
    });
    built
        .as_ref()
        .map_err(|e| anyhow!("camsim: embedded clip is unusable: {e}"))
}

/// What a request URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mount {
    Camera { number: usize, codec: Codec },
    Garbage,
}

impl Mount {
    /// Maps a request path (no scheme/authority) to a mount. The aggregate
    /// URL, with or without a trailing slash or `/*`, and the track URL
    /// (`…/trackID=0`) all name the same mount.
    pub(crate) fn resolve(path: &str, streams: usize) -> Option<Mount> {
        let p = path.trim_end_matches('/');
        let p = p
            .strip_suffix(TRACK_CONTROL)
            .and_then(|p| p.strip_suffix('/'))
            .or_else(|| p.strip_suffix("/*"))
            .unwrap_or(p)
            .trim_end_matches('/');
        let name = p.strip_prefix('/')?;
        if name == "garbage" {
            return Some(Mount::Garbage);
        }
        let (digits, codec) = match name.strip_suffix("-h265") {
            Some(d) => (d, Codec::H265),
            None => (name, Codec::H264),
        };
        let digits = digits.strip_prefix("cam")?;
        // Exactly the canonical spelling: "cam01" or "cam+1" is not a camera.
        let number: usize = digits.parse().ok()?;
        (number >= 1 && number <= streams && number.to_string() == digits)
            .then_some(Mount::Camera { number, codec })
    }

    /// The codec announced in the SDP (`/garbage` pretends to be H.264).
    pub(crate) fn codec(self) -> Codec {
        match self {
            Mount::Camera { codec, .. } => codec,
            Mount::Garbage => Codec::H264,
        }
    }
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mount::Camera {
                number,
                codec: Codec::H264,
            } => write!(f, "/cam{number}"),
            Mount::Camera {
                number,
                codec: Codec::H265,
            } => write!(f, "/cam{number}-h265"),
            Mount::Garbage => f.write_str("/garbage"),
        }
    }
}

/// Serves until `shutdown` is cancelled. Each path is an independent camera:
/// every client of /camK gets its own session.
pub async fn serve(
    listener: TcpListener,
    opts: Options,
    shutdown: CancellationToken,
) -> Result<()> {
    let sources = sources()?;
    if opts.faults != Faults::default() {
        warn!(faults = ?opts.faults, "camsim: simulating faulty cameras");
    }
    if opts.username.is_some() != opts.password.is_some() {
        warn!("camsim: username and password must be given together; treating the missing one as empty");
    }
    let addr = listener.local_addr()?;
    info!(
        %addr,
        streams = opts.streams,
        auth = opts.username.is_some() || opts.password.is_some(),
        "camsim: serving rtsp://{addr}/cam1..cam{n} (H.264), /cam1-h265.. (H.265), /garbage",
        n = opts.streams,
    );
    let shared = Arc::new(rtsp::Shared::new(opts, sources));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow forever.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(rtsp::serve_conn(stream, peer, shared.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    warn!("camsim: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Connections watch the same token; wait for them to finish writing.
    while conns.join_next().await.is_some() {}
    info!("camsim: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths() {
        let cam = |number, codec| Some(Mount::Camera { number, codec });
        assert_eq!(Mount::resolve("/cam1", 2), cam(1, Codec::H264));
        assert_eq!(Mount::resolve("/cam2/", 2), cam(2, Codec::H264));
        assert_eq!(Mount::resolve("/cam2/trackID=0", 2), cam(2, Codec::H264));
        assert_eq!(Mount::resolve("/cam1-h265/*", 2), cam(1, Codec::H265));
        assert_eq!(
            Mount::resolve("/cam1-h265/trackID=0/", 2),
            cam(1, Codec::H265)
        );
        assert_eq!(
            Mount::resolve("/garbage/trackID=0", 0),
            Some(Mount::Garbage)
        );
        for bad in [
            "/cam3",
            "/cam0",
            "/cam01",
            "/cam+1",
            "/cam",
            "/cam1/trackID=1",
            "/cam1trackID=0",
            "",
            "/",
            "*",
            "cam1",
            "/cam1-h264",
        ] {
            assert_eq!(Mount::resolve(bad, 2), None, "{bad:?}");
        }
        assert_eq!(
            Mount::Camera {
                number: 7,
                codec: Codec::H265
            }
            .to_string(),
            "/cam7-h265"
        );
    }

    #[test]
    fn embedded_sources_build() {
        let s = sources().unwrap();
        assert!(s.get(Codec::H264).sdp_media.contains("H264/90000"));
        assert!(s.get(Codec::H265).sdp_media.contains("sprop-vps="));
        assert_eq!(s.get(Codec::H264).packets.frames.len(), 150);
        // An IDR of a 1080p clip at 4 Mbit/s spans many FU-A packets.
        assert!(s.get(Codec::H264).packets.frames[0].packet_count() > 10);
    }
}
