//! One keyframe decoded into what people and the tamper checks look at.
//!
//! Every few seconds the snapshot task takes each camera's latest keyframe from the hub
//! ([`CameraHub::latest_keyframe`](crate::hub::CameraHub::latest_keyframe)) and hands it
//! to that camera's [`KeyframeDecoder`] on a blocking thread (`spawn_blocking`: this is
//! CPU work). FFmpeg decodes that one access unit — never the rest of the GOP, never
//! every frame (ARCHITECTURE, "FFmpeg") — and swscale makes two pictures of it:
//!
//! * a JPEG for the operator's grid and for alarms, at most [`JPEG_MAX_WIDTH`] wide,
//!   made by FFmpeg's own `mjpeg` encoder (already linked, SIMD DCT, no second image
//!   stack to carry);
//! * a [`Luma`] picture: 8-bit grey, [`LUMA_WIDTH`] wide, for the tamper checks
//!   ([`super::tamper`]), so they never touch a full-size frame.
//!
//! The decoder is configured from the stream's ISO BMFF sample entry alone: its
//! `avcC`/`hvcC` box (ISO/IEC 14496-15 §5.3.3.1 / §8.3.3.1) is what FFmpeg's H.264 and
//! HEVC decoders take as extradata, and it carries both the parameter sets and the NAL
//! length size of the MP4-form frames the hub passes around.
//!
//! A snapshot costs 15–20 ms of one core for a 1080p H.264 camera ([`KeyframeDecoder`]
//! has the measurements), a fifth of the 100 ms budget.

use std::sync::{Arc, Once};

use bytes::Bytes;
use ffmpeg_next as ffmpeg;

use ffmpeg::codec::{self, threading};
use ffmpeg::software::scaling;
use ffmpeg::util::format::Pixel;
use ffmpeg::util::frame::Video as Picture;

use super::tamper::{Luma, ANALYSIS_WIDTH};
use crate::hub::{Frame, StreamParams};

/// Snapshots wider than this are scaled down (keeping the aspect ratio): enough for an
/// operator's grid tile or an alarm e-mail, with under half the pixels of 1080p.
pub const JPEG_MAX_WIDTH: u32 = 1280;

/// Width of the tamper checks' luma picture: their analysis width, so a 16:9 camera's
/// picture (160x90) is used as it comes; other shapes keep their aspect ratio here and
/// the checks resize them. Area averaging from the full frame, so noise and compression
/// artefacts mostly average away.
pub const LUMA_WIDTH: u32 = ANALYSIS_WIDTH;

/// FFmpeg's quantiser scale for `mjpeg` (2 best … 31 worst). Its quantisation tables are
/// the MPEG-1 intra matrix × qscale / 8, so 5 is close to libjpeg's quality 75 for
/// luma and a little finer for chroma (camsim's 1280x720 pictures: 40–45 kB).
const JPEG_QSCALE: i32 = 5;

/// What one keyframe became.
#[derive(Clone)]
pub struct Decoded {
    /// A baseline JFIF picture (4:2:0, full range, square pixels),
    /// [`Self::width`]x[`Self::height`].
    pub jpeg: Bytes,
    pub width: u32,
    pub height: u32,
    /// The small grey picture for the tamper checks, full range (black 0, white 255).
    pub luma: Luma,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decoded({}×{} JPEG of {} bytes, {:?})", self.width, self.height, self.jpeg.len(), self.luma)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a keyframe: a snapshot decodes one keyframe on its own")]
    NotKeyframe,
    #[error(
        "unsupported codec {0}: snapshots decode H.264 (avc1/avc3) and H.265 (hvc1/hev1)"
    )]
    UnsupportedCodec(String),
    /// The sample entry or the keyframe is damaged; the message says which and how.
    #[error("corrupt {0}")]
    Corrupt(String),
    #[error("the decoder produced no picture from the keyframe (an incomplete access unit?)")]
    NoPicture,
    /// FFmpeg failed for a reason other than the data (out of memory, a missing encoder).
    #[error("FFmpeg {what}: {source}")]
    Ffmpeg {
        what: &'static str,
        source: ffmpeg::Error,
    },
}

