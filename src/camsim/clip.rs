//! Annex B elementary stream → access units, for the clips camsim loops.
//!
//! A clip (see `scripts/make-clips.sh`) is split once at startup into NAL
//! units (ITU-T H.264/H.265 Annex B byte stream format) and grouped into
//! access units (one picture each). Access unit delimiters are dropped and
//! parameter sets are lifted out of the stream: `rtp.rs` re-inserts them in
//! front of every IRAP picture, and `sdp_media` advertises them in the SDP.
//! The result borrows from the embedded bytes, so nothing is copied.

use std::fmt;

use anyhow::{bail, ensure, Result};

use super::auth::base64_encode;

/// Frames per second of every clip; `make-clips.sh` encodes at 25 fps.
pub(crate) const FPS: u32 = 25;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    H264,
    H265,
}

/// What a NAL unit means for access-unit grouping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Aud,
    /// VPS/SPS/PPS; the index is the slot in `Clip::params` (VPS, SPS, PPS).
    Param(usize),
    /// Non-VCL that may only precede the first VCL of an access unit (SEI, …).
    Prefix,
    /// `first` = first slice of a picture; `irap` = random access point.
    Vcl {
        first: bool,
        irap: bool,
    },
    Other,
}

impl Codec {
    fn kind(self, nal: &[u8]) -> Kind {
        match self {
            // H.264 Table 7-1; first_mb_in_slice is ue(v), so "== 0" is a
            // leading 1 bit in the byte after the header (§7.3.3).
            Codec::H264 => match nal[0] & 0x1f {
                t @ 1..=5 => Kind::Vcl {
                    first: nal.get(1).is_some_and(|b| b & 0x80 != 0),
                    irap: t == 5,
                },
                6 | 14..=18 => Kind::Prefix,
                7 => Kind::Param(1),
                8 => Kind::Param(2),
                9 => Kind::Aud,
                _ => Kind::Other,
            },
            // H.265 Table 7-1; first_slice_segment_in_pic_flag is the first
            // bit after the two-byte header (§7.3.6.1). IRAP = types 16..=23.
            Codec::H265 => match (nal[0] >> 1) & 0x3f {
                t @ 0..=31 => Kind::Vcl {
                    first: nal.get(2).is_some_and(|b| b & 0x80 != 0),
                    irap: (16..=23).contains(&t),
                },
                32 => Kind::Param(0),
                33 => Kind::Param(1),
                34 => Kind::Param(2),
                35 => Kind::Aud,
                39 | 41..=44 | 48..=55 => Kind::Prefix,
                _ => Kind::Other,
            },
        }
    }

    fn header_len(self) -> usize {
        match self {
            Codec::H264 => 1,
            Codec::H265 => 2,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::H264 => "H264",
            Codec::H265 => "H265",
        })
    }
}

/// One picture: its NAL units in decode order, without AUDs or parameter sets.
pub(crate) struct AccessUnit<'a> {
    pub(crate) nals: Vec<&'a [u8]>,
    pub(crate) irap: bool,
}

pub(crate) struct Clip<'a> {
    pub(crate) codec: Codec,
    pub(crate) frames: Vec<AccessUnit<'a>>,
    /// VPS (H.265 only), SPS, PPS.
    params: [Option<&'a [u8]>; 3],
    len_bytes: usize,
}

/// Splits an Annex B byte stream on `00 00 01` start codes. The zero byte of a
/// four-byte start code (and any trailing_zero_8bits) is trimmed from the end
/// of the previous NAL; a NAL unit never ends in 0x00 (H.264 §7.4.1.2.3).
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    let mut start = None;
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                push_trimmed(&mut nals, &data[s..i]);
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        push_trimmed(&mut nals, &data[s..]);
    }
    nals
}

fn push_trimmed<'a>(nals: &mut Vec<&'a [u8]>, nal: &'a [u8]) {
    let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    if end > 0 {
        nals.push(&nal[..end]);
    }
}

