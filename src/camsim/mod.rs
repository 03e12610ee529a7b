//! `cradle camsim`: an RTSP server that impersonates N IP cameras.
//!
//! The demo, the tests and the benchmarks need cameras that always exist and
//! behave alike, so camsim serves a short clip embedded in the binary, looped
//! forever with continuous RTP timestamps, on these paths:
//!
//! * `/cam1` … `/camN`: H.264 1920x1080 25 fps ~4 Mbit/s (`h264-1080p.h264`)
//! * `/cam1-h265` … `/camN-h265`: H.265 1280x720 25 fps ~1.5 Mbit/s
//! * `/garbage`: announces H.264 like `/cam1`, then sends RTP packets whose
//!   payloads are random bytes — a camera gone bad, for fault tests;
//! * `/NAME` for each `--clip NAME=PATH` ([`Options::extra`]): the user's own Annex B
//!   file (H.264, or H.265 if it ends in `.h265`/`.hevc`), read and checked at start,
//!   looped the same way. Tests use it for cameras that show something particular, e.g.
//!   a lens covered after 20 s (`scripts/make-tamper-clips.sh`); [`extra`] says what
//!   such a file must be.
//!
//! Every client gets its own RTSP session (random SSRC, seq and timestamp
//! base) paced in real time from when it sent PLAY; there is no shared
//! broadcast. [`Faults`] make every camera of a server misbehave on purpose (a
//! wrong wall clock, a fast RTP clock, dropped connections) for the watchdog's
//! tests. Only RTP over the RTSP connection (RFC 2326 §10.12) is offered,
//! which is what Cradle's ingest uses.
//!
//! Layout: [`clip`] splits the clips into access units, [`extra`] reads and checks
//! the user's clips, [`rtp`] pre-packetizes them once and stamps per-session
//! headers, [`rtsp`] runs each connection, [`auth`] does Basic/Digest. This file
//! holds the public entry point, the embedded clips and path routing.

mod auth;
mod clip;
pub mod extra;
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

pub use clip::split_annex_b;
use clip::{Clip, Codec};
pub use extra::ExtraClip;
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
    /// Clips of the user's, each served at `/NAME` (`--clip NAME=PATH`). They are read
    /// and checked by [`Camsim::build`] (and so [`serve`]), which fails naming the file
    /// and what is wrong with it if one is unusable.
    pub extra: Vec<ExtraClip>,
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
    /// Its encoder freezes after playing for this long: no more video, while the RTSP
    /// session and the RTCP sender reports go on (a hung camera that still answers).
    pub freeze_after: Option<Duration>,
}

impl Options {
    /// `streams` cameras, no authentication, no faults, no extra clips.
    pub fn new(streams: usize) -> Options {
        Options { streams, username: None, password: None, faults: Faults::default(), extra: Vec::new() }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("streams", &self.streams)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("faults", &self.faults)
            .field("extra", &self.extra)
            .finish()
    }
}

static H264_CLIP: &[u8] = include_bytes!("../../assets/clips/h264-1080p.h264");
static H265_CLIP: &[u8] = include_bytes!("../../assets/clips/h265-720p.h265");

/// The `a=control` of the only media stream; SETUP URLs end in it.
pub(crate) const TRACK_CONTROL: &str = "trackID=0";

/// One clip, parsed and packetized, plus its SDP media section.
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mount {
    Camera { number: usize, codec: Codec },
    Garbage,
    /// `/NAME` of `--clip NAME=PATH`: `index` in [`Options::extra`].
    Extra { index: usize, name: Arc<str> },
}

impl Mount {
    /// Maps a request path (no scheme/authority) to a mount, given the names of the
    /// extra clips. The aggregate URL, with or without a trailing slash or `/*`, and the
    /// track URL (`…/trackID=0`) all name the same mount.
    pub(crate) fn resolve(path: &str, streams: usize, extra: &[Arc<str>]) -> Option<Mount> {
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
        // Extra names never collide with the built-in ones (`extra::check_name`).
        if let Some(index) = extra.iter().position(|n| **n == *name) {
            return Some(Mount::Extra { index, name: extra[index].clone() });
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
            Mount::Extra { name, .. } => write!(f, "/{name}"),
        }
    }
}