/// Decodes one keyframe with a decoder opened for it alone. A camera's snapshot task
/// should keep a [`KeyframeDecoder`] instead, which saves reopening the codecs.
pub fn decode_keyframe(frame: &Frame) -> Result<Decoded, DecodeError> {
    KeyframeDecoder::new().decode(frame)
}

/// A decoder kept between snapshots (the snapshot service shares a couple among all
/// cameras: see `service::SPARE_DECODERS`).
///
/// It opens the H.264/HEVC decoder for the stream's parameters on first use and again
/// only when they change (another camera's, or a camera reconfigured), and keeps the JPEG
/// encoder for the output size. Whichever of the two fails is dropped and reopened next time, so a
/// damaged keyframe cannot leave state behind.
///
/// Measured (`decode_cost_per_snapshot`, release, CPU time of the one thread, camsim's
/// clips on the 2-core dev box; the budget is 100 ms per snapshot, 1 % of a core
/// per camera at a 10 s interval): a 1080p H.264 keyframe (88 kB) to a 1280x720 JPEG and
/// the luma picture takes 15–16 ms, of which decoding 10–11 ms, and 18–19 ms when the
/// decoder is opened afresh; a 720p H.265 keyframe (20 kB) 8–9 ms either way. Reuse saves
/// ~3 ms of H.264 set-up: kept because it costs nothing, not because it is needed. A
/// real camera's busier keyframes (200–500 kB) decode slower, roughly with their size.
#[derive(Default)]
pub struct KeyframeDecoder {
    video: Option<VideoDecoder>,
    jpeg: Option<JpegEncoder>,
}

impl KeyframeDecoder {
    pub fn new() -> KeyframeDecoder {
        KeyframeDecoder::default()
    }

    pub fn decode(&mut self, frame: &Frame) -> Result<Decoded, DecodeError> {
        if !frame.is_key {
            return Err(DecodeError::NotKeyframe);
        }
        if frame.data.is_empty() {
            // FFmpeg would take an empty packet for the end of the stream.
            return Err(DecodeError::Corrupt("keyframe: empty access unit".into()));
        }
        let mut video = match self.video.take() {
            Some(v) if v.serves(&frame.params) => v,
            _ => VideoDecoder::open(&frame.params)?,
        };
        let picture = video.decode(&frame.data)?;
        self.video = Some(video);

        let (width, height) = fit(picture.width(), picture.height(), JPEG_MAX_WIDTH);
        // 4:2:0 chroma is subsampled by two both ways: keep the JPEG's size even.
        let (width, height) = ((width & !1).max(2), (height & !1).max(2));
        let mut yuv = scale(&picture, Pixel::YUVJ420P, width, height)?;
        let mut jpeg = match self.jpeg.take() {
            Some(j) if j.size == (width, height) => j,
            _ => JpegEncoder::open(width, height)?,
        };
        let bytes = jpeg.encode(&mut yuv)?;
        self.jpeg = Some(jpeg);

        let (lw, lh) = fit(picture.width(), picture.height(), LUMA_WIDTH);
        let grey = scale(&picture, Pixel::GRAY8, lw, lh)?;
        let stride = grey.stride(0);
        let plane = grey.data(0);
        let mut data = Vec::with_capacity(lw as usize * lh as usize);
        for row in 0..lh as usize {
            data.extend_from_slice(&plane[row * stride..row * stride + lw as usize]);
        }
        Ok(Decoded {
            jpeg: bytes,
            width,
            height,
            luma: Luma {
                width: lw,
                height: lh,
                data,
            },
        })
    }
}

// The snapshot task moves decoders into `spawn_blocking` and back.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<KeyframeDecoder>();
};

