//! One viewer's WebRTC peer connection (webrtc-rs), kept behind this module so the
//! library can change: answer an offer, take trickled candidates, send RTP, close.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{RTCIceCandidateInit, RTCIceServer};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use tokio::sync::{watch, Notify};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    register_default_interceptors, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateType,
    RTCIceGatheringState, RTCPeerConnectionState, Registry, SettingEngineBuilder,
};

use super::config::LiveConfig;
use super::packetize::Codec;

/// How long the answer waits for the server's own candidates (host ones take
/// milliseconds; STUN needs a round trip).
const GATHER_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The offer cannot be answered (malformed, or no codec in common).
    #[error("{0}")]
    Offer(String),
    /// No UDP port of the range is free.
    #[error("no free UDP port in [live] udp_ports {0}-{1}: too many viewers for the range")]
    NoPort(u16, u16),
    #[error("WebRTC: {0}")]
    Internal(String),
}

/// The UDP ports in use by viewers' peer connections.
pub struct Ports {
    range: (u16, u16),
    used: Mutex<BTreeSet<u16>>,
    next: Mutex<u16>,
}

impl Ports {
    pub fn new(range: (u16, u16)) -> Ports {
        Ports { range, used: Mutex::new(BTreeSet::new()), next: Mutex::new(range.0) }
    }

    /// A port of the range that is free on every address in `bind` right now, marked used.
    fn take(&self, bind: &[IpAddr]) -> Option<u16> {
        let (lo, hi) = self.range;
        let n = u32::from(hi - lo) + 1;
        let mut used = self.used.lock().unwrap();
        let mut next = self.next.lock().unwrap();
        for _ in 0..n {
            let p = *next;
            *next = if p >= hi { lo } else { p + 1 };
            if used.contains(&p) {
                continue;
            }
            if bind.iter().all(|ip| UdpSocket::bind(SocketAddr::new(*ip, p)).is_ok()) {
                used.insert(p);
                return Some(p);
            }
        }
        None
    }

    pub fn give_back(&self, port: u16) {
        self.used.lock().unwrap().remove(&port);
    }

    pub fn in_use(&self) -> usize {
        self.used.lock().unwrap().len()
    }
}

struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: Arc<Notify>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
}

/// A viewer's connection: one video track sending the camera's codec.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    pub payload_type: u8,
    pub port: u16,
    pub state: watch::Receiver<RTCPeerConnectionState>,
}

/// `profile-level-id`s registered for H.264, the camera's own first: browsers offer
/// several and the answer takes the first match; decoders accept any of these.
fn h264_profiles(camera: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = camera.map(str::to_owned).into_iter().collect();
    for p in ["42e01f", "42001f", "4d001f", "64001f", "640c1f"] {
        if !v.iter().any(|x| x.eq_ignore_ascii_case(p)) {
            v.push(p.to_owned());
        }
    }
    v
}

fn feedback() -> Vec<RTCPFeedback> {
    [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .iter()
        .map(|(t, p)| RTCPFeedback { typ: (*t).to_owned(), parameter: (*p).to_owned() })
        .collect()
}

fn codecs(codec: Codec, profile_level_id: Option<&str>) -> Vec<RTCRtpCodecParameters> {
    match codec {
        Codec::H264 => h264_profiles(profile_level_id)
            .into_iter()
            .enumerate()
            .map(|(i, plid)| RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/H264".to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={plid}"),
                    rtcp_feedback: feedback(),
                },
                payload_type: 102 + 2 * i as u8,
            })
            .collect(),
        Codec::H265 => vec![RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "video/H265".to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: feedback(),
            },
            payload_type: 126,
        }],
    }
}

/// Whether an SDP offer can receive `codec` (H.265 only goes to a browser offering it).
pub fn offer_accepts(offer: &str, codec: Codec) -> bool {
    let name = match codec {
        Codec::H264 => "H264/90000",
        Codec::H265 => "H265/90000",
    };
    offer.lines().any(|l| l.starts_with("a=rtpmap:") && l.to_ascii_uppercase().contains(name))
}

impl Peer {
    /// Answers `offer` with a send-only H.264/H.265 track; returns once the server's
    /// candidates are in the answer (or [`GATHER_WAIT`] passed).
    pub async fn answer(
        cfg: &LiveConfig,
        ports: &Ports,
        codec: Codec,
        profile_level_id: Option<&str>,
        offer: &str,
    ) -> Result<(Peer, String), PeerError> {
        let offer_desc = RTCSessionDescription::offer(offer.to_owned()).map_err(|e| PeerError::Offer(format!("the offer is not valid SDP: {e}")))?;
        if !offer_accepts(offer, codec) {
            return Err(PeerError::Offer(format!(
                "the camera sends {} and the offer does not include it (Cradle never transcodes)",
                codec.mime()
            )));
        }
        let port = ports.take(&cfg.bind).ok_or(PeerError::NoPort(cfg.udp_ports.0, cfg.udp_ports.1))?;
        match Self::build(cfg, port, codec, profile_level_id, offer_desc).await {
            Ok(r) => Ok(r),
            Err(e) => {
                ports.give_back(port);
                Err(e)
            }
        }
    }

