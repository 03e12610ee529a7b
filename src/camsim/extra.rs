//! Extra clips: `cradle camsim --clip NAME=PATH` serves a file of the user's at `/NAME`.
//!
//! Tests that need a camera to show something particular (a covered lens, a frozen or
//! blurred picture, a camera knocked aside: `scripts/make-tamper-clips.sh`) give camsim
//! their own clip instead of the embedded one. The file is read once at start, checked,
//! and then looped exactly like the embedded clips: same packetizer, same pacing, RTP
//! timestamps continuous across the loop.
//!
//! What a clip must be (the same constraints `scripts/make-clips.sh` lists), and what is
//! checked here so a bad file fails at start with the reason instead of confusing the
//! recorder later:
//!
//! * an Annex B elementary stream (start codes, not an MP4/MKV/TS container), H.265 when
//!   the name ends in `.h265` or `.hevc`, otherwise H.264;
//! * a random access picture first (IDR; for H.265 also CRA/BLA), so the loop restarts
//!   cleanly, and closed GOPs (no H.265 RASL pictures, which need the previous GOP);
//! * no B-frames: camsim sends pictures in file order with rising timestamps. Checked
//!   from every H.264 slice header's `slice_type` (§7.4.3) and from the H.265 SPS's
//!   `sps_max_num_reorder_pics` (§7.4.3.2.1);
//! * one set of parameter sets (the SDP advertises one), which [`Clip::parse`] checks.
//!
//! Clips play at 25 fps whatever rate they were encoded at. AUDs are optional (access
//! units are also found from the slice headers), and parameter sets in front of every
//! IDR are not needed: camsim puts them there itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};

use super::clip::{split_annex_b, Clip, Codec, FPS};
use super::rtp::Packetized;
use super::{Mount, Source};

/// `--clip NAME=PATH`: the file at `path` served at `rtsp://…/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraClip {
    /// The mount, without the slash: letters, digits, `-`, `_` and `.`, starting with a
    /// letter or digit; not `garbage` nor a name of the built-in cameras (`cam3`,
    /// `cam3-h265`).
    pub name: String,
    /// An Annex B elementary stream: H.265 if the name ends in `.h265` or `.hevc`
    /// (any case), H.264 otherwise.
    pub path: PathBuf,
}

impl ExtraClip {
    /// Checks the name; the file is only read when the server starts.
    pub fn new(name: &str, path: impl Into<PathBuf>) -> Result<ExtraClip, String> {
        check_name(name)?;
        let path = path.into();
        if path.as_os_str().is_empty() {
            return Err(format!("clip {name:?}: empty file path"));
        }
        Ok(ExtraClip {
            name: name.to_owned(),
            path,
        })
    }

    pub(crate) fn codec(&self) -> Codec {
        codec_for(&self.path)
    }

    /// Reads and checks the file and packetizes it. Every error names the option and
    /// the file, and says what is wrong with it.
    pub(crate) fn load(&self) -> Result<Source> {
        let what = || format!("camsim --clip {}={}", self.name, self.path.display());
        let data = std::fs::read(&self.path).with_context(|| format!("{}: cannot read the file", what()))?;
        let codec = self.codec();
        let (source, pictures) = build(codec, &data).with_context(what)?;
        tracing::info!(
            mount = %format!("/{}", self.name),
            file = %self.path.display(),
            %codec,
            pictures,
            seconds = pictures as f64 / f64::from(FPS),
            "camsim: extra clip loaded"
        );
        Ok(source)
    }
}

/// `NAME=PATH`, as given to `--clip`.
impl FromStr for ExtraClip {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((name, path)) = s.split_once('=') else {
            return Err(format!("{s:?}: expected NAME=PATH, e.g. black=/tmp/clips/black.h264"));
        };
        ExtraClip::new(name, path)
    }
}

impl fmt::Display for ExtraClip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{} ({})", self.name, self.path.display())
    }
}

/// The name must make a one-segment path that no built-in mount already answers.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 64 || !ok_chars || !ok_start {
        return Err(format!(
            "clip name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ));
    }
    if Mount::resolve(&format!("/{name}"), usize::MAX, &[]).is_some() {
        return Err(format!(
            "clip name {name:?} is taken by a built-in camera (/camK, /camK-h265, /garbage); choose another"
        ));
    }
    Ok(())
}