impl<'a> Clip<'a> {
    /// Groups NAL units into access units by the rules of H.264 §7.4.1.2.3 /
    /// H.265 §7.4.2.4.4: after a picture's slices, an AUD, parameter set,
    /// prefix SEI or a slice with the "first slice" flag starts the next one.
    /// That works with or without AUDs in the stream.
    pub(crate) fn parse(codec: Codec, data: &'a [u8]) -> Result<Self> {
        let mut frames = Vec::new();
        let mut params: [Option<&'a [u8]>; 3] = [None; 3];
        let mut cur = AccessUnit {
            nals: Vec::new(),
            irap: false,
        };
        let mut cur_has_vcl = false;
        for nal in split_annex_b(data) {
            if nal.len() <= codec.header_len() {
                bail!("{codec} clip has a truncated {}-byte NAL unit", nal.len());
            }
            let kind = codec.kind(nal);
            let starts_next = match kind {
                Kind::Aud | Kind::Param(_) | Kind::Prefix => true,
                Kind::Vcl { first, .. } => first,
                Kind::Other => false,
            };
            if cur_has_vcl && starts_next {
                frames.push(std::mem::replace(
                    &mut cur,
                    AccessUnit {
                        nals: Vec::new(),
                        irap: false,
                    },
                ));
                cur_has_vcl = false;
            }
            match kind {
                Kind::Aud => {}
                Kind::Param(slot) => match params[slot] {
                    None => params[slot] = Some(nal),
                    Some(p) if p == nal => {}
                    Some(_) => bail!(
                        "{codec} clip changes parameter sets mid-stream, which camsim does not \
                         support (the SDP advertises one set)"
                    ),
                },
                Kind::Vcl { irap, .. } => {
                    cur.irap |= irap;
                    cur_has_vcl = true;
                    cur.nals.push(nal);
                }
                Kind::Prefix | Kind::Other => cur.nals.push(nal),
            }
        }
        if cur_has_vcl {
            frames.push(cur);
        }
        ensure!(!frames.is_empty(), "{codec} clip has no pictures");
        ensure!(
            frames[0].irap,
            "{codec} clip must start with a random access picture so it can loop"
        );
        let needed = match codec {
            Codec::H264 => 1..3,
            Codec::H265 => 0..3,
        };
        ensure!(
            params[needed].iter().all(Option::is_some),
            "{codec} clip lacks a parameter set (needs SPS+PPS, plus VPS for H.265)"
        );
        Ok(Clip {
            codec,
            frames,
            params,
            len_bytes: data.len(),
        })
    }

    /// Parameter sets in the order they go in front of an IRAP picture.
    pub(crate) fn param_sets(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.params.iter().flatten().copied()
    }

    /// The media section of the SDP (RFC 4566), with the codec parameters of
    /// RFC 6184 §8.1 (H.264) or RFC 7798 §7.1 (H.265).
    pub(crate) fn sdp_media(&self) -> String {
        let duration_s = self.frames.len() as f64 / f64::from(FPS);
        let kbps = (self.len_bytes as f64 * 8.0 / duration_s / 1000.0).ceil() as u64;
        let b64 = |i: usize| base64_encode(self.params[i].unwrap_or_default());
        let fmtp = match self.codec {
            Codec::H264 => {
                let sps = self.params[1].unwrap_or_default();
                let pli: String = sps
                    .iter()
                    .skip(1)
                    .take(3)
                    .map(|b| format!("{b:02X}"))
                    .collect();
                format!(
                    "packetization-mode=1;profile-level-id={pli};sprop-parameter-sets={},{}",
                    b64(1),
                    b64(2)
                )
            }
            Codec::H265 => {
                format!(
                    "sprop-vps={};sprop-sps={};sprop-pps={}",
                    b64(0),
                    b64(1),
                    b64(2)
                )
            }
        };
        format!(
            "m=video 0 RTP/AVP {pt}\r\n\
             c=IN IP4 0.0.0.0\r\n\
             b=AS:{kbps}\r\n\
             a=rtpmap:{pt} {codec}/90000\r\n\
             a=fmtp:{pt} {fmtp}\r\n\
             a=framerate:{FPS}\r\n\
             a=control:{control}\r\n",
            pt = super::rtp::PAYLOAD_TYPE,
            codec = self.codec,
            control = super::TRACK_CONTROL,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x09, 0xf0, // AUD, 4-byte start code
            0, 0, 1, 0x67, 1, 2, 0, // SPS with a trailing zero byte
            0, 0, 0, 1, 0x68, 3, // PPS
            0, 0, 1, // empty NAL at the end is dropped
        ];
        let nals = split_annex_b(&data);
        assert_eq!(
            nals,
            vec![&[0x09, 0xf0][..], &[0x67, 1, 2][..], &[0x68, 3][..]]
        );
        assert!(split_annex_b(&[1, 2, 3]).is_empty());
        assert!(split_annex_b(&[]).is_empty());
    }

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
            .collect()
    }