    async fn build(
        cfg: &LiveConfig,
        port: u16,
        codec: Codec,
        profile_level_id: Option<&str>,
        offer: RTCSessionDescription,
    ) -> Result<(Peer, String), PeerError> {
        let internal = |e: webrtc::error::Error| PeerError::Internal(e.to_string());
        let mut media = MediaEngine::default();
        let codecs = codecs(codec, profile_level_id);
        for c in &codecs {
            media.register_codec(c.clone(), RtpCodecKind::Video).map_err(internal)?;
        }
        let registry = register_default_interceptors(Registry::new(), &mut media).map_err(internal)?;
        let mut settings = SettingEngineBuilder::new();
        if !cfg.public_ips.is_empty() {
            // Srflx keeps the private address too, so viewers on the centre's own LAN
            // still connect directly.
            settings = settings.with_nat_1to1_ips(cfg.public_ips.iter().map(IpAddr::to_string).collect(), RTCIceCandidateType::Srflx);
        }
        if cfg.bind.iter().any(IpAddr::is_loopback) {
            settings = settings.with_include_loopback_candidate(true);
        }
        let ice_servers = if cfg.public_ips.is_empty() && !cfg.stun_servers.is_empty() {
            vec![RTCIceServer { urls: cfg.stun_servers.clone(), ..Default::default() }]
        } else {
            Vec::new()
        };
        let config = RTCConfigurationBuilder::new().with_ice_servers(ice_servers).build();
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let gathered = Arc::new(Notify::new());
        let handler = Arc::new(Handler { state: state_tx, gathered: gathered.clone() });
        let addrs: Vec<SocketAddr> = cfg.bind.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(addrs)
            .build()
            .await
            .map_err(internal)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc = rand::random::<u32>();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("cradle-{ssrc:08x}"),
            format!("cradle-video-{ssrc:08x}"),
            "camera".to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: codecs[0].rtp_codec.clone(),
                ..Default::default()
            }],
        )));
        let close_on_err = |pc: Arc<dyn PeerConnection>, e: PeerError| async move {
            let _ = pc.close().await;
            e
        };
        let sender = match pc.add_track(track.clone() as Arc<dyn TrackLocal>).await {
            Ok(s) => s,
            Err(e) => return Err(close_on_err(pc, internal(e)).await),
        };
        let answer = async {
            pc.set_remote_description(offer).await.map_err(|e| PeerError::Offer(format!("cannot use the offer: {e}")))?;
            let answer = pc.create_answer(None).await.map_err(|e| PeerError::Offer(format!("cannot answer the offer: {e}")))?;
            pc.set_local_description(answer).await.map_err(internal)?;
            let _ = tokio::time::timeout(GATHER_WAIT, gathered.notified()).await;
            let sdp = pc.local_description().await.map(|d| d.sdp).ok_or_else(|| PeerError::Internal("no local description".into()))?;
            let pt = sender
                .get_parameters()
                .await
                .map_err(internal)?
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .ok_or_else(|| PeerError::Offer("no video codec in common with the offer".into()))?;
            Ok::<_, PeerError>((sdp, pt))
        }
        .await;
        match answer {
            Ok((sdp, payload_type)) => Ok((Peer { pc, track, ssrc, payload_type, port, state }, sdp)),
            Err(e) => Err(close_on_err(pc, e).await),
        }
    }

    /// Adds a candidate trickled by the viewer (`a=candidate:…` line without `a=`).
    pub async fn add_candidate(&self, candidate: &str, mid: Option<String>) -> Result<(), PeerError> {
        let init = RTCIceCandidateInit { candidate: candidate.to_owned(), sdp_mid: mid, sdp_mline_index: Some(0), ..Default::default() };
        self.pc.add_ice_candidate(init).await.map_err(|e| PeerError::Offer(format!("bad candidate {candidate:?}: {e}")))
    }

    /// Sends one RTP packet; waits when the connection's queue is full.
    pub async fn send(&self, packet: rtp::Packet) -> Result<(), PeerError> {
        self.track.write_rtp(packet).await.map_err(|e| PeerError::Internal(e.to_string()))
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}
