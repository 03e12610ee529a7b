//! A camera's frames as RTP payloads, made once per camera and shared by every viewer.
//!
//! Frames arrive in MP4 form (4-byte length-prefixed NAL units) with their codec
//! parameters in the sample entry. Keyframes get the parameter sets (SPS/PPS, and VPS
//! for H.265) put in front, so a viewer can start at any keyframe. Payloads are split
//! at [`MTU`] with the RTP payload formats of RFC 6184 (H.264) and RFC 7798 (H.265).

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::h265::HevcPayloader;
use rtc::rtp::packetizer::Payloader;

use crate::hub::{Frame, StreamParams};
use crate::time::WallUs;

/// RTP payload size: leaves room for RTP, SRTP and TURN headers inside a 1280-byte
/// IPv6 minimum MTU path.
pub const MTU: usize = 1200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    pub fn of(params: &StreamParams) -> Option<Codec> {
        if params.codec.starts_with("avc1") {
            Some(Codec::H264)
        } else if params.codec.starts_with("hvc1") || params.codec.starts_with("hev1") {
            Some(Codec::H265)
        } else {
            None
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Codec::H264 => "video/H264",
            Codec::H265 => "video/H265",
        }
    }
}

/// One frame, packetized.
#[derive(Debug)]
pub struct Packetized {
    pub ts_90k: i64,
    pub arrival_us: WallUs,
    /// When packetizing finished (the server-added latency is measured from `arrival_us`).
    pub at: Instant,
    pub is_key: bool,
    pub codec: Codec,
    /// The RTP payloads in order; the last one carries the marker bit.
    pub payloads: Vec<Bytes>,
    pub bytes: usize,
}

/// Packetizes frames of one camera; keeps the parameter sets of the current stream.
#[derive(Default)]
pub struct Packetizer {
    params: Option<Arc<StreamParams>>,
    codec: Option<Codec>,
    parameter_sets: Vec<Bytes>,
    h264: H264Payloader,
    h265: HevcPayloader,
}

impl Packetizer {
    /// The frame as RTP payloads, or `None` when its codec cannot be sent or it is
    /// malformed (logged by the caller; the viewer waits for the next keyframe).
    pub fn packetize(&mut self, frame: &Frame) -> Option<Packetized> {
        if self.params.as_ref().is_none_or(|p| !Arc::ptr_eq(p, &frame.params) && **p != *frame.params) {
            self.codec = Codec::of(&frame.params);
            self.parameter_sets = match self.codec {
                Some(Codec::H264) => avcc_parameter_sets(&frame.params.sample_entry),
                Some(Codec::H265) => hvcc_parameter_sets(&frame.params.sample_entry),
                None => Vec::new(),
            };
            self.params = Some(frame.params.clone());
        }
        let codec = self.codec?;
        let mut annexb = BytesMut::with_capacity(frame.data.len() + 64);
        if frame.is_key {
            for ps in &self.parameter_sets {
                annexb.put_slice(&[0, 0, 0, 1]);
                annexb.put_slice(ps);
            }
        }
        let mut rest = &frame.data[..];
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len == 0 || len > rest.len() - 4 {
                return None;
            }
            annexb.put_slice(&[0, 0, 0, 1]);
            annexb.put_slice(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        let annexb = annexb.freeze();
        let payloads = match codec {
            Codec::H264 => self.h264.payload(MTU, &annexb),
            Codec::H265 => self.h265.payload(MTU, &annexb),
        }
        .ok()?;
        if payloads.is_empty() {
            return None;
        }
        let bytes = payloads.iter().map(Bytes::len).sum();
        Some(Packetized { ts_90k: frame.ts_90k, arrival_us: frame.arrival_us, at: Instant::now(), is_key: frame.is_key, codec, payloads, bytes })
    }
}

/// The box payload after `fourcc` inside `entry`, if present.
fn find_box<'a>(entry: &'a [u8], fourcc: &[u8; 4]) -> Option<&'a [u8]> {
    let at = entry.windows(4).position(|w| w == fourcc)?;
    let size_at = at.checked_sub(4)?;
    let size = u32::from_be_bytes(entry[size_at..at].try_into().ok()?) as usize;
    entry.get(at + 4..size_at + size)
}