/// `width`x`height` scaled down to at most `max_width` wide, aspect ratio kept.
fn fit(width: u32, height: u32, max_width: u32) -> (u32, u32) {
    if width <= max_width {
        return (width, height);
    }
    let h = (u64::from(height) * u64::from(max_width) + u64::from(width) / 2) / u64::from(width);
    (max_width, (h as u32).max(1))
}

/// FFmpeg's process-wide set-up, once: error strings for `ffmpeg::Error`'s Display, and
/// its log level. FFmpeg logs to stderr on its own, past `tracing`, and without saying
/// which camera; our errors name the failure and the caller names the camera, so only
/// FFmpeg's fatal messages are let through.
fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Cannot fail from FFmpeg 5 on: nothing to register but error strings.
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

/// Maps an FFmpeg error: bad data is `Corrupt` (naming `what`), the rest is FFmpeg's.
fn ff(what: &'static str) -> impl FnOnce(ffmpeg::Error) -> DecodeError {
    move |e| match e {
        ffmpeg::Error::InvalidData => DecodeError::Corrupt(format!("{what}: {e}")),
        source => DecodeError::Ffmpeg { what, source },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    H264,
    H265,
}

/// The codec and its decoder configuration record (the `avcC`/`hvcC` payload) from a
/// VisualSampleEntry (ISO/IEC 14496-12 §12.1.3): an 8-byte box header, 78 bytes of
/// fixed fields, then child boxes (`avcC`/`hvcC`, `pasp`, `btrt`, `colr`, …).
fn decoder_config(entry: &[u8]) -> Result<(Codec, &[u8]), DecodeError> {
    const CHILDREN_AT: usize = 8 + 78;
    let corrupt = |why: &str| DecodeError::Corrupt(format!("sample entry: {why}"));
    let (Some(size), Some(kind)) = (be_u32(entry), entry.get(4..8)) else {
        return Err(corrupt("shorter than a box header"));
    };
    let (codec, config_kind) = match kind {
        b"avc1" | b"avc3" => (Codec::H264, b"avcC"),
        b"hvc1" | b"hev1" => (Codec::H265, b"hvcC"),
        other => return Err(DecodeError::UnsupportedCodec(format!("`{}`", other.escape_ascii()))),
    };
    let Some(mut children) = entry.get(CHILDREN_AT..size as usize) else {
        return Err(corrupt(&format!("box size {size} does not fit its {} bytes", entry.len())));
    };
    while !children.is_empty() {
        let (Some(size), Some(kind)) = (be_u32(children), children.get(4..8)) else {
            return Err(corrupt("a child box is cut short"));
        };
        let size = size as usize;
        // Sizes 0 (to the end) and 1 (64-bit) are legal at file level, never seen here.
        if size < 8 || size > children.len() {
            return Err(corrupt(&format!(
                "child box `{}` has size {size} with {} bytes left",
                kind.escape_ascii(),
                children.len()
            )));
        }
        if kind == config_kind {
            return Ok((codec, &children[8..size]));
        }
        children = &children[size..];
    }
    Err(corrupt(&format!(
        "`{}` without its `{}` box",
        kind.escape_ascii(),
        config_kind.escape_ascii()
    )))
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// An open H.264/HEVC decoder and the parameters it was opened for.
struct VideoDecoder {
    params: Arc<StreamParams>,
    decoder: ffmpeg::decoder::Video,
}

impl VideoDecoder {
    fn open(params: &Arc<StreamParams>) -> Result<VideoDecoder, DecodeError> {
        init();
        let (codec, config) = decoder_config(&params.sample_entry)?;
        let id = match codec {
            Codec::H264 => codec::Id::H264,
            Codec::H265 => codec::Id::HEVC,
        };
        let Some(found) = ffmpeg::decoder::find(id) else {
            return Err(DecodeError::UnsupportedCodec(format!("{codec:?} (this FFmpeg has no decoder for it)")));
        };
        let mut context = codec::Context::new_with_codec(found);
        // One thread: frame threads only add latency and memory for a single picture,
        // and the snapshot task should not compete with ingest for every core.
        context.set_threading(threading::Config::count(1));
        set_extradata(&mut context, config)?;
        let decoder = context.decoder().open_as(found).and_then(|d| d.video()).map_err(ff("sample entry: the decoder refused it"))?;
        Ok(VideoDecoder {
            params: params.clone(),
            decoder,
        })
    }

    fn serves(&self, params: &Arc<StreamParams>) -> bool {
        Arc::ptr_eq(&self.params, params) || self.params.sample_entry == params.sample_entry
    }

    /// Decodes one access unit on its own: send it, signal the end of the stream so
    /// a reordering decoder gives up what it holds, drain, and reset for the next call.
    fn decode(&mut self, access_unit: &[u8]) -> Result<Picture, DecodeError> {
        let packet = ffmpeg::Packet::copy(access_unit);
        let mut failed = self.decoder.send_packet(&packet).err();
        if let Err(e) = self.decoder.send_eof() {
            failed.get_or_insert(e);
        }
        let mut picture = None;
        loop {
            let mut p = Picture::empty();
            match self.decoder.receive_frame(&mut p) {
                Ok(()) => {
                    picture.get_or_insert(p);
                }
                Err(ffmpeg::Error::Eof) => break,
                // EAGAIN cannot come after EOF was sent; anything else ends the drain.
                Err(e) => {
                    failed.get_or_insert(e);
                    break;
                }
            }
        }
        // Leaves draining mode; keeps the parameter sets from the extradata.
        self.decoder.flush();
        if let Some(e) = failed {
            return Err(ff("keyframe: the decoder rejected it")(e));
        }
        let picture = picture.ok_or(DecodeError::NoPicture)?;
        if picture.has_decode_errors() || picture.flags().contains(ffmpeg::frame::Flags::CORRUPT) {
            // A concealed picture (missing slices painted over) would look like a
            // covered or blurred camera to the tamper checks.
            return Err(DecodeError::Corrupt(format!(
                "keyframe: decoded with errors ({:?}); part of the picture would be made up",
                picture.decode_error_flags()
            )));
        }
        if picture.width() == 0 || picture.height() == 0 || picture.format() == Pixel::None {
            return Err(DecodeError::NoPicture);
        }
        Ok(picture)
    }
}

/// Hands `config` to the decoder as its extradata, in an FFmpeg allocation with the
/// zeroed padding its bitstream readers may read past the end (`AVCodecContext.extradata`).
fn set_extradata(context: &mut codec::Context, config: &[u8]) -> Result<(), DecodeError> {
    let padding = ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    let Ok(size) = i32::try_from(config.len()) else {
        return Err(DecodeError::Corrupt("sample entry: decoder configuration too large".into()));
    };
    // SAFETY: av_mallocz returns `len + padding` zeroed bytes or null (checked); we copy
    // `len` bytes into it. The context was just allocated and has no extradata yet; it
    // owns the buffer from here and avcodec_free_context frees it.
    unsafe {
        let buf = ffmpeg::ffi::av_mallocz(config.len() + padding).cast::<u8>();
        if buf.is_null() {
            return Err(DecodeError::Ffmpeg {
                what: "extradata allocation",
                source: ffmpeg::Error::Other { errno: libc::ENOMEM },
            });
        }
        std::ptr::copy_nonoverlapping(config.as_ptr(), buf, config.len());
        let ctx = context.as_mut_ptr();
        (*ctx).extradata = buf;
        (*ctx).extradata_size = size;
    }
    Ok(())
}

/// `picture` converted to `format` at `width`x`height` (area averaging when shrinking).
fn scale(picture: &Picture, format: Pixel, width: u32, height: u32) -> Result<Picture, DecodeError> {
    let mut scaler = scaling::Context::get(
        picture.format(),
        picture.width(),
        picture.height(),
        format,
        width,
        height,
        scaling::Flags::AREA,
    )
    .map_err(|source| DecodeError::Ffmpeg { what: "swscale set-up", source })?;
    let mut out = Picture::new(format, width, height);
    // Picture::new ignores a failed allocation; sws_scale must not write through null.
    if out.planes() == 0 {
        return Err(DecodeError::Ffmpeg {
            what: "picture allocation",
            source: ffmpeg::Error::Other { errno: libc::ENOMEM },
        });
    }
    scaler.run(picture, &mut out).map_err(|source| DecodeError::Ffmpeg { what: "swscale", source })?;
    Ok(out)
}

/// FFmpeg's `mjpeg` encoder opened for one picture size, at a fixed quantiser.
struct JpegEncoder {
    size: (u32, u32),
    encoder: ffmpeg::encoder::video::Encoder,
}

impl JpegEncoder {
    fn open(width: u32, height: u32) -> Result<JpegEncoder, DecodeError> {
        let Some(found) = ffmpeg::encoder::find(codec::Id::MJPEG) else {
            return Err(DecodeError::Ffmpeg { what: "mjpeg encoder", source: ffmpeg::Error::EncoderNotFound });
        };
        let mut encoder = codec::Context::new_with_codec(found)
            .encoder()
            .video()
            .map_err(|source| DecodeError::Ffmpeg { what: "mjpeg encoder", source })?;
        encoder.set_width(width);
        encoder.set_height(height);
        // YUVJ420P: full-range 4:2:0, what JFIF means (ITU-T T.871); swscale expands
        // the cameras' limited range into it.
        encoder.set_format(Pixel::YUVJ420P);
        encoder.set_time_base(ffmpeg::Rational::new(1, 25));
        // A sample aspect ratio makes FFmpeg write the JFIF APP0 segment. 1:1 because
        // cameras' main streams have square pixels (an anamorphic one would look
        // squeezed; none is expected here).
        encoder.set_aspect_ratio(ffmpeg::Rational::new(1, 1));
        encoder.set_threading(threading::Config::count(1));
        // A fixed quantiser, no rate control: each frame's `quality` sets it (below).
        encoder.set_flags(codec::Flags::QSCALE);
        encoder.set_global_quality(JPEG_QSCALE * ffmpeg::ffi::FF_QP2LAMBDA);
        let encoder = encoder.open_as(found).map_err(|source| DecodeError::Ffmpeg { what: "mjpeg encoder", source })?;
        Ok(JpegEncoder {
            size: (width, height),
            encoder,
        })
    }

    fn encode(&mut self, picture: &mut Picture) -> Result<Bytes, DecodeError> {
        // SAFETY: writes a plain field of a frame we own. With AV_CODEC_FLAG_QSCALE the
        // MPEG-video family takes its lambda from the frame, not from the context.
        unsafe {
            (*picture.as_mut_ptr()).quality = JPEG_QSCALE * ffmpeg::ffi::FF_QP2LAMBDA;
        }
        let err = |source| DecodeError::Ffmpeg { what: "JPEG encoding", source };
        self.encoder.send_frame(picture).map_err(err)?;
        let mut packet = ffmpeg::Packet::empty();
        self.encoder.receive_packet(&mut packet).map_err(err)?;
        match packet.data() {
            Some(jpeg) if !jpeg.is_empty() => Ok(Bytes::copy_from_slice(jpeg)),
            _ => Err(DecodeError::Ffmpeg { what: "JPEG encoding (empty output)", source: ffmpeg::Error::Bug }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use base64::Engine;
    use retina::codec::{Depacketizer, ParametersRef};

    /// camsim's clips (see scripts/make-clips.sh): Annex B, an AUD in front of every
    /// picture, parameter sets in front of every IDR, first picture an IDR.
    pub(crate) struct Clip {
        encoding: &'static str,
        data: &'static [u8],
        width: u32,
        height: u32,
    }

    pub(crate) const H264_1080P: Clip = Clip {
        encoding: "h264",
        data: include_bytes!("../../assets/clips/h264-1080p.h264"),
        width: 1920,
        height: 1080,
    };
    const H265_720P: Clip = Clip {
        encoding: "h265",
        data: include_bytes!("../../assets/clips/h265-720p.h265"),
        width: 1280,
        height: 720,
    };

    use crate::camsim::split_annex_b as nal_units;

    /// The clip's first picture as the hub carries it: MP4 form, with the sample entry
    /// retina builds from the SDP's parameter sets, exactly as ingest does.
    pub(crate) fn first_keyframe(clip: &Clip) -> Frame {
        let h264 = clip.encoding == "h264";
        let nal_type = |n: &[u8]| if h264 { n[0] & 0x1f } else { (n[0] >> 1) & 0x3f };
        let (aud, param_types): (u8, &[u8]) = if h264 { (9, &[7, 8]) } else { (35, &[32, 33, 34]) };
        let mut params: Vec<(u8, &[u8])> = Vec::new();
        let mut data = Vec::new();
        let mut auds = 0;
        for nal in nal_units(clip.data) {
            let t = nal_type(nal);
            if t == aud {
                auds += 1;
                if auds == 2 {
                    break;
                }
            } else if param_types.contains(&t) {
                params.push((t, nal));
            } else {
                data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                data.extend_from_slice(nal);
            }
        }
        let b64 = |t: u8| {
            let nal = params.iter().find(|(pt, _)| *pt == t).expect("parameter set").1;
            base64::engine::general_purpose::STANDARD.encode(nal)
        };
        let fmtp = if h264 {
            let sps = params.iter().find(|(t, _)| *t == 7).unwrap().1;
            format!(
                "packetization-mode=1;profile-level-id={:02X}{:02X}{:02X};sprop-parameter-sets={},{}",
                sps[1],
                sps[2],
                sps[3],
                b64(7),
                b64(8)
            )
        } else {
            format!("sprop-vps={};sprop-sps={};sprop-pps={}", b64(32), b64(33), b64(34))
        };
        let depacketizer = Depacketizer::new("video", clip.encoding, 90_000, None, Some(&fmtp)).unwrap();
        let Some(ParametersRef::Video(v)) = depacketizer.parameters() else {
            panic!("retina found no video parameters in {fmtp}");
        };
        assert_eq!(v.pixel_dimensions(), (clip.width, clip.height));
        Frame {
            ts_90k: 0,
            arrival_us: 0,
            is_key: true,
            data: Bytes::from(data),
            params: Arc::new(StreamParams {
                codec: v.rfc6381_codec().to_owned(),
                sample_entry: v.mp4_sample_entry().build().unwrap(),
                width: clip.width as u16,
                height: clip.height as u16,
            }),
        }
    }

    /// A keyframe with these parameters and this access unit.
    fn keyframe(params: &Arc<StreamParams>, data: impl Into<Bytes>) -> Frame {
        Frame { ts_90k: 0, arrival_us: 0, is_key: true, data: data.into(), params: params.clone() }
    }

    fn stddev(data: &[u8]) -> f64 {
        let n = data.len() as f64;
        let mean = data.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        (data.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt()
    }

    /// Codec, width and height of a JPEG as ffprobe (an independent decoder) sees it;
    /// None if ffprobe is not installed.
    fn ffprobe_jpeg(jpeg: &[u8]) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.jpg");
        std::fs::write(&path, jpeg).unwrap();
        let out = match std::process::Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0"])
            .arg(&path)
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("ffprobe not installed: skipping the independent JPEG check");
                return None;
            }
            Err(e) => panic!("ffprobe: {e}"),
        };
        assert!(out.status.success(), "ffprobe rejected the JPEG: {}", String::from_utf8_lossy(&out.stderr));
        Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    fn check_snapshot(clip: &Clip, jpeg_size: (u32, u32), luma_size: (u32, u32)) {
        let frame = first_keyframe(clip);
        let decoded = decode_keyframe(&frame).unwrap();
        assert_eq!((decoded.width, decoded.height), jpeg_size);
        assert_eq!(&decoded.jpeg[..3], &[0xff, 0xd8, 0xff], "JPEG SOI marker");
        assert_eq!(&decoded.jpeg[decoded.jpeg.len() - 2..], &[0xff, 0xd9], "JPEG EOI marker");
        if let Some(probed) = ffprobe_jpeg(&decoded.jpeg) {
            assert_eq!(probed, format!("mjpeg,{},{}", jpeg_size.0, jpeg_size.1));
        }
        let luma = &decoded.luma;
        assert_eq!((luma.width, luma.height), luma_size);
        assert_eq!(luma.data.len(), (luma.width * luma.height) as usize);
        // testsrc2's colour bars and gradients: far from a uniform (covered) picture.
        let sd = stddev(&luma.data);
        assert!(sd > 10.0, "luma stddev {sd:.1}: the picture looks uniform");
    }

    #[test]
    fn h264_1080p_keyframe_becomes_a_1280_wide_jpeg_and_a_160x90_luma_picture() {
        check_snapshot(&H264_1080P, (1280, 720), (160, 90));
    }

    #[test]
    fn h265_720p_keyframe_becomes_a_full_size_jpeg_and_a_160x90_luma_picture() {
        check_snapshot(&H265_720P, (1280, 720), (160, 90));
    }

    #[test]
    fn a_reused_decoder_follows_a_codec_change_and_gives_the_same_pictures() {
        let h264 = first_keyframe(&H264_1080P);
        let h265 = first_keyframe(&H265_720P);
        let mut decoder = KeyframeDecoder::new();
        let first = decoder.decode(&h264).unwrap();
        let again = decoder.decode(&h264).unwrap();
        assert_eq!(first.luma, again.luma);
        assert_eq!(first.jpeg, again.jpeg);
        let other = decoder.decode(&h265).unwrap();
        assert_eq!(other.luma, decode_keyframe(&h265).unwrap().luma);
        assert_eq!(decoder.decode(&h264).unwrap().luma, first.luma);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = first_keyframe(&H264_1080P);
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        };
        let mut decoder = KeyframeDecoder::new();
        // Random bytes: the length prefixes are nonsense.
        assert!(decoder.decode(&keyframe(&good.params, noise(100_000))).is_err());
        // Well-framed NAL units with random payloads (an IDR header, then noise).
        let mut framed = Vec::new();
        for _ in 0..8 {
            let mut nal = noise(4_000);
            nal[0] = 0x65;
            framed.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            framed.extend_from_slice(&nal);
        }
        assert!(decoder.decode(&keyframe(&good.params, framed)).is_err());
        assert!(matches!(decoder.decode(&keyframe(&good.params, Bytes::new())), Err(DecodeError::Corrupt(_))));
        // The decoder is still good afterwards.
        decoder.decode(&good).unwrap();

        let with_entry = |sample_entry: Vec<u8>| {
            let params = StreamParams { sample_entry, codec: good.params.codec.clone(), width: 1920, height: 1080 };
            keyframe(&Arc::new(params), good.data.clone())
        };
        let mut entry = good.params.sample_entry.clone();
        entry[4..8].copy_from_slice(b"mp4v");
        assert!(matches!(decode_keyframe(&with_entry(entry)), Err(DecodeError::UnsupportedCodec(_))));
        for cut in [0, 7, 50, 90, good.params.sample_entry.len() - 3] {
            let entry = good.params.sample_entry[..cut].to_vec();
            assert!(matches!(decode_keyframe(&with_entry(entry)), Err(DecodeError::Corrupt(_))), "cut at {cut}");
        }
        let entry = noise(300);
        assert!(decode_keyframe(&with_entry(entry)).is_err());
        let p_frame = Frame { is_key: false, ..keyframe(&good.params, good.data.clone()) };
        assert!(matches!(decode_keyframe(&p_frame), Err(DecodeError::NotKeyframe)));
    }

    /// The keyframe cut at half its size, with the length prefix of the NAL unit that
    /// is cut rewritten to match (a slice that simply stops), unless `lie`: then the
    /// prefix still promises the whole NAL unit.
    fn cut_in_half(frame: &Frame, lie: bool) -> Frame {
        let (data, half) = (&frame.data[..], frame.data.len() / 2);
        let mut kept = Vec::new();
        let mut at = 0;
        while at < half {
            let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let keep = len.min(half - at);
            let prefix = if lie { len } else { keep };
            kept.extend_from_slice(&(prefix as u32).to_be_bytes());
            kept.extend_from_slice(&data[at + 4..at + 4 + keep]);
            at += 4 + len;
        }
        keyframe(&frame.params, kept)
    }

    #[test]
    fn a_truncated_keyframe_is_corrupt() {
        for clip in [&H264_1080P, &H265_720P] {
            let good = first_keyframe(clip);
            let err = decode_keyframe(&cut_in_half(&good, true)).unwrap_err();
            assert!(matches!(err, DecodeError::Corrupt(_)), "{}: {err}", clip.encoding);
        }
        // H.264: the decoder conceals the missing half of the slice and says so.
        let err = decode_keyframe(&cut_in_half(&first_keyframe(&H264_1080P), false)).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(ref m) if m.contains("CONCEALMENT")), "{err}");
    }

    /// FFmpeg 5.1's HEVC decoder does not report a slice that stops early (no
    /// decode_error_flags), so this comes out as a picture, partly made up. Here only
    /// to pin that down: no panic, and the right size.
    #[test]
    fn a_cleanly_cut_h265_keyframe_still_decodes_without_panicking() {
        match decode_keyframe(&cut_in_half(&first_keyframe(&H265_720P), false)) {
            Ok(d) => assert_eq!((d.width, d.height, d.luma.width, d.luma.height), (1280, 720, 160, 90)),
            Err(e) => assert!(matches!(e, DecodeError::Corrupt(_)), "{e}"),
        }
    }

    /// Prints what one snapshot costs (no assertion: a figure to read, not a timed
    /// test). Run it on an idle machine in a release build:
    /// `cargo test --release --lib snapshot::decode -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement; run in release with --ignored --nocapture"]
    fn decode_cost_per_snapshot() {
        fn cpu_ms() -> f64 {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime writes the timespec we pass.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
        }
        const RUNS: u32 = 30;
        for clip in [&H264_1080P, &H265_720P] {
            let frame = first_keyframe(clip);
            let mut reused = KeyframeDecoder::new();
            let out = reused.decode(&frame).unwrap();
            let t = cpu_ms();
            for _ in 0..RUNS {
                reused.decode(&frame).unwrap();
            }
            let warm = (cpu_ms() - t) / f64::from(RUNS);
            let t = cpu_ms();
            for _ in 0..RUNS {
                decode_keyframe(&frame).unwrap();
            }
            let cold = (cpu_ms() - t) / f64::from(RUNS);
            let mut video = VideoDecoder::open(&frame.params).unwrap();
            let t = cpu_ms();
            for _ in 0..RUNS {
                video.decode(&frame.data).unwrap();
            }
            let decode_only = (cpu_ms() - t) / f64::from(RUNS);
            println!(
                "{} {}x{} keyframe of {} kB → {}x{} JPEG of {} kB + {}x{} luma: \
                 {warm:.1} ms CPU with a kept decoder (of which decoding {decode_only:.1} ms), \
                 {cold:.1} ms opening one each time",
                clip.encoding,
                clip.width,
                clip.height,
                frame.data.len() / 1000,
                out.width,
                out.height,
                out.jpeg.len() / 1000,
                out.luma.width,
                out.luma.height,
            );
        }
    }
}