/// Everything one server serves: the embedded clips and the extra ones.
pub(crate) struct Library {
    embedded: &'static Sources,
    extra_names: Vec<Arc<str>>,
    extra: Vec<Source>,
}

impl Library {
    /// Reads and checks the extra clips; fails naming the first unusable one.
    fn load(embedded: &'static Sources, clips: &[ExtraClip]) -> Result<Library> {
        let mut extra_names: Vec<Arc<str>> = Vec::with_capacity(clips.len());
        let mut extra = Vec::with_capacity(clips.len());
        for clip in clips {
            extra::check_name(&clip.name).map_err(|e| anyhow!("camsim --clip: {e}"))?;
            if extra_names.iter().any(|n| **n == *clip.name) {
                return Err(anyhow!("camsim --clip: the name {:?} is given twice", clip.name));
            }
            extra.push(clip.load()?);
            extra_names.push(clip.name.as_str().into());
        }
        Ok(Library { embedded, extra_names, extra })
    }

    pub(crate) fn resolve(&self, path: &str, streams: usize) -> Option<Mount> {
        Mount::resolve(path, streams, &self.extra_names)
    }

    /// The clip a mount plays (`/garbage` announces the H.264 one).
    pub(crate) fn source(&self, mount: &Mount) -> &Source {
        match mount {
            Mount::Camera { codec, .. } => self.embedded.get(*codec),
            Mount::Garbage => self.embedded.get(Codec::H264),
            Mount::Extra { index, .. } => &self.extra[*index],
        }
    }
}

/// Serves until `shutdown` is cancelled. Each path is an independent camera:
/// every client of /camK gets its own session. Fails at once if an extra clip is
/// unusable; to fail before binding the port, use [`Camsim::build`] first.
pub async fn serve(
    listener: TcpListener,
    opts: Options,
    shutdown: CancellationToken,
) -> Result<()> {
    Camsim::build(opts)?.run(listener, shutdown).await
}

/// A camsim with its clips loaded, ready to serve on a listener.
pub struct Camsim {
    shared: Arc<rtsp::Shared>,
    streams: usize,
    auth: bool,
    extra: Vec<String>,
}