/// SPS and PPS from an `avcC` box (ISO/IEC 14496-15 §5.3.3.1).
pub fn avcc_parameter_sets(entry: &[u8]) -> Vec<Bytes> {
    let Some(c) = find_box(entry, b"avcC") else { return Vec::new() };
    let mut out = Vec::new();
    let mut i = 5;
    for mask in [0x1f_u8, 0xff] {
        let Some(&n) = c.get(i) else { return out };
        i += 1;
        for _ in 0..(n & mask) {
            let Some(len) = c.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) else { return out };
            let Some(nal) = c.get(i + 2..i + 2 + len) else { return out };
            out.push(Bytes::copy_from_slice(nal));
            i += 2 + len;
        }
    }
    out
}

/// VPS, SPS and PPS from an `hvcC` box (ISO/IEC 14496-15 §8.3.3.1).
pub fn hvcc_parameter_sets(entry: &[u8]) -> Vec<Bytes> {
    let Some(c) = find_box(entry, b"hvcC") else { return Vec::new() };
    let mut out = Vec::new();
    let Some(&arrays) = c.get(22) else { return out };
    let mut i = 23;
    for _ in 0..arrays {
        let Some(n) = c.get(i + 1..i + 3).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return out };
        i += 3;
        for _ in 0..n {
            let Some(len) = c.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) else { return out };
            let Some(nal) = c.get(i + 2..i + 2 + len) else { return out };
            out.push(Bytes::copy_from_slice(nal));
            i += 2 + len;
        }
    }
    out
}

/// `profile-level-id` (RFC 6184 §8.1) of an H.264 stream, from its SPS.
pub fn h264_profile_level_id(params: &StreamParams) -> Option<String> {
    let sps = avcc_parameter_sets(&params.sample_entry).into_iter().find(|n| n.first().is_some_and(|b| b & 0x1f == 7))?;
    Some(format!("{:02x}{:02x}{:02x}", sps.get(1)?, sps.get(2)?, sps.get(3)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avc1_entry(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut c = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        c.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        c.extend_from_slice(sps);
        c.push(1);
        c.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        c.extend_from_slice(pps);
        let mut b = ((c.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(b"avcC");
        b.extend_from_slice(&c);
        let mut entry = vec![0u8; 78];
        entry.extend_from_slice(&b);
        entry
    }

    fn params(entry: Vec<u8>) -> Arc<StreamParams> {
        Arc::new(StreamParams { codec: "avc1.64001f".into(), sample_entry: entry, width: 640, height: 360 })
    }

    fn frame(params: &Arc<StreamParams>, nals: &[&[u8]], key: bool) -> Frame {
        let mut d = Vec::new();
        for n in nals {
            d.extend_from_slice(&(n.len() as u32).to_be_bytes());
            d.extend_from_slice(n);
        }
        Frame { ts_90k: 3000, arrival_us: 1, is_key: key, data: Bytes::from(d), params: params.clone() }
    }

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];

    #[test]
    fn parameter_sets_come_from_avcc_and_name_the_profile() {
        let p = params(avc1_entry(SPS, PPS));
        assert_eq!(avcc_parameter_sets(&p.sample_entry), vec![Bytes::from_static(SPS), Bytes::from_static(PPS)]);
        assert_eq!(h264_profile_level_id(&p).as_deref(), Some("64001f"));
    }

    #[test]
    fn keyframes_carry_parameter_sets_and_large_frames_fragment() {
        let p = params(avc1_entry(SPS, PPS));
        let mut pk = Packetizer::default();
        let idr = [&[0x65u8][..], &vec![0xab; 3000][..]].concat();
        let out = pk.packetize(&frame(&p, &[&idr], true)).unwrap();
        // STAP-A (type 24) with SPS and PPS first, then FU-A (type 28) fragments.
        assert_eq!(out.payloads[0][0] & 0x1f, 24, "parameter sets aggregated first");
        assert!(out.payloads[1..].iter().all(|b| b[0] & 0x1f == 28));
        assert!(out.payloads.iter().all(|b| b.len() <= MTU));
        assert_eq!(out.codec, Codec::H264);
        // A P-frame carries no parameter sets.
        let small = pk.packetize(&frame(&p, &[&[0x41, 1, 2, 3]], false)).unwrap();
        assert_eq!(small.payloads, vec![Bytes::from_static(&[0x41, 1, 2, 3])]);
    }

    #[test]
    fn a_truncated_frame_is_refused() {
        let p = params(avc1_entry(SPS, PPS));
        let mut f = frame(&p, &[&[0x41, 1, 2, 3]], false);
        f.data = Bytes::from_static(&[0, 0, 0, 9, 0x41, 1]);
        assert!(Packetizer::default().packetize(&f).is_none());
    }
}