fn codec_for(path: &Path) -> Codec {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("h265" | "hevc" | "265") => Codec::H265,
        _ => Codec::H264,
    }
}

/// Checks a clip and packetizes it; also returns its number of pictures.
fn build(codec: Codec, data: &[u8]) -> Result<(Source, usize)> {
    check_annex_b(codec, data)?;
    let clip = Clip::parse(codec, data).map_err(|e| {
        let hint = match codec {
            Codec::H264 => " (if it is H.265, name the file .h265 or .hevc)",
            Codec::H265 => " (if it is H.264, name the file .h264)",
        };
        anyhow::anyhow!("{e:#}{hint}")
    })?;
    check_no_reordering(&clip)?;
    let pictures = clip.frames.len();
    Ok((
        Source {
            packets: Packetized::new(&clip),
            sdp_media: clip.sdp_media(),
        },
        pictures,
    ))
}

/// A stream of start codes and NAL units of the named codec, not a container file.
fn check_annex_b(codec: Codec, data: &[u8]) -> Result<()> {
    ensure!(!data.is_empty(), "the file is empty");
    let starts_with_start_code = data.starts_with(&[0, 0, 1]) || data.starts_with(&[0, 0, 0, 1]);
    if !starts_with_start_code {
        let head: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let container = if data.get(4..8) == Some(b"ftyp") {
            " (that is an MP4/MOV file)"
        } else if data.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
            " (that is a Matroska/WebM file)"
        } else if data[0] == 0x47 {
            " (an MPEG-TS file?)"
        } else {
            ""
        };
        bail!(
            "not an Annex B byte stream: it does not begin with a 00 00 01 start code but with {}{container}; \
             extract the video with `ffmpeg -i IN -an -c:v copy -bsf:v {}_mp4toannexb -f {} OUT`",
            head.join(" "),
            if codec == Codec::H264 { "h264" } else { "hevc" },
            if codec == Codec::H264 { "h264" } else { "hevc" },
        );
    }
    let nals = split_annex_b(data);
    let Some(first) = nals.first() else {
        bail!("not an Annex B byte stream: start codes but no NAL units");
    };
    let other = match codec {
        Codec::H264 => Codec::H265,
        Codec::H265 => Codec::H264,
    };
    if !looks_like(codec, &nals) {
        let hint = if looks_like(other, &nals) {
            match other {
                Codec::H265 => "; it looks like H.265: name the file .h265 or .hevc",
                Codec::H264 => "; it looks like H.264: name the file .h264",
            }
        } else {
            ""
        };
        bail!(
            "not an {codec} stream: its NAL unit headers are not {codec} ones (the first is {}){hint}",
            first.iter().take(2).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "),
        );
    }
    Ok(())
}

/// Whether nearly all of the first NAL units have headers a `codec` camera stream has:
/// forbidden_zero_bit clear and a type such streams use. The two codecs' headers tell
/// each other apart: H.265 parameter sets and slices read as H.264 types 0, 2 or 4
/// (unspecified, or data partitions no camera uses), and H.264 units read as H.265
/// have a temporal id of 0 or a layer id, which a single-layer stream never has.
fn looks_like(codec: Codec, nals: &[&[u8]]) -> bool {
    let sample = &nals[..nals.len().min(64)];
    let good = sample
        .iter()
        .filter(|nal| match codec {
            // H.264 §7.3.1: forbidden_zero_bit, nal_ref_idc (2), nal_unit_type (5); slices,
            // SEI, SPS, PPS, AUD, end of sequence/stream, filler.
            Codec::H264 => nal[0] & 0x80 == 0 && matches!(nal[0] & 0x1f, 1 | 5..=12),
            // H.265 §7.3.1.2: forbidden_zero_bit, type (6), nuh_layer_id (6) = 0,
            // nuh_temporal_id_plus1 (3) != 0.
            Codec::H265 => {
                nal.len() >= 2
                    && nal[0] & 0x81 == 0
                    && nal[1] & 0xf8 == 0
                    && nal[1] & 0x07 != 0
                    && matches!((nal[0] >> 1) & 0x3f, 0..=9 | 16..=21 | 32..=40)
            }
        })
        .count();
    good * 10 >= sample.len() * 9
}