    #[test]
    fn groups_h264_with_and_without_auds() {
        let sps: &[u8] = &[0x67, 0x64, 0x00, 0x28];
        let pps: &[u8] = &[0x68, 0xee];
        let idr_a: &[u8] = &[0x65, 0x88, 1]; // first slice of the IDR
        let idr_b: &[u8] = &[0x65, 0x20, 2]; // second slice, first_mb != 0
        let p: &[u8] = &[0x41, 0x9a, 3];
        let aud: &[u8] = &[0x09, 0x10];
        for stream in [
            annex_b(&[aud, sps, pps, idr_a, idr_b, aud, p, aud, p]),
            annex_b(&[sps, pps, idr_a, idr_b, p, p]),
        ] {
            let clip = Clip::parse(Codec::H264, &stream).unwrap();
            assert_eq!(clip.frames.len(), 3);
            assert!(clip.frames[0].irap && !clip.frames[1].irap);
            assert_eq!(clip.frames[0].nals, vec![idr_a, idr_b]);
            assert_eq!(clip.frames[2].nals, vec![p]);
            assert_eq!(clip.param_sets().collect::<Vec<_>>(), vec![sps, pps]);
        }
        let media = Clip::parse(Codec::H264, &annex_b(&[sps, pps, idr_a]))
            .unwrap()
            .sdp_media();
        assert!(media.contains("profile-level-id=640028;sprop-parameter-sets=Z2QAKA==,aO4="));
    }

    #[test]
    fn rejects_unloopable_clips() {
        let sps: &[u8] = &[0x67, 0x64, 0x00, 0x28];
        let pps: &[u8] = &[0x68, 0xee];
        let p: &[u8] = &[0x41, 0x9a, 3];
        let idr: &[u8] = &[0x65, 0x88, 1];
        assert!(Clip::parse(Codec::H264, &annex_b(&[sps, pps, p, idr])).is_err());
        assert!(Clip::parse(Codec::H264, &annex_b(&[pps, idr])).is_err());
        assert!(Clip::parse(
            Codec::H264,
            &annex_b(&[sps, pps, idr, &[0x67, 0x4d, 0, 0x1f]])
        )
        .is_err());
        assert!(Clip::parse(Codec::H264, b"garbage").is_err());
    }

    #[test]
    fn embedded_clips_are_as_documented() {
        for (codec, data) in [
            (Codec::H264, super::super::H264_CLIP),
            (Codec::H265, super::super::H265_CLIP),
        ] {
            let clip = Clip::parse(codec, data).unwrap();
            assert_eq!(clip.frames.len(), 150, "{codec}: 6 s at 25 fps");
            let keys: Vec<usize> = clip
                .frames
                .iter()
                .enumerate()
                .filter(|(_, f)| f.irap)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(keys, vec![0, 50, 100], "{codec}: IDR every 2 s");
            assert_eq!(
                clip.param_sets().count(),
                if codec == Codec::H264 { 2 } else { 3 }
            );
        }
    }
}
