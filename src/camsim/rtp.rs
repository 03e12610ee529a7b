//! RTP packetization, pre-computed once per clip, and per-session stamping.
//!
//! Each access unit becomes a [`FrameTemplate`]: the exact bytes that go on
//! the RTSP connection — interleaved framing (`$`, channel, length; RFC 2326
//! §10.12), a 12-byte RTP header (RFC 3550 §5.1) and the payload — for every
//! packet of the picture. Sending a frame to a client is then one memcpy into
//! a reused buffer, patching channel/seq/timestamp/SSRC in place, and one
//! `write_all`: no per-packet allocation or syscall, which is what lets one
//! process feed dozens of 1080p streams on a small machine.
//!
//! Payload formats: H.264 per RFC 6184 (single NAL unit packets, §5.6, and
//! FU-A, §5.8) and H.265 per RFC 7798 (single NAL unit packets, §4.4.1, and
//! FUs, §4.4.3). Aggregation packets are never needed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{Rng, RngCore};

use super::clip::{AccessUnit, Clip, Codec};

/// Dynamic payload type announced in the SDP.
pub(crate) const PAYLOAD_TYPE: u8 = 96;
/// Largest RTP payload; keeps packets under a 1500-byte MTU if a client ever
/// relays them over UDP.
pub(crate) const MAX_PAYLOAD: usize = 1400;
/// 90 kHz clock ticks per frame at 25 fps.
const FRAME_TICKS: u32 = 90_000 / super::clip::FPS;

const RTP_HEADER: usize = 12;
const FRAMING: usize = 4;

/// One access unit, packetized, with placeholder channel/seq/ts/SSRC.
pub(crate) struct FrameTemplate {
    bytes: Vec<u8>,
    /// Offset of each packet's `$` in `bytes`.
    packets: Vec<u32>,
    payload_octets: u32,
}

impl FrameTemplate {
    #[cfg(test)]
    pub(crate) fn packet_count(&self) -> usize {
        self.packets.len()
    }

    fn new(codec: Codec, params: &[&[u8]], au: &AccessUnit<'_>) -> Self {
        let mut t = FrameTemplate {
            bytes: Vec::new(),
            packets: Vec::new(),
            payload_octets: 0,
        };
        // Real cameras repeat the parameter sets in-band before every IRAP
        // picture, and some clients only look there.
        let in_band = if au.irap { params } else { &[] };
        for nal in in_band.iter().chain(&au.nals) {
            payloads(codec, nal, |prefix, body| t.push(prefix, body));
        }
        // RFC 6184 §5.1 / RFC 7798 §4.1: marker on the last packet of the AU.
        if let Some(&last) = t.packets.last() {
            t.bytes[last as usize + FRAMING + 1] |= 0x80;
        }
        t
    }