/// No picture may be sent before one it follows in display order: camsim stamps them
/// in file order, so reordering would play them out of order.
fn check_no_reordering(clip: &Clip<'_>) -> Result<()> {
    let at = |i: usize| format!("picture {i} ({:.2} s into the clip)", i as f64 / f64::from(FPS));
    match clip.codec {
        Codec::H264 => {
            for (i, frame) in clip.frames.iter().enumerate() {
                for nal in frame.nals.iter().filter(|n| matches!(n[0] & 0x1f, 1 | 5)) {
                    // §7.3.3: first_mb_in_slice ue(v), slice_type ue(v); 1 and 6 are B.
                    let mut r = Bits::new(&nal[1..]);
                    let slice_type = r.ue().and_then(|_| r.ue());
                    match slice_type {
                        Some(1 | 6) => bail!(
                            "{} is a B-frame: camsim sends pictures in file order with rising \
                             timestamps, so a stream with B-frames would play out of order; \
                             re-encode without them (x264: bframes=0)",
                            at(i)
                        ),
                        Some(0..=9) => {}
                        _ => bail!("{}: a slice header that cannot be read (corrupt?)", at(i)),
                    }
                }
            }
        }
        Codec::H265 => {
            for (i, frame) in clip.frames.iter().enumerate() {
                // RASL pictures (types 8, 9) reference the GOP before their CRA: an open
                // GOP, which cannot loop.
                if frame.nals.iter().any(|n| matches!((n[0] >> 1) & 0x3f, 8 | 9)) {
                    bail!(
                        "{} is a RASL picture (an open GOP): it needs the pictures before its \
                         CRA, which the loop does not have; re-encode with closed GOPs (x265: open-gop=0)",
                        at(i)
                    );
                }
            }
            let sps = clip.param_sets().find(|n| (n[0] >> 1) & 0x3f == 33).context("no SPS")?;
            match h265_max_reorder(sps) {
                Some(0) => {}
                Some(n) => bail!(
                    "its SPS allows {n} picture(s) out of order (sps_max_num_reorder_pics): B-frames; \
                     camsim sends pictures in file order with rising timestamps, so they would play \
                     out of order; re-encode without them (x265: bframes=0)"
                ),
                None => bail!("its SPS cannot be read (corrupt?)"),
            }
        }
    }
    Ok(())
}

/// `sps_max_num_reorder_pics` of an H.265 SPS (the largest over its sub-layers),
/// following §7.3.2.2.1 and profile_tier_level() of §7.3.3.
fn h265_max_reorder(sps: &[u8]) -> Option<u32> {
    let mut r = Bits::new(sps.get(2..)?);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.u(3)? as usize;
    r.skip(1)?; // sps_temporal_id_nesting_flag
    // profile_tier_level(1, max_sub_layers_minus1): 88 bits of general profile, 8 of level.
    r.skip(96)?;
    let mut present = Vec::with_capacity(max_sub_layers_minus1);
    for _ in 0..max_sub_layers_minus1 {
        present.push((r.u(1)? == 1, r.u(1)? == 1));
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?;
    }
    for (profile, level) in present {
        r.skip(if profile { 88 } else { 0 } + if level { 8 } else { 0 })?;
    }
    r.ue()?; // sps_seq_parameter_set_id
    if r.ue()? == 3 {
        r.skip(1)?; // separate_colour_plane_flag
    }
    r.ue()?; // pic_width_in_luma_samples
    r.ue()?; // pic_height_in_luma_samples
    if r.u(1)? == 1 {
        for _ in 0..4 {
            r.ue()?; // conformance window offsets
        }
    }
    r.ue()?; // bit_depth_luma_minus8
    r.ue()?; // bit_depth_chroma_minus8
    r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
    let all_sub_layers = r.u(1)? == 1;
    let first = if all_sub_layers { 0 } else { max_sub_layers_minus1 };
    let mut max = 0;
    for _ in first..=max_sub_layers_minus1 {
        r.ue()?; // sps_max_dec_pic_buffering_minus1
        max = max.max(r.ue()?);
        r.ue()?; // sps_max_latency_increase_plus1
    }
    Some(max)
}