impl Camsim {
    /// Parses the embedded clips (once per process) and reads and checks the extra
    /// ones; the error names the first unusable file and what is wrong with it.
    pub fn build(opts: Options) -> Result<Camsim> {
        let library = Library::load(sources()?, &opts.extra)?;
        if opts.faults != Faults::default() {
            warn!(faults = ?opts.faults, "camsim: simulating faulty cameras");
        }
        if opts.username.is_some() != opts.password.is_some() {
            warn!("camsim: username and password must be given together; treating the missing one as empty");
        }
        Ok(Camsim {
            streams: opts.streams,
            auth: opts.username.is_some() || opts.password.is_some(),
            extra: opts.extra.iter().map(|c| c.name.clone()).collect(),
            shared: Arc::new(rtsp::Shared::new(opts, library)),
        })
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
        let addr = listener.local_addr()?;
        info!(
            %addr,
            streams = self.streams,
            auth = self.auth,
            "camsim: serving rtsp://{addr}/cam1..cam{n} (H.264), /cam1-h265.. (H.265), /garbage{more}",
            n = self.streams,
            more = self.extra.iter().map(|name| format!(", /{name}")).collect::<String>(),
        );
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                // Reap finished connections so the set does not grow forever.
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        conns.spawn(rtsp::serve_conn(stream, peer, self.shared.clone(), shutdown.clone()));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths() {
        let cam = |number, codec| Some(Mount::Camera { number, codec });
        assert_eq!(Mount::resolve("/cam1", 2, &[]), cam(1, Codec::H264));
        assert_eq!(Mount::resolve("/cam2/", 2, &[]), cam(2, Codec::H264));
        assert_eq!(Mount::resolve("/cam2/trackID=0", 2, &[]), cam(2, Codec::H264));
        assert_eq!(Mount::resolve("/cam1-h265/*", 2, &[]), cam(1, Codec::H265));
        assert_eq!(
            Mount::resolve("/cam1-h265/trackID=0/", 2, &[]),
            cam(1, Codec::H265)
        );
        assert_eq!(
            Mount::resolve("/garbage/trackID=0", 0, &[]),
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
            assert_eq!(Mount::resolve(bad, 2, &[]), None, "{bad:?}");
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
    fn resolves_extra_clips_by_name() {
        let names: Vec<Arc<str>> = vec!["normal".into(), "black.v2".into()];
        let extra = |index: usize| Some(Mount::Extra { index, name: names[index].clone() });
        assert_eq!(Mount::resolve("/normal", 1, &names), extra(0));
        assert_eq!(Mount::resolve("/normal/", 1, &names), extra(0));
        assert_eq!(Mount::resolve("/black.v2/trackID=0", 1, &names), extra(1));
        assert_eq!(Mount::resolve("/black.v2/*", 1, &names), extra(1));
        assert_eq!(Mount::resolve("/cam1", 1, &names), Some(Mount::Camera { number: 1, codec: Codec::H264 }));
        assert_eq!(Mount::resolve("/garbage", 1, &names), Some(Mount::Garbage));
        for bad in ["/Normal", "/normal2", "/black", "/normal/trackID=1", "/x/normal", "normal"] {
            assert_eq!(Mount::resolve(bad, 1, &names), None, "{bad:?}");
        }
        assert_eq!(extra(1).unwrap().to_string(), "/black.v2");
    }

    /// A server with two extra clips (the embedded ones, from files) answers DESCRIBE on
    /// each with its own codec, and one unusable file stops it from starting at all.
    #[tokio::test]
    async fn serves_extra_clips_from_files() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.h264"), dir.path().join("b.hevc"));
        std::fs::write(&a, H264_CLIP).unwrap();
        std::fs::write(&b, H265_CLIP).unwrap();
        let mut opts = Options::new(1);
        opts.extra = vec![ExtraClip::new("a", &a).unwrap(), ExtraClip::new("room-b", &b).unwrap()];
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, opts.clone(), stop.clone()));
        for (path, status, codec) in [("a", 200, "H264/90000"), ("room-b/", 200, "H265/90000"), ("b", 404, "")] {
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("DESCRIBE rtsp://{addr}/{path} RTSP/1.0\r\nCSeq: 1\r\n\r\n");
            conn.write_all(req.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains(if status == 200 { "a=control:trackID=0" } else { "\r\n\r\n" }) {
                assert_ne!(conn.read_buf(&mut got).await.unwrap(), 0, "{path}: closed early");
            }
            let got = String::from_utf8_lossy(&got);
            assert!(got.starts_with(&format!("RTSP/1.0 {status} ")), "{path}: {got}");
            assert!(got.contains(codec), "{path}: {got}");
        }
        stop.cancel();
        server.await.unwrap().unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        opts.extra.push(ExtraClip::new("c", dir.path().join("missing.h264")).unwrap());
        let err = serve(listener, opts.clone(), CancellationToken::new()).await.unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("--clip c=") && err.contains("missing.h264") && err.contains("cannot read"), "{err}");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        opts.extra = vec![ExtraClip::new("a", &a).unwrap(), ExtraClip::new("a", &b).unwrap()];
        let err = serve(listener, opts, CancellationToken::new()).await.unwrap_err();
        assert!(format!("{err:#}").contains("\"a\" is given twice"), "{err:#}");
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