    fn push(&mut self, prefix: &[u8], body: &[u8]) {
        let payload = prefix.len() + body.len();
        let len = u16::try_from(RTP_HEADER + payload).expect("payload <= MAX_PAYLOAD");
        self.packets
            .push(u32::try_from(self.bytes.len()).expect("frame < 4 GiB"));
        self.bytes.extend_from_slice(&[b'$', 0]);
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes
            .extend_from_slice(&[0x80, PAYLOAD_TYPE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        self.bytes.extend_from_slice(prefix);
        self.bytes.extend_from_slice(body);
        self.payload_octets += payload as u32;
    }
}

/// Calls `emit(prefix, body)` for each RTP payload carrying `nal`; the payload
/// is `prefix ++ body`.
fn payloads(codec: Codec, nal: &[u8], mut emit: impl FnMut(&[u8], &[u8])) {
    if nal.len() <= MAX_PAYLOAD {
        return emit(&[], nal);
    }
    let (hdr_len, mut prefix, nal_type) = match codec {
        // RFC 6184 §5.8: FU indicator keeps F and NRI, type 28; the FU header
        // carries S/E bits and the original type. The NAL header byte itself
        // is not sent.
        Codec::H264 => (1, vec![(nal[0] & 0xe0) | 28, 0], nal[0] & 0x1f),
        // RFC 7798 §4.4.3: payload header is the NAL header with type 49,
        // then the FU header with S/E bits and the 6-bit original type.
        Codec::H265 => (
            2,
            vec![(nal[0] & 0x81) | (49 << 1), nal[1], 0],
            (nal[0] >> 1) & 0x3f,
        ),
    };
    let fu = prefix.len() - 1;
    let body = &nal[hdr_len..];
    let chunk = MAX_PAYLOAD - prefix.len();
    let count = body.len().div_ceil(chunk);
    for (i, piece) in body.chunks(chunk).enumerate() {
        let start = if i == 0 { 0x80 } else { 0 };
        let end = if i + 1 == count { 0x40 } else { 0 };
        prefix[fu] = start | end | nal_type;
        emit(&prefix, piece);
    }
}

/// The whole clip, packetized.
pub(crate) struct Packetized {
    pub(crate) frames: Vec<FrameTemplate>,
}

impl Packetized {
    pub(crate) fn new(clip: &Clip<'_>) -> Self {
        let params: Vec<&[u8]> = clip.param_sets().collect();
        let frames = clip
            .frames
            .iter()
            .map(|au| FrameTemplate::new(clip.codec, &params, au))
            .collect();
        Packetized { frames }
    }
}

/// One RTP session's sender state (RFC 3550 §5.1, §6.4.1).
pub(crate) struct Sender {
    pub(crate) channel: u8,
    pub(crate) ssrc: u32,
    /// Sequence number of the next packet.
    pub(crate) seq: u16,
    /// Timestamp of frame 0.
    pub(crate) ts0: u32,
    packets_sent: u32,
    octets_sent: u32,
    /// How fast this camera's RTP clock runs against real time, in parts per million
    /// (0: exact; 10 000: 1 % fast). A fault to simulate, not a feature.
    pub(crate) rate_ppm: i64,
}

impl Sender {
    /// A sender whose RTP clock runs `rate_ppm` fast (a simulated fault; 0 normally).
    pub(crate) fn with_rate(channel: u8, rate_ppm: i64) -> Self {
        Sender { rate_ppm, ..Sender::new(channel) }
    }

    /// Random SSRC, initial seq and timestamp, as RFC 3550 §5.1 asks.
    pub(crate) fn new(channel: u8) -> Self {
        let mut rng = rand::rng();
        Sender {
            channel,
            ssrc: rng.random(),
            seq: rng.random(),
            ts0: rng.random(),
            packets_sent: 0,
            octets_sent: 0,
            rate_ppm: 0,
        }
    }

    /// RTP timestamp of the `k`-th frame sent in this session.
    pub(crate) fn frame_ts(&self, k: u64) -> u32 {
        self.ts0.wrapping_add(self.ticks(u128::from(k) * u128::from(FRAME_TICKS)))
    }

    /// `real` 90 kHz ticks of real time as this camera's RTP clock counts them.
    pub(crate) fn ticks(&self, real: u128) -> u32 {
        let rate = (1_000_000 + i128::from(self.rate_ppm)).max(0) as u128;
        (real * rate / 1_000_000) as u32
    }

    /// Appends `frame`, stamped as frame `k`, to `out`.
    pub(crate) fn stamp(&mut self, frame: &FrameTemplate, k: u64, out: &mut Vec<u8>) {
        let base = out.len();
        out.extend_from_slice(&frame.bytes);
        let ts = self.frame_ts(k).to_be_bytes();
        let ssrc = self.ssrc.to_be_bytes();
        for &off in &frame.packets {
            let p = base + off as usize;
            out[p + 1] = self.channel;
            let h = &mut out[p + FRAMING..p + FRAMING + RTP_HEADER];
            h[2..4].copy_from_slice(&self.seq.to_be_bytes());
            h[4..8].copy_from_slice(&ts);
            h[8..12].copy_from_slice(&ssrc);
            self.seq = self.seq.wrapping_add(1);
        }
        self.packets_sent = self.packets_sent.wrapping_add(frame.packets.len() as u32);
        self.octets_sent = self.octets_sent.wrapping_add(frame.payload_octets);
    }

    /// Appends frame `k` made of random bytes: valid RTP headers and marker
    /// bits, nonsense payload. Simulates a camera that sends garbage.
    pub(crate) fn stamp_garbage(&mut self, rng: &mut impl RngCore, k: u64, out: &mut Vec<u8>) {
        let count = rng.random_range(1..=8);
        let ts = self.frame_ts(k);
        for i in 0..count {
            let len = rng.random_range(1..=MAX_PAYLOAD);
            let marker = if i + 1 == count { 0x80 } else { 0 };
            out.extend_from_slice(&[b'$', self.channel]);
            out.extend_from_slice(&((RTP_HEADER + len) as u16).to_be_bytes());
            out.extend_from_slice(&[0x80, marker | PAYLOAD_TYPE]);
            out.extend_from_slice(&self.seq.to_be_bytes());
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&self.ssrc.to_be_bytes());
            let start = out.len();
            out.resize(start + len, 0);
            rng.fill_bytes(&mut out[start..]);
            self.seq = self.seq.wrapping_add(1);
            self.packets_sent = self.packets_sent.wrapping_add(1);
            self.octets_sent = self.octets_sent.wrapping_add(len as u32);
        }
    }

    /// Appends a compound RTCP packet (SR + SDES CNAME, RFC 3550 §6.4.1,
    /// §6.5, §6.1) on the RTCP channel, mapping wallclock `now` to `rtp_ts`.
    pub(crate) fn sender_report(&self, now: SystemTime, rtp_ts: u32, out: &mut Vec<u8>) {
        const CNAME: &[u8] = b"cradle-camsim";
        // SR: 28 bytes. SDES: 4 header + 4 SSRC + 2 item header + CNAME + END,
        // padded to a 32-bit boundary.
        let sdes_len = (8 + 2 + CNAME.len() + 1).div_ceil(4) * 4;
        let total = 28 + sdes_len;
        out.extend_from_slice(&[b'$', self.channel.wrapping_add(1)]);
        out.extend_from_slice(&(total as u16).to_be_bytes());

        // NTP timestamp: seconds since 1900 (RFC 3550 §4) as 32.32 fixed point.
        let since_unix = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = since_unix.as_secs() + 2_208_988_800;
        let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
        out.extend_from_slice(&[0x80, 200]);
        out.extend_from_slice(&6u16.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&(secs as u32).to_be_bytes());
        out.extend_from_slice(&(frac as u32).to_be_bytes());
        out.extend_from_slice(&rtp_ts.to_be_bytes());
        out.extend_from_slice(&self.packets_sent.to_be_bytes());
        out.extend_from_slice(&self.octets_sent.to_be_bytes());

        let start = out.len();
        out.extend_from_slice(&[0x81, 202]);
        out.extend_from_slice(&((sdes_len / 4 - 1) as u16).to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&[1, CNAME.len() as u8]);
        out.extend_from_slice(CNAME);
        out.resize(start + sdes_len, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(codec: Codec, nal: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        payloads(codec, nal, |p, b| out.push([p, b].concat()));
        out
    }

    #[test]
    fn single_nal_up_to_max_payload() {
        let nal: Vec<u8> = std::iter::once(0x65)
            .chain((1..MAX_PAYLOAD).map(|i| i as u8))
            .collect();
        assert_eq!(collect(Codec::H264, &nal), vec![nal.clone()]);
    }

    #[test]
    fn fu_a_boundaries() {
        // One byte more than fits: header is dropped, so body = MAX_PAYLOAD bytes
        // -> chunks of MAX_PAYLOAD-2 -> two fragments.
        let nal: Vec<u8> = std::iter::once(0x65)
            .chain((0..MAX_PAYLOAD).map(|i| i as u8))
            .collect();
        let pkts = collect(Codec::H264, &nal);
        assert_eq!(pkts.len(), 2);
        assert_eq!(&pkts[0][..2], &[0x60 | 28, 0x80 | 5]);
        assert_eq!(&pkts[1][..2], &[0x60 | 28, 0x40 | 5]);
        assert!(pkts.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let rebuilt: Vec<u8> = std::iter::once(0x65)
            .chain(pkts.iter().flat_map(|p| p[2..].to_vec()))
            .collect();
        assert_eq!(rebuilt, nal);

        // Exactly three full fragments: no empty trailing fragment.
        let body = 3 * (MAX_PAYLOAD - 2);
        let nal: Vec<u8> = std::iter::once(0x41)
            .chain((0..body).map(|i| i as u8))
            .collect();
        let pkts = collect(Codec::H264, &nal);
        assert_eq!(pkts.len(), 3);
        assert_eq!(
            pkts.iter().map(|p| p[1] & 0xc0).collect::<Vec<_>>(),
            vec![0x80, 0, 0x40]
        );
        assert!(pkts
            .iter()
            .all(|p| p.len() == MAX_PAYLOAD && p[0] == 0x40 | 28));
    }

    #[test]
    fn h265_fu() {
        // IDR_N_LP (type 20), layer 0, TID 1: header 0x28 0x01.
        let nal: Vec<u8> = [0x28, 0x01]
            .into_iter()
            .chain((0..3000).map(|i| i as u8))
            .collect();
        let pkts = collect(Codec::H265, &nal);
        assert_eq!(pkts.len(), 3);
        for (i, p) in pkts.iter().enumerate() {
            assert_eq!(&p[..2], &[49 << 1, 0x01]);
            let se = match i {
                0 => 0x80,
                2 => 0x40,
                _ => 0,
            };
            assert_eq!(p[2], se | 20);
            assert!(p.len() <= MAX_PAYLOAD);
        }
        let rebuilt: Vec<u8> = [0x28, 0x01]
            .into_iter()
            .chain(pkts.iter().flat_map(|p| p[3..].to_vec()))
            .collect();
        assert_eq!(rebuilt, nal);
    }

    #[test]
    fn template_and_stamp() {
        let sps: &[u8] = &[0x67, 0x64, 0, 0x28];
        let pps: &[u8] = &[0x68, 0xee];
        let big = vec![0x65; 3000];
        let au = AccessUnit {
            nals: vec![&big],
            irap: true,
        };
        let t = FrameTemplate::new(Codec::H264, &[sps, pps], &au);
        assert_eq!(t.packet_count(), 2 + 3);
        let mut s = Sender {
            channel: 4,
            ssrc: 0xdeadbeef,
            seq: 65534,
            ts0: u32::MAX,
            packets_sent: 0,
            octets_sent: 0,
            rate_ppm: 0,
        };
        let mut out = vec![0xaa];
        s.stamp(&t, 2, &mut out);
        let mut p = 1;
        let mut seqs = Vec::new();
        while p < out.len() {
            assert_eq!(&out[p..p + 2], &[b'$', 4]);
            let len = u16::from_be_bytes([out[p + 2], out[p + 3]]) as usize;
            let h = &out[p + 4..p + 16];
            seqs.push(u16::from_be_bytes([h[2], h[3]]));
            assert_eq!(u32::from_be_bytes(h[4..8].try_into().unwrap()), 7199);
            assert_eq!(&h[8..12], &0xdeadbeefu32.to_be_bytes());
            let last = p + 4 + len == out.len();
            assert_eq!(h[1], if last { 0x80 | 96 } else { 96 });
            p += 4 + len;
        }
        assert_eq!(p, out.len());
        assert_eq!(seqs, vec![65534, 65535, 0, 1, 2]);
        assert_eq!(s.seq, 3);
    }

    #[test]
    fn a_fast_rtp_clock_gains_on_real_time() {
        let mut s = Sender::new(0);
        s.ts0 = 0;
        assert_eq!(s.frame_ts(250), 250 * 3600);
        s.rate_ppm = 10_000; // 1 % fast: 10 s of frames span 10.1 s of RTP time
        assert_eq!(s.frame_ts(250), 909_000);
        s.rate_ppm = -10_000;
        assert_eq!(s.frame_ts(250), 891_000);
    }

    #[test]
    fn sender_report_layout() {
        let s = Sender::new(0);
        let mut out = Vec::new();
        s.sender_report(UNIX_EPOCH + Duration::from_millis(1500), 1234, &mut out);
        assert_eq!(&out[..2], &[b'$', 1]);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]) as usize, out.len() - 4);
        assert_eq!(out.len() % 4, 0);
        let sr = &out[4..];
        assert_eq!(&sr[..4], &[0x80, 200, 0, 6]);
        assert_eq!(
            u32::from_be_bytes(sr[8..12].try_into().unwrap()),
            2_208_988_801
        );
        assert_eq!(u32::from_be_bytes(sr[12..16].try_into().unwrap()), 1 << 31);
        assert_eq!(u32::from_be_bytes(sr[16..20].try_into().unwrap()), 1234);
        let sdes = &sr[28..];
        assert_eq!(&sdes[..2], &[0x81, 202]);
        assert_eq!(
            (u16::from_be_bytes([sdes[2], sdes[3]]) as usize + 1) * 4,
            sdes.len()
        );
    }
}