/// A bit reader over the RBSP of a NAL unit's start (emulation prevention bytes removed,
/// H.264 §7.4.1 / H.265 §7.4.2). Only headers are read, so 256 bytes are plenty.
struct Bits {
    rbsp: Vec<u8>,
    pos: usize,
}

impl Bits {
    fn new(payload: &[u8]) -> Bits {
        let mut rbsp = Vec::with_capacity(256);
        let mut zeros = 0;
        for &b in payload.iter().take(256) {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            rbsp.push(b);
        }
        Bits { rbsp, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.rbsp.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    fn u(&mut self, n: usize) -> Option<u32> {
        (0..n).try_fold(0, |v, _| Some((v << 1) | self.bit()?))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        if self.pos + n > self.rbsp.len() * 8 {
            return None;
        }
        self.pos += n;
        Some(())
    }

    /// Exp-Golomb ue(v) (H.264 §9.1).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.u(zeros)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter().flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat()).collect()
    }

    fn error(codec: Codec, data: &[u8]) -> String {
        match build(codec, data) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn parses_name_equals_path() {
        let c: ExtraClip = "black=/tmp/clips/black.h264".parse().unwrap();
        assert_eq!(c, ExtraClip { name: "black".into(), path: "/tmp/clips/black.h264".into() });
        assert_eq!(c.codec(), Codec::H264);
        // Only the first '=' splits: paths may contain one.
        let c: ExtraClip = "room-2.east_1=dir=x/a.HEVC".parse().unwrap();
        assert_eq!((c.name.as_str(), c.path.to_str().unwrap()), ("room-2.east_1", "dir=x/a.HEVC"));
        assert_eq!(c.codec(), Codec::H265);
        assert_eq!(ExtraClip::new("a", "b.h265").unwrap().codec(), Codec::H265);
        assert_eq!(ExtraClip::new("a", "b.264").unwrap().codec(), Codec::H264);
        assert_eq!(ExtraClip::new("a", "b").unwrap().codec(), Codec::H264);
        for (bad, says) in [
            ("black", "NAME=PATH"),
            ("=x.h264", "clip name"),
            ("black=", "empty file path"),
            ("a/b=x.h264", "clip name"),
            ("-a=x.h264", "clip name"),
            ("..=x.h264", "clip name"),
            ("a b=x.h264", "clip name"),
            ("cam1=x.h264", "built-in"),
            ("cam12-h265=x.h264", "built-in"),
            ("garbage=x.h264", "built-in"),
        ] {
            let err = bad.parse::<ExtraClip>().unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        // Not the canonical spelling of a camera, so free to use.
        assert!("cam01=x.h264".parse::<ExtraClip>().is_ok());
        assert!(ExtraClip::new(&"x".repeat(65), "a").is_err());
    }

    #[test]
    fn embedded_clips_pass_the_checks() {
        let (source, pictures) = build(Codec::H264, super::super::H264_CLIP).unwrap();
        assert_eq!((pictures, source.packets.frames.len()), (150, 150));
        let (source, _) = build(Codec::H265, super::super::H265_CLIP).unwrap();
        assert!(source.sdp_media.contains("H265/90000"));
    }

    #[test]
    fn says_what_is_wrong_with_a_file() {
        let sps: &[u8] = &[0x67, 0x64, 0x00, 0x28];
        let pps: &[u8] = &[0x68, 0xee];
        let aud: &[u8] = &[0x09, 0xf0];
        let idr: &[u8] = &[0x65, 0x88, 1]; // first_mb 0, slice_type 7 (I)
        let p: &[u8] = &[0x41, 0x9a, 3]; // slice_type 5 (P)
        let b: &[u8] = &[0x01, 0xa0, 3]; // slice_type 1 (B)
        let b6: &[u8] = &[0x01, 0x9c, 3]; // slice_type 6 (B)
        assert!(build(Codec::H264, &annex_b(&[aud, sps, pps, idr, aud, p, aud, p])).is_ok());

        let e = error(Codec::H264, &annex_b(&[aud, sps, pps, idr, aud, p, aud, b]));
        assert!(e.contains("picture 2 (0.08 s into the clip) is a B-frame"), "{e}");
        assert!(error(Codec::H264, &annex_b(&[sps, pps, idr, b6])).contains("B-frame"));

        let e = error(Codec::H264, &annex_b(&[aud, sps, pps, p, aud, idr]));
        assert!(e.contains("random access picture"), "{e}");

        let mut mp4 = vec![0, 0, 0, 0x18];
        mp4.extend_from_slice(b"ftypisom");
        let e = error(Codec::H264, &mp4);
        assert!(e.contains("not an Annex B byte stream") && e.contains("MP4"), "{e}");
        assert!(e.contains("-bsf:v h264_mp4toannexb"), "{e}");
        assert!(error(Codec::H264, b"").contains("empty"));
        assert!(error(Codec::H264, &[0, 0, 1]).contains("no NAL units"));

        // The embedded H.265 clip under an .h264 name, and the other way round.
        let e = error(Codec::H264, super::super::H265_CLIP);
        assert!(e.contains("looks like H.265: name the file .h265"), "{e}");
        let e = error(Codec::H265, super::super::H264_CLIP);
        assert!(e.contains("looks like H.264: name the file .h264"), "{e}");
    }

    #[test]
    fn h265_reordering_and_open_gops_are_refused() {
        let clip = Clip::parse(Codec::H265, super::super::H265_CLIP).unwrap();
        let sps = clip.param_sets().nth(1).unwrap();
        assert_eq!(h265_max_reorder(sps), Some(0));
        // A hand-made SPS: VPS 0, one sub-layer, 96 zero bits of profile/tier/level, SPS 0,
        // 4:2:0, 64x64, no window, 8-bit, ordering info for all sub-layers: DPB 5, reorder 2.
        let mut bits = String::from("0000" /* vps */);
        bits += "000"; // max_sub_layers_minus1
        bits += "1"; // temporal_id_nesting
        bits += &"0".repeat(96);
        bits += "1"; // sps id ue(0)
        bits += "010"; // chroma_format_idc ue(1)
        bits += "0000001000001"; // width ue(64)
        bits += "0000001000001"; // height ue(64)
        bits += "0"; // conformance_window_flag
        bits += "1"; // bit_depth_luma ue(0)
        bits += "1"; // bit_depth_chroma ue(0)
        bits += "00101"; // log2_max_poc_lsb_minus4 ue(4)
        bits += "1"; // sub_layer_ordering_info_present
        bits += "00101"; // max_dec_pic_buffering_minus1 ue(4)
        bits += "011"; // max_num_reorder_pics ue(2)
        bits += "1"; // max_latency_increase_plus1 ue(0)
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let mut sps = vec![0x42, 0x01];
        sps.extend(bits.as_bytes().chunks(8).map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap()));
        assert_eq!(h265_max_reorder(&sps), Some(2));
        assert_eq!(h265_max_reorder(&sps[..10]), None);

        // The embedded clip plus one RASL picture (type 8, first slice): an open GOP.
        let mut open_gop = super::super::H265_CLIP.to_vec();
        open_gop.extend_from_slice(&annex_b(&[&[0x46, 0x01, 0x50], &[0x10, 0x01, 0x80, 7]]));
        let e = error(Codec::H265, &open_gop);
        assert!(e.contains("picture 150 (6.00 s into the clip) is a RASL picture"), "{e}");
    }

    #[test]
    fn reads_exp_golomb_without_emulation_prevention_bytes() {
        // 00 00 03 01: the 03 only keeps the bytes from looking like a start code.
        assert_eq!(Bits::new(&[0x00, 0x00, 0x03, 0x01, 0x03]).rbsp, [0, 0, 1, 3]);
        let mut r = Bits::new(&[0xa2, 0x00]); // 1 | 010 | 00100 | 0000000
        assert_eq!((r.ue(), r.ue(), r.ue()), (Some(0), Some(1), Some(3)));
        assert_eq!(r.ue(), None, "runs out of bits");
    }
}
