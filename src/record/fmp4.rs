//! Fragmented MP4 (ISO/IEC 14496-12) for recorded segments: the writer the recorder
//! uses, and the parser that spool recovery and `cradle reindex` use.
//!
//! A segment is one file that plays on its own: `ftyp` + `moov` (one video track with
//! empty sample tables, `mvex`, and Cradle's own metadata in `moov/udta/crdl`) followed
//! by fragments, each a `moof` + `mdat` holding one GOP. The recorder writes the init
//! part when it opens a segment and then appends and fsyncs one fragment per GOP.
//! Because every fragment is self-describing (default-base-is-moof, 64-bit `tfdt`), a
//! file cut after any complete fragment is still a valid, playable MP4, so crash
//! recovery is a truncation at [`ParsedSegment::complete_len`]; and because the
//! metadata travels inside the file, the index can be rebuilt from the objects alone.
//!
//! Section numbers refer to ISO/IEC 14496-12:2015 (5th edition).

/// Both `mvhd` and `mdhd` tick at the RTP clock rate of H.264/H.265, so frame durations
/// and decode times go into the file without conversion.
pub const TIMESCALE: u32 = 90_000;
const TRACK_ID: u32 = 1;

/// Codec parameters of the single video track. `sample_entry` is a complete
/// VisualSampleEntry box (`avc1` with `avcC`, or `hvc1` with `hvcC`) exactly as produced
/// by retina's `VideoParameters::mp4_sample_entry().build()`.
pub struct TrackInfo<'a> {
    pub sample_entry: &'a [u8],
    pub width: u16,
    pub height: u16,
}

/// One access unit of a fragment: its 90 kHz duration, its size in bytes (4-byte
/// length-prefixed NAL units), and whether it is a keyframe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub duration: u32,
    pub size: u32,
    pub is_sync: bool,
}

/// A complete fragment (`moof` + `mdat`) found by [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentInfo {
    /// File offset of the `moof`.
    pub offset: u64,
    /// Bytes of `moof` + `mdat`.
    pub len: u64,
    /// 90 kHz, from `tfdt`.
    pub base_decode_time: u64,
    /// 90 kHz, the sum of the sample durations.
    pub duration: u64,
    pub samples: u32,
    pub first_is_sync: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSegment {
    /// Bytes of ftyp + moov (up to the end of `moov`).
    pub init_len: u64,
    /// Type of the sample entry, `avc1` or `hvc1` for Cradle's files.
    pub sample_entry_type: [u8; 4],
    /// From the sample entry.
    pub width: u16,
    pub height: u16,
    /// The payload of moov/udta/crdl.
    pub metadata: Option<Vec<u8>>,
    /// Complete fragments, in file order.
    pub fragments: Vec<FragmentInfo>,
    /// End of the last complete fragment (== `init_len` if none); anything after it is a
    /// torn tail that recovery cuts off.
    pub complete_len: u64,
    /// Sum of fragment durations, 90 kHz.
    pub duration: u64,
    /// Sum of sample counts.
    pub frames: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not an MP4 file (no ftyp box at the start)")]
    NotMp4,
    #[error("incomplete MP4 header (ftyp/moov truncated)")]
    TruncatedInit,
    #[error("malformed MP4 at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: &'static str },
}

// ---------------------------------------------------------------------------------------
// Writing

/// Writes a box (§4.2): reserves the 32-bit size, runs `body`, then patches the size in.
/// Only `mdat` can outgrow 32 bits, and it is written by hand.
pub(crate) fn bx(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - start).expect("box other than mdat over 4 GiB");
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// The version and 24-bit flags that start a FullBox (§4.2).
pub(crate) fn full(out: &mut Vec<u8>, version: u8, flags: u32) {
    out.push(version);
    out.extend_from_slice(&flags.to_be_bytes()[1..]);
}

pub(crate) fn u16be(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub(crate) fn u32be(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub(crate) fn u64be(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// The unity transformation matrix, 16.16 except the last column's 2.30 (§8.2.2.3).
pub(crate) const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// `language` of `mdhd`: "und" as three 5-bit letters offset from 0x60 (§8.4.2.3).
pub(crate) const LANGUAGE_UND: u16 = ((b'u' - 0x60) as u16) << 10 | ((b'n' - 0x60) as u16) << 5 | (b'd' - 0x60) as u16;

// tfhd flags (§8.8.7.1).
const TFHD_BASE_DATA_OFFSET: u32 = 0x00_0001;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x00_0002;
const TFHD_DEFAULT_DURATION: u32 = 0x00_0008;
const TFHD_DEFAULT_SIZE: u32 = 0x00_0010;
const TFHD_DEFAULT_FLAGS: u32 = 0x00_0020;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;

// trun flags (§8.8.8.1).
const TRUN_DATA_OFFSET: u32 = 0x00_0001;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x00_0004;
const TRUN_DURATION: u32 = 0x00_0100;
const TRUN_SIZE: u32 = 0x00_0200;
const TRUN_FLAGS: u32 = 0x00_0400;
const TRUN_CTS_OFFSET: u32 = 0x00_0800;

/// sample_flags (§8.8.3.1): a keyframe depends on no other sample (sample_depends_on=2);
/// any other frame depends on earlier ones (=1) and is sample_is_non_sync_sample, which
/// is what players look at when seeking.
const SYNC_SAMPLE_FLAGS: u32 = 2 << 24;
const NON_SYNC_SAMPLE_FLAGS: u32 = 1 << 24 | SAMPLE_IS_NON_SYNC;
const SAMPLE_IS_NON_SYNC: u32 = 1 << 16;

/// §8.4.3 hdlr: a video track (shared by the segments' and the exports' `moov`).
pub(crate) fn video_handler(o: &mut Vec<u8>) {
    bx(o, b"hdlr", |o| {
        full(o, 0, 0);
        u32be(o, 0); // pre_defined
        o.extend_from_slice(b"vide");
        o.extend_from_slice(&[0; 12]); // reserved
        o.extend_from_slice(b"Cradle video\0");
    });
}

/// The start of a video `minf`: §12.1.2 vmhd (flags must be 1), then §8.7.1 dinf /
/// §8.7.2 dref with one `url ` of flag 1, "media data is in this file".
pub(crate) fn video_media_header(o: &mut Vec<u8>) {
    bx(o, b"vmhd", |o| {
        full(o, 0, 1);
        o.extend_from_slice(&[0; 8]); // graphicsmode + opcolor
    });
    bx(o, b"dinf", |o| {
        bx(o, b"dref", |o| {
            full(o, 0, 0);
            u32be(o, 1); // entry_count
            bx(o, b"url ", |o| full(o, 0, 1));
        });
    });
}

/// Appends `ftyp` + `moov` for one video track. `metadata` goes into moov/udta/crdl, an
/// unknown user-data box that players skip.
pub fn write_init(track: &TrackInfo<'_>, metadata: &[u8], out: &mut Vec<u8>) {
    out.reserve(700 + track.sample_entry.len() + metadata.len());
    // §4.3 ftyp. iso6 is the brand that covers tfdt v1 and default-base-is-moof; isom and
    // mp41 keep older players that look only for those happy; avc1/hvc1 name the codec.
    let codec_brand: Option<&[u8; 4]> = match track.sample_entry.get(4..8) {
        Some(b"avc1") | Some(b"avc3") => Some(b"avc1"),
        Some(b"hvc1") | Some(b"hev1") => Some(b"hvc1"),
        _ => None,
    };
    bx(out, b"ftyp", |o| {
        o.extend_from_slice(b"iso6");
        u32be(o, 0); // minor_version
        for brand in [b"iso6", b"iso5", b"isom", b"mp41"].into_iter().chain(codec_brand) {
            o.extend_from_slice(brand);
        }
    });
    // §8.2.1 moov.
    bx(out, b"moov", |o| {
        // §8.2.2 mvhd. Duration 0: the movie's samples are all in fragments (§8.8.1).
        bx(o, b"mvhd", |o| {
            full(o, 0, 0);
            u32be(o, 0); // creation_time
            u32be(o, 0); // modification_time
            u32be(o, TIMESCALE);
            u32be(o, 0); // duration
            u32be(o, 0x0001_0000); // rate 1.0
            u16be(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 2 + 8]); // reserved
            MATRIX.iter().for_each(|&m| u32be(o, m));
            o.extend_from_slice(&[0; 24]); // pre_defined
            u32be(o, TRACK_ID + 1); // next_track_ID
        });
        // §8.3.1 trak.
        bx(o, b"trak", |o| {
            // §8.3.2 tkhd. Flags: track_enabled | track_in_movie; a track without them
            // is ignored by some players.
            bx(o, b"tkhd", |o| {
                full(o, 0, 0x3);
                u32be(o, 0); // creation_time
                u32be(o, 0); // modification_time
                u32be(o, TRACK_ID);
                u32be(o, 0); // reserved
                u32be(o, 0); // duration
                o.extend_from_slice(&[0; 8]); // reserved
                u16be(o, 0); // layer
                u16be(o, 0); // alternate_group
                u16be(o, 0); // volume: 0 for a visual track
                u16be(o, 0); // reserved
                MATRIX.iter().for_each(|&m| u32be(o, m));
                u32be(o, u32::from(track.width) << 16); // 16.16 fixed point
                u32be(o, u32::from(track.height) << 16);
            });
            // §8.4.1 mdia.
            bx(o, b"mdia", |o| {
                // §8.4.2 mdhd.
                bx(o, b"mdhd", |o| {
                    full(o, 0, 0);
                    u32be(o, 0); // creation_time
                    u32be(o, 0); // modification_time
                    u32be(o, TIMESCALE);
                    u32be(o, 0); // duration
                    u16be(o, LANGUAGE_UND); // pad bit 0 + language
                    u16be(o, 0); // pre_defined
                });
                video_handler(o);
                // §8.4.4 minf.
                bx(o, b"minf", |o| {
                    video_media_header(o);
                    // §8.5.1 stbl: the sample description plus the mandatory tables,
                    // empty because every sample lives in a fragment (§8.8.1).
                    bx(o, b"stbl", |o| {
                        // §8.5.2 stsd with the caller's VisualSampleEntry (§12.1.3).
                        bx(o, b"stsd", |o| {
                            full(o, 0, 0);
                            u32be(o, 1); // entry_count
                            o.extend_from_slice(track.sample_entry);
                        });
                        // §8.6.1.2 stts, §8.7.4 stsc, §8.7.5 stco: entry_count 0.
                        for kind in [b"stts", b"stsc", b"stco"] {
                            bx(o, kind, |o| {
                                full(o, 0, 0);
                                u32be(o, 0);
                            });
                        }
                        // §8.7.3 stsz: sample_size 0, sample_count 0.
                        bx(o, b"stsz", |o| {
                            full(o, 0, 0);
                            u32be(o, 0);
                            u32be(o, 0);
                        });
                    });
                });
            });
        });
        // §8.8.1 mvex: announces that the movie continues in fragments.
        bx(o, b"mvex", |o| {
            // §8.8.3 trex. Defaults are unused: every trun carries duration, size and
            // flags per sample.
            bx(o, b"trex", |o| {
                full(o, 0, 0);
                u32be(o, TRACK_ID);
                u32be(o, 1); // default_sample_description_index
                u32be(o, 0); // default_sample_duration
                u32be(o, 0); // default_sample_size
                u32be(o, 0); // default_sample_flags
            });
        });
        // §8.10.1 udta: user data, where unknown boxes are ignored by players.
        bx(o, b"udta", |o| bx(o, b"crdl", |o| o.extend_from_slice(metadata)));
    });
}

/// Appends `moof` + the `mdat` header for `samples`; the caller writes the sample bytes
/// (concatenated in order, `sum(size)` bytes) right after.
///
/// `sequence_number` starts at 1 in each file; `base_decode_time` is the 90 kHz decode
/// time of the first sample since the segment start (the sum of earlier durations).
pub fn write_fragment_header(sequence_number: u32, base_decode_time: u64, samples: &[Sample], out: &mut Vec<u8>) {
    // moof 8 + mfhd 16 + traf 8 + tfhd 16 + tfdt 20 + trun 20 + 12/sample, mdat ≤ 16.
    out.reserve(104 + 12 * samples.len());
    let moof_start = out.len();
    let mut data_offset_at = 0;
    // §8.8.4 moof.
    bx(out, b"moof", |o| {
        // §8.8.5 mfhd.
        bx(o, b"mfhd", |o| {
            full(o, 0, 0);
            u32be(o, sequence_number);
        });
        // §8.8.6 traf.
        bx(o, b"traf", |o| {
            // §8.8.7 tfhd. default-base-is-moof makes trun's data_offset relative to this
            // moof, so a fragment means the same wherever it sits in a file; MSE
            // (browsers) requires it or an explicit base offset.
            bx(o, b"tfhd", |o| {
                full(o, 0, TFHD_DEFAULT_BASE_IS_MOOF);
                u32be(o, TRACK_ID);
            });
            // §8.8.12 tfdt, version 1: 64 bits, as 32 bits of 90 kHz wrap after 13 h.
            bx(o, b"tfdt", |o| {
                full(o, 1, 0);
                u64be(o, base_decode_time);
            });
            // §8.8.8 trun with data_offset and per-sample duration, size and flags.
            bx(o, b"trun", |o| {
                full(o, 0, TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS);
                u32be(o, samples.len() as u32);
                data_offset_at = o.len();
                u32be(o, 0); // patched below, once the moof's size is known
                for s in samples {
                    u32be(o, s.duration);
                    u32be(o, s.size);
                    u32be(o, if s.is_sync { SYNC_SAMPLE_FLAGS } else { NON_SYNC_SAMPLE_FLAGS });
                }
            });
        });
    });
    // §8.1.1 mdat, with a 64-bit largesize (§4.2) only when the 32-bit size cannot hold it.
    let payload: u64 = samples.iter().map(|s| u64::from(s.size)).sum();
    let mdat_header_len = if payload + 8 > u64::from(u32::MAX) { 16 } else { 8 };
    let data_offset = (out.len() - moof_start + mdat_header_len) as u32;
    out[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    if mdat_header_len == 8 {
        u32be(out, (payload + 8) as u32);
        out.extend_from_slice(b"mdat");
    } else {
        u32be(out, 1);
        out.extend_from_slice(b"mdat");
        u64be(out, payload + 16);
    }
}

// ---------------------------------------------------------------------------------------
// Parsing
//
// Everything below reads untrusted bytes (a torn spool file, any object in the bucket):
// every read is bounds-checked and all offset arithmetic is checked, so no input panics.

/// Big-endian reads at `at`, `None` past the end.
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}
fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// A box header (§4.2).
struct Header {
    kind: [u8; 4],
    /// 8, or 16 with a largesize.
    header_len: usize,
    /// The whole box, header included; `None` for size 0 ("extends to the end").
    size: Option<u64>,
}

/// Reads the box header at `pos`: `Ok(None)` if `data` ends before it does, `Err` if the
/// size is impossible.
fn header(data: &[u8], pos: usize) -> Result<Option<Header>, &'static str> {
    let Some(size32) = be32(data, pos) else { return Ok(None) };
    let Some(kind) = data.get(pos + 4..pos + 8) else { return Ok(None) };
    let kind: [u8; 4] = kind.try_into().unwrap_or_default();
    let (header_len, size) = match size32 {
        0 => (8, None),
        1 => match be64(data, pos + 8) {
            None => return Ok(None),
            Some(large) if large < 16 => return Err("box largesize smaller than its header"),
            Some(large) => (16, Some(large)),
        },
        2..=7 => return Err("box size smaller than its header"),
        n => (8, Some(u64::from(n))),
    };
    Ok(Some(Header { kind, header_len, size }))
}

/// A box inside a container: its type, where it and its body start in the file, and
/// its body.
struct Child<'a> {
    kind: [u8; 4],
    offset: u64,
    body_offset: u64,
    body: &'a [u8],
}

/// The children of a container whose body starts at file offset `base`. Children must
/// tile the body exactly; size 0 ("to the end of the file", §4.2) is for top-level
/// boxes only. The iterator ends after the first error.
fn children(body: &[u8], base: u64) -> impl Iterator<Item = Result<Child<'_>, ParseError>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= body.len() {
            return None;
        }
        let offset = base + pos as u64;
        let next = match header(body, pos) {
            Ok(Some(Header { size: Some(len), .. })) if len > (body.len() - pos) as u64 => {
                Err("box runs past its container")
            }
            Ok(Some(Header { kind, header_len, size: Some(len) })) => Ok((kind, header_len, len as usize)),
            Ok(Some(Header { size: None, .. })) => Err("box of size 0 inside a container"),
            Ok(None) => Err("box header runs past its container"),
            Err(reason) => Err(reason),
        };
        match next {
            Ok((kind, header_len, len)) => {
                let body_offset = offset + header_len as u64;
                let child = Child { kind, offset, body_offset, body: &body[pos + header_len..pos + len] };
                pos += len;
                Some(Ok(child))
            }
            Err(reason) => {
                pos = body.len();
                Some(Err(ParseError::Malformed { offset, reason }))
            }
        }
    })
}

/// The only child of type `kind`: `Ok(None)` if there is none, `Err` if several.
fn only<'a>(body: &'a [u8], base: u64, kind: &[u8; 4]) -> Result<Option<Child<'a>>, ParseError> {
    let mut found = None;
    for c in children(body, base) {
        let c = c?;
        if &c.kind == kind {
            if found.is_some() {
                return Err(ParseError::Malformed { offset: c.offset, reason: "duplicate box" });
            }
            found = Some(c);
        }
    }
    Ok(found)
}

/// Like [`only`], but the box must be there.
fn need<'a>(parent: &Child<'a>, kind: &[u8; 4], reason: &'static str) -> Result<Child<'a>, ParseError> {
    only(parent.body, parent.body_offset, kind)?.ok_or(ParseError::Malformed { offset: parent.offset, reason })
}

/// What the init part says about the one track.
struct Init {
    track_id: u32,
    /// trex defaults (§8.8.3), for fragments whose tfhd and trun leave fields out.
    default_duration: u32,
    default_size: u32,
    default_flags: u32,
    sample_entry_type: [u8; 4],
    width: u16,
    height: u16,
    metadata: Option<Vec<u8>>,
}

/// Parses a segment file held in memory.
///
/// The init part (`ftyp` + `moov`) must be complete and describe one fragmented video
/// track at 90 kHz, else this is an error. After it, fragments are taken in order while
/// each is complete and consistent; the first one that is not (a torn write, zeros, any
/// other box) ends the segment at `complete_len` without error.
pub fn parse(data: &[u8]) -> Result<ParsedSegment, ParseError> {
    let malformed = |offset: usize, reason| ParseError::Malformed { offset: offset as u64, reason };

    // §4.3: a file starts with ftyp.
    let ftyp = header(data, 0).map_err(|_| ParseError::NotMp4)?.ok_or(ParseError::TruncatedInit)?;
    if &ftyp.kind != b"ftyp" {
        return Err(ParseError::NotMp4);
    }
    let ftyp_len = ftyp.size.ok_or(malformed(0, "ftyp without a size"))?;
    if ftyp_len > data.len() as u64 {
        return Err(ParseError::TruncatedInit);
    }

    // Then moov; other top-level boxes (free, skip, …) may precede it, fragments may not.
    let mut pos = ftyp_len as usize;
    let init = loop {
        let h = header(data, pos).map_err(|r| malformed(pos, r))?.ok_or(ParseError::TruncatedInit)?;
        let len = h.size.ok_or(malformed(pos, "top-level box without a size before moov"))?;
        if len > (data.len() - pos) as u64 {
            return Err(ParseError::TruncatedInit);
        }
        let end = pos + len as usize;
        match &h.kind {
            b"moov" => {
                let moov = Child {
                    kind: h.kind,
                    offset: pos as u64,
                    body_offset: (pos + h.header_len) as u64,
                    body: &data[pos + h.header_len..end],
                };
                pos = end;
                break parse_moov(&moov)?;
            }
            b"moof" | b"mdat" => return Err(malformed(pos, "media before moov")),
            _ => pos = end,
        }
    };
    let init_len = pos as u64;

    let mut fragments = Vec::new();
    let mut pos = init_len;
    let (mut duration, mut frames) = (0u64, 0u64);
    while let Some(f) = fragment_at(data, pos, &init) {
        let (Some(d), Some(n)) = (duration.checked_add(f.duration), frames.checked_add(u64::from(f.samples))) else {
            break;
        };
        duration = d;
        frames = n;
        pos = f.offset + f.len;
        fragments.push(f);
    }
    Ok(ParsedSegment {
        init_len,
        sample_entry_type: init.sample_entry_type,
        width: init.width,
        height: init.height,
        metadata: init.metadata,
        fragments,
        complete_len: pos,
        duration,
        frames,
    })
}

/// Reads the one video track, its fragment defaults and the Cradle metadata from moov.
fn parse_moov(moov: &Child<'_>) -> Result<Init, ParseError> {
    let bad = |c: &Child<'_>, reason| ParseError::Malformed { offset: c.offset, reason };

    let trak = need(moov, b"trak", "moov has no single trak")?;
    // §8.3.2 tkhd: track_ID follows creation and modification times (32 or 64 bits).
    let tkhd = need(&trak, b"tkhd", "trak without tkhd")?;
    let id = match tkhd.body.first() {
        Some(0) => be32(tkhd.body, 12),
        Some(1) => be32(tkhd.body, 20),
        _ => None,
    }
    .ok_or(bad(&tkhd, "unreadable tkhd"))?;

    let mdia = need(&trak, b"mdia", "trak without mdia")?;
    // §8.4.2 mdhd: every duration this module reports is in 90 kHz ticks.
    let mdhd = need(&mdia, b"mdhd", "mdia without mdhd")?;
    let timescale = match mdhd.body.first() {
        Some(0) => be32(mdhd.body, 12),
        Some(1) => be32(mdhd.body, 20),
        _ => None,
    };
    if timescale != Some(TIMESCALE) {
        return Err(bad(&mdhd, "track timescale is not 90000"));
    }
    // §8.4.3 hdlr: handler_type after version/flags and pre_defined.
    let hdlr = need(&mdia, b"hdlr", "mdia without hdlr")?;
    if hdlr.body.get(8..12) != Some(b"vide") {
        return Err(bad(&hdlr, "track is not video"));
    }
    let minf = need(&mdia, b"minf", "mdia without minf")?;
    let stbl = need(&minf, b"stbl", "minf without stbl")?;
    let stsd = need(&stbl, b"stsd", "stbl without stsd")?;
    // §8.5.2 stsd: version/flags, entry_count, then the entries; ours has one.
    if be32(stsd.body, 4).unwrap_or(0) == 0 {
        return Err(bad(&stsd, "stsd without entries"));
    }
    let entry = children(stsd.body.get(8..).unwrap_or_default(), stsd.body_offset + 8)
        .next()
        .ok_or(bad(&stsd, "stsd without entries"))??;
    // §8.5.2.2 SampleEntry (6 reserved + data_reference_index) and §12.1.3.2
    // VisualSampleEntry (16 bytes pre_defined/reserved), then width and height.
    let (Some(width), Some(height)) = (be16(entry.body, 24), be16(entry.body, 26)) else {
        return Err(bad(&entry, "sample entry too short for a VisualSampleEntry"));
    };

    // §8.8.1 mvex / §8.8.3 trex: without them the file is not fragmented.
    let mvex = need(moov, b"mvex", "moov without mvex: not a fragmented MP4")?;
    let mut trex = None;
    for c in children(mvex.body, mvex.body_offset) {
        let c = c?;
        if &c.kind == b"trex" && be32(c.body, 4) == Some(id) {
            trex = Some(c);
        }
    }
    let trex = trex.ok_or(bad(&mvex, "no trex for the track"))?;
    let (Some(default_duration), Some(default_size), Some(default_flags)) =
        (be32(trex.body, 12), be32(trex.body, 16), be32(trex.body, 20))
    else {
        return Err(bad(&trex, "trex too short"));
    };

    // §8.10.1 udta: Cradle's metadata, if this file carries it.
    let metadata = match only(moov.body, moov.body_offset, b"udta")? {
        Some(udta) => only(udta.body, udta.body_offset, b"crdl")?.map(|c| c.body.to_vec()),
        None => None,
    };
    Ok(Init {
        track_id: id,
        default_duration,
        default_size,
        default_flags,
        sample_entry_type: entry.kind,
        width,
        height,
        metadata,
    })
}

/// The fragment (`moof` + `mdat`) at file offset `pos`, if it is complete and consistent.
fn fragment_at(data: &[u8], pos: u64, init: &Init) -> Option<FragmentInfo> {
    let start = usize::try_from(pos).ok()?;
    let moof = header(data, start).ok()??;
    if &moof.kind != b"moof" {
        return None;
    }
    let moof_len = usize::try_from(moof.size?).ok()?;
    let moof_end = start.checked_add(moof_len)?;
    let moof_body = data.get(start + moof.header_len..moof_end)?;

    // §8.1.1 mdat right after. Size 0 ("to the end of the file") would make any torn
    // tail look complete, so only an explicit size counts.
    let mdat = header(data, moof_end).ok()??;
    if &mdat.kind != b"mdat" {
        return None;
    }
    let mdat_len = mdat.size?;
    let payload_start = moof_end + mdat.header_len;
    let payload_len = mdat_len - mdat.header_len as u64;
    let end = (moof_end as u64).checked_add(mdat_len)?;
    if end > data.len() as u64 {
        return None; // torn: the mdat payload is not all there
    }

    let m = parse_moof(moof_body, pos, init)?;
    if m.data_start != payload_start as u64 || m.payload != payload_len {
        return None;
    }
    Some(FragmentInfo {
        offset: pos,
        len: end - pos,
        base_decode_time: m.base_decode_time,
        duration: m.duration,
        samples: m.samples,
        first_is_sync: m.first_is_sync,
    })
}

struct MoofInfo {
    base_decode_time: u64,
    duration: u64,
    samples: u32,
    first_is_sync: bool,
    /// File offset where the trun's sample data begins.
    data_start: u64,
    /// Sum of the sample sizes.
    payload: u64,
}

/// Reads a moof's single traf with one trun for `track`, resolving each field through
/// trun → tfhd → trex defaults as §8.8.7 and §8.8.8 lay out. Anything else (several
/// trafs or truns, another track, no tfdt, no data_offset) is not a fragment this
/// module wrote and ends the segment.
fn parse_moof(body: &[u8], moof_pos: u64, track: &Init) -> Option<MoofInfo> {
    let mut mfhd = false;
    let mut traf = None;
    for c in children(body, 0) {
        let c = c.ok()?;
        match &c.kind {
            b"mfhd" => mfhd = c.body.len() >= 8, // §8.8.5: version/flags + sequence_number
            b"traf" if traf.is_none() => traf = Some(c.body),
            b"traf" => return None,
            _ => {}
        }
    }
    let traf = traf?;
    if !mfhd {
        return None;
    }
    let (mut tfhd, mut tfdt, mut trun) = (None, None, None);
    for c in children(traf, 0) {
        let c = c.ok()?;
        let slot = match &c.kind {
            b"tfhd" => &mut tfhd,
            b"tfdt" => &mut tfdt,
            b"trun" => &mut trun,
            _ => continue,
        };
        if slot.replace(c.body).is_some() {
            return None;
        }
    }
    let (tfhd, tfdt, trun) = (tfhd?, tfdt?, trun?);

    // §8.8.7 tfhd: the optional fields follow track_ID in flag order.
    let tf_flags = be32(tfhd, 0)? & 0x00ff_ffff;
    if be32(tfhd, 4)? != track.track_id {
        return None;
    }
    let mut at = 8;
    let mut base = moof_pos; // default-base-is-moof, and the rule for a moof's first traf
    if tf_flags & TFHD_BASE_DATA_OFFSET != 0 {
        base = be64(tfhd, at)?;
        at += 8;
    }
    let mut take = |flag: u32| -> Option<Option<u32>> {
        if tf_flags & flag == 0 {
            return Some(None);
        }
        let v = be32(tfhd, at)?;
        at += 4;
        Some(Some(v))
    };
    take(TFHD_SAMPLE_DESCRIPTION_INDEX)?;
    let default_duration = take(TFHD_DEFAULT_DURATION)?.unwrap_or(track.default_duration);
    let default_size = take(TFHD_DEFAULT_SIZE)?.unwrap_or(track.default_size);
    let default_flags = take(TFHD_DEFAULT_FLAGS)?.unwrap_or(track.default_flags);

    // §8.8.12 tfdt.
    let base_decode_time = match tfdt.first()? {
        0 => u64::from(be32(tfdt, 4)?),
        1 => be64(tfdt, 4)?,
        _ => return None,
    };

    // §8.8.8 trun: count, optional data_offset and first_sample_flags, then per sample
    // the fields its flags name, in flag order.
    let tr_flags = be32(trun, 0)? & 0x00ff_ffff;
    if trun[0] > 1 || tr_flags & TRUN_DATA_OFFSET == 0 {
        return None; // without a data_offset the run would start inside the moof
    }
    let count = be32(trun, 4)?;
    let data_offset = be32(trun, 8)? as i32;
    let data_start = base.checked_add_signed(i64::from(data_offset))?;
    let (first_sample_flags, at) = match tr_flags & TRUN_FIRST_SAMPLE_FLAGS {
        0 => (None, 12),
        _ => (Some(be32(trun, 12)?), 16),
    };
    let fields = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTS_OFFSET];
    let per_sample = 4 * fields.iter().filter(|&&f| tr_flags & f != 0).count();
    if (trun.len() - at) as u64 != per_sample as u64 * u64::from(count) {
        return None;
    }

    let (duration, payload, flags0) = if per_sample == 0 {
        // All samples take the defaults: no table to walk.
        (u64::from(default_duration) * u64::from(count), u64::from(default_size) * u64::from(count), default_flags)
    } else {
        let (mut duration, mut payload, mut flags0) = (0u64, 0u64, default_flags);
        for (i, row) in trun[at..].chunks_exact(per_sample).enumerate() {
            let mut field = row.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let mut next = |flag: u32, default: u32| if tr_flags & flag != 0 { field.next() } else { Some(default) };
            duration += u64::from(next(TRUN_DURATION, default_duration)?);
            payload += u64::from(next(TRUN_SIZE, default_size)?);
            let flags = next(TRUN_FLAGS, default_flags)?;
            if i == 0 {
                flags0 = flags;
            }
        }
        (duration, payload, flags0)
    };
    let flags0 = first_sample_flags.unwrap_or(flags0);
    Some(MoofInfo {
        base_decode_time,
        duration,
        samples: count,
        first_is_sync: count > 0 && flags0 & SAMPLE_IS_NON_SYNC == 0,
        data_start,
        payload,
    })
}

// ---------------------------------------------------------------------------------------
// Sample tables
//
// `parse` summarises fragments for the index; evidence export needs every sample: where
// its bytes are, how long it lasts, whether a decoder can start at it. `sample_table`
// reads the same complete fragments `parse` accepts, so the index and an export never
// disagree about what a segment holds, and then walks each moof row by row.

/// One sample of a segment as [`sample_table`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSample {
    /// File offset of the sample's first byte; the sample lies inside its fragment's mdat.
    pub offset: u64,
    /// Bytes (4-byte length-prefixed NAL units); never 0.
    pub size: u32,
    /// 90 kHz.
    pub duration: u32,
    /// A keyframe: sample_is_non_sync_sample is clear (§8.8.3.1), as [`parse`] decides.
    pub is_sync: bool,
    /// Composition time minus decode time, 90 kHz (§8.6.1.3); 0 unless the stream has
    /// B-frames, which Cradle's cameras do not send, but another muxer's file may.
    pub composition_offset: i32,
}

/// What it takes to copy a segment's samples into another MP4 without decoding them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentTable {
    /// The whole VisualSampleEntry box from `stsd` (§8.5.2), header included, byte for
    /// byte (`avc1` + `avcC` or `hvc1` + `hvcC`): another file's `stsd` can carry it
    /// unchanged, and two segments have the same codec parameters iff these are equal.
    pub sample_entry: Vec<u8>,
    /// From the sample entry.
    pub width: u16,
    pub height: u16,
    /// Every sample of every complete fragment, in decode order.
    pub samples: Vec<TableSample>,
}

impl SegmentTable {
    /// The sample entry's box type: `avc1`, `hvc1`, …
    pub fn sample_entry_type(&self) -> [u8; 4] {
        self.sample_entry.get(4..8).and_then(|t| t.try_into().ok()).unwrap_or([0; 4])
    }
}

/// Reads a segment's sample entry and the location, duration and flags of every sample.
///
/// The init part must satisfy [`parse`], plus: `stsd` has exactly one entry (a segment
/// with several would need a per-fragment choice this table cannot express). Fragments
/// are the complete ones `parse` finds, so a torn tail is ignored the same way. Inside
/// them every field is resolved as §8.8.7–§8.8.8 lay out, not only as [`write_fragment_header`]
/// writes it: trex → tfhd defaults, an explicit base_data_offset, default-base-is-moof,
/// truns with or without data_offset, first_sample_flags, and composition offsets of
/// trun version 0 (unsigned) or 1 (signed). A sample outside its mdat or of 0 bytes is
/// an error: copying it would export bytes that are not the sample.
pub fn sample_table(data: &[u8]) -> Result<SegmentTable, ParseError> {
    let parsed = parse(data)?;
    let init_part =
        usize::try_from(parsed.init_len).ok().and_then(|n| data.get(..n)).ok_or(ParseError::TruncatedInit)?;
    // `parse` checked that the top-level boxes up to init_len have sizes and end at moov.
    let moov = only(init_part, 0, b"moov")?.ok_or(ParseError::TruncatedInit)?;
    let init = parse_moov(&moov)?;
    let sample_entry = sole_sample_entry(&moov, data)?.to_vec();
    let mut samples = Vec::new();
    for f in &parsed.fragments {
        fragment_samples(data, f, &init, &mut samples)?;
    }
    Ok(SegmentTable { sample_entry, width: parsed.width, height: parsed.height, samples })
}

/// The bytes of the one sample entry in moov/trak/mdia/minf/stbl/stsd (§8.5.2).
fn sole_sample_entry<'a>(moov: &Child<'_>, data: &'a [u8]) -> Result<&'a [u8], ParseError> {
    let trak = need(moov, b"trak", "moov has no single trak")?;
    let mdia = need(&trak, b"mdia", "trak without mdia")?;
    let minf = need(&mdia, b"minf", "mdia without minf")?;
    let stbl = need(&minf, b"stbl", "minf without stbl")?;
    let stsd = need(&stbl, b"stsd", "stbl without stsd")?;
    let bad = |reason| ParseError::Malformed { offset: stsd.offset, reason };
    if be32(stsd.body, 4) != Some(1) {
        return Err(bad("stsd must hold exactly one sample entry"));
    }
    let entry = children(stsd.body.get(8..).unwrap_or_default(), stsd.body_offset + 8)
        .next()
        .ok_or(bad("stsd without entries"))??;
    let start = usize::try_from(entry.offset).map_err(|_| bad("sample entry out of range"))?;
    let end = usize::try_from(entry.body_offset).map_err(|_| bad("sample entry out of range"))? + entry.body.len();
    data.get(start..end).ok_or(bad("sample entry out of range"))
}

/// Appends the samples of one complete fragment (as found by [`parse`]).
fn fragment_samples(data: &[u8], f: &FragmentInfo, init: &Init, out: &mut Vec<TableSample>) -> Result<(), ParseError> {
    let bad = |reason| ParseError::Malformed { offset: f.offset, reason };
    let start = usize::try_from(f.offset).map_err(|_| bad("fragment out of range"))?;
    let moof = match header(data, start) {
        Ok(Some(h @ Header { size: Some(_), .. })) if &h.kind == b"moof" => h,
        _ => return Err(bad("no moof where the fragment starts")),
    };
    let moof_end = usize::try_from(moof.size.unwrap_or(0)).ok().and_then(|n| start.checked_add(n));
    let moof_end = moof_end.ok_or(bad("moof out of range"))?;
    let body = data.get(start + moof.header_len..moof_end).ok_or(bad("moof out of range"))?;
    let mdat = match header(data, moof_end) {
        Ok(Some(h)) if &h.kind == b"mdat" => h,
        _ => return Err(bad("no mdat after the moof")),
    };
    let payload = (moof_end + mdat.header_len) as u64..f.offset.saturating_add(f.len);
    let moof = Child { kind: moof.kind, offset: f.offset, body_offset: (start + moof.header_len) as u64, body };
    moof_samples(&moof, &payload, init, out)
}

/// The fields of a tfhd (§8.8.7), with absent defaults taken from trex.
struct Tfhd {
    track_id: u32,
    base_data_offset: Option<u64>,
    base_is_moof: bool,
    sample_description_index: Option<u32>,
    default_duration: u32,
    default_size: u32,
    default_flags: u32,
}

fn read_tfhd(body: &[u8], init: &Init) -> Option<Tfhd> {
    let flags = be32(body, 0)? & 0x00ff_ffff;
    let track_id = be32(body, 4)?;
    // The optional fields follow track_ID in flag order.
    let mut at = 8;
    let base_data_offset = match flags & TFHD_BASE_DATA_OFFSET {
        0 => None,
        _ => {
            at += 8;
            Some(be64(body, at - 8)?)
        }
    };
    let mut take = |flag: u32| -> Option<Option<u32>> {
        if flags & flag == 0 {
            return Some(None);
        }
        at += 4;
        Some(Some(be32(body, at - 4)?))
    };
    let sample_description_index = take(TFHD_SAMPLE_DESCRIPTION_INDEX)?;
    let default_duration = take(TFHD_DEFAULT_DURATION)?.unwrap_or(init.default_duration);
    let default_size = take(TFHD_DEFAULT_SIZE)?.unwrap_or(init.default_size);
    let default_flags = take(TFHD_DEFAULT_FLAGS)?.unwrap_or(init.default_flags);
    Some(Tfhd {
        track_id,
        base_data_offset,
        base_is_moof: flags & TFHD_DEFAULT_BASE_IS_MOOF != 0,
        sample_description_index,
        default_duration,
        default_size,
        default_flags,
    })
}

/// Appends the samples of every trun of every traf in `moof`; `payload` is the file
/// range of the mdat's payload, which every sample must lie in.
fn moof_samples(
    moof: &Child<'_>,
    payload: &std::ops::Range<u64>,
    init: &Init,
    out: &mut Vec<TableSample>,
) -> Result<(), ParseError> {
    let bad = |c: &Child<'_>, reason| ParseError::Malformed { offset: c.offset, reason };
    // Where the previous traf's data ended: the implicit base of the next traf (§8.8.7.1).
    let mut previous_traf_end = None;
    for traf in children(moof.body, moof.body_offset) {
        let traf = traf?;
        if &traf.kind != b"traf" {
            continue;
        }
        let tfhd = need(&traf, b"tfhd", "traf without tfhd")?;
        let tf = read_tfhd(tfhd.body, init).ok_or(bad(&tfhd, "tfhd too short"))?;
        if tf.track_id != init.track_id {
            return Err(bad(&tfhd, "fragment of a track the segment does not have"));
        }
        if tf.sample_description_index.is_some_and(|i| i != 1) {
            return Err(bad(&tfhd, "fragment uses a sample description other than the only one"));
        }
        // §8.8.7.1: an explicit base_data_offset; else the moof, if default-base-is-moof
        // or this is the moof's first traf; else the end of the previous traf's data.
        let base = match (tf.base_data_offset, tf.base_is_moof) {
            (Some(b), _) => b,
            (None, true) => moof.offset,
            (None, false) => previous_traf_end.unwrap_or(moof.offset),
        };
        // §8.8.8.1: a trun without data_offset starts where the previous run's data
        // ended, or at the base for the traf's first run.
        let mut next = base;
        for trun in children(traf.body, traf.body_offset) {
            let trun = trun?;
            if &trun.kind == b"trun" {
                next = trun_samples(&trun, base, next, &tf, payload, out)?;
            }
        }
        previous_traf_end = Some(next);
    }
    Ok(())
}

/// Appends one trun's samples (§8.8.8) and returns the file offset where its data ends.
fn trun_samples(
    trun: &Child<'_>,
    base: u64,
    next: u64,
    tf: &Tfhd,
    payload: &std::ops::Range<u64>,
    out: &mut Vec<TableSample>,
) -> Result<u64, ParseError> {
    let bad = |reason| ParseError::Malformed { offset: trun.offset, reason };
    let b = trun.body;
    let version = *b.first().ok_or(bad("trun too short"))?;
    if version > 1 {
        return Err(bad("trun of an unknown version"));
    }
    let flags = be32(b, 0).ok_or(bad("trun too short"))? & 0x00ff_ffff;
    let count = be32(b, 4).ok_or(bad("trun too short"))?;
    let mut at = 8;
    let mut pos = next;
    if flags & TRUN_DATA_OFFSET != 0 {
        let data_offset = be32(b, at).ok_or(bad("trun too short"))? as i32;
        pos = base.checked_add_signed(i64::from(data_offset)).ok_or(bad("trun data_offset out of range"))?;
        at += 4;
    }
    let first_sample_flags = match flags & TRUN_FIRST_SAMPLE_FLAGS {
        0 => None,
        _ => {
            at += 4;
            Some(be32(b, at - 4).ok_or(bad("trun too short"))?)
        }
    };
    let has = |flag: u32| flags & flag != 0;
    let fields = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTS_OFFSET];
    let per_sample = 4 * fields.iter().filter(|&&f| has(f)).count();
    let rows = b.get(at..).ok_or(bad("trun too short"))?;
    if rows.len() as u64 != per_sample as u64 * u64::from(count) {
        return Err(bad("trun rows do not match its sample_count"));
    }

    // Each sample is checked against the mdat before the next is read, so a count that
    // lies cannot grow `out` beyond one entry per payload byte.
    let mut row_at = 0;
    let mut field = |flag: u32| -> Option<u32> {
        if !has(flag) {
            return None;
        }
        row_at += 4;
        be32(rows, row_at - 4)
    };
    for i in 0..count {
        let duration = field(TRUN_DURATION).unwrap_or(tf.default_duration);
        let size = field(TRUN_SIZE).unwrap_or(tf.default_size);
        let sample_flags = field(TRUN_FLAGS).unwrap_or(tf.default_flags);
        // first_sample_flags overrides the first row (§8.8.8.1), as in `parse`.
        let sample_flags = if i == 0 { first_sample_flags.unwrap_or(sample_flags) } else { sample_flags };
        let composition_offset = match field(TRUN_CTS_OFFSET) {
            None => 0,
            Some(v) if version == 0 => i32::try_from(v).map_err(|_| bad("composition offset over 6 hours"))?,
            Some(v) => v as i32,
        };
        if size == 0 {
            return Err(bad("sample of 0 bytes"));
        }
        let end = pos.checked_add(u64::from(size)).ok_or(bad("sample data out of range"))?;
        if pos < payload.start || end > payload.end {
            return Err(bad("sample data outside its fragment's mdat"));
        }
        out.push(TableSample {
            offset: pos,
            size,
            duration,
            is_sync: sample_flags & SAMPLE_IS_NON_SYNC == 0,
            composition_offset,
        });
        pos = end;
    }
    Ok(pos)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal VisualSampleEntry: the fields this module reads, plus a stub codec box.
    pub(crate) fn sample_entry(kind: &[u8; 4], w: u16, h: u16) -> Vec<u8> {
        let mut e = Vec::new();
        bx(&mut e, kind, |o| {
            o.extend_from_slice(&[0; 6]);
            u16be(o, 1); // data_reference_index
            o.extend_from_slice(&[0; 16]);
            u16be(o, w);
            u16be(o, h);
            u32be(o, 0x0048_0000); // 72 dpi
            u32be(o, 0x0048_0000);
            u32be(o, 0);
            u16be(o, 1); // frame_count
            o.extend_from_slice(&[0; 32]); // compressorname
            u16be(o, 0x0018); // depth
            u16be(o, 0xffff); // pre_defined
            let config = if kind == b"hvc1" { b"hvcC" } else { b"avcC" };
            bx(o, config, |o| o.extend_from_slice(&[1, 0x64, 0, 0x28, 0xff, 0xe0, 0]));
        });
        e
    }

    const META: &[u8] = br#"{"camera":"room-1","start_us":1}"#;

    fn gop(n: u32, first: u32) -> Vec<Sample> {
        (0..n).map(|i| Sample { duration: 3600, size: first + 7 * i, is_sync: i == 0 }).collect()
    }

    /// A segment of `fragments` GOPs of 50 frames, payload bytes numbered per fragment.
    fn segment_with(kind: &[u8; 4], fragments: usize) -> Vec<u8> {
        let entry = sample_entry(kind, 1920, 1080);
        let mut out = Vec::new();
        write_init(&TrackInfo { sample_entry: &entry, width: 1920, height: 1080 }, META, &mut out);
        let mut t = 0;
        for f in 0..fragments {
            let samples = gop(50, 100 + f as u32);
            write_fragment_header(f as u32 + 1, t, &samples, &mut out);
            for s in &samples {
                out.extend(std::iter::repeat_n(f as u8, s.size as usize));
            }
            t += samples.iter().map(|s| u64::from(s.duration)).sum::<u64>();
        }
        out
    }

    fn segment(fragments: usize) -> Vec<u8> {
        segment_with(b"avc1", fragments)
    }

    /// Offset of the first box of type `kind` found by walking `path` from the top level.
    fn find(data: &[u8], path: &[&[u8; 4]]) -> usize {
        let (mut pos, mut end) = (0, data.len());
        for (depth, kind) in path.iter().enumerate() {
            loop {
                assert!(pos + 8 <= end, "no {:?}", std::str::from_utf8(*kind));
                let size = be32(data, pos).unwrap() as usize;
                if &data[pos + 4..pos + 8] == *kind {
                    break;
                }
                pos += size;
            }
            if depth + 1 < path.len() {
                end = pos + be32(data, pos).unwrap() as usize;
                pos += 8;
            }
        }
        pos
    }

    #[test]
    fn written_segment_parses_back() {
        let data = segment(3);
        let p = parse(&data).unwrap();
        let mut init = Vec::new();
        let entry = sample_entry(b"avc1", 1920, 1080);
        write_init(&TrackInfo { sample_entry: &entry, width: 1920, height: 1080 }, META, &mut init);
        assert_eq!(p.init_len, init.len() as u64);
        assert_eq!(&data[..init.len()], &init[..]);
        assert_eq!(&p.sample_entry_type, b"avc1");
        assert_eq!((p.width, p.height), (1920, 1080));
        assert_eq!(p.metadata.as_deref(), Some(META));
        assert_eq!(p.fragments.len(), 3);
        assert_eq!((p.frames, p.duration), (150, 150 * 3600));
        assert_eq!(p.complete_len, data.len() as u64);
        let mut next = p.init_len;
        for (i, f) in p.fragments.iter().enumerate() {
            assert_eq!(f.offset, next);
            assert_eq!(f.base_decode_time, i as u64 * 50 * 3600);
            assert_eq!((f.duration, f.samples, f.first_is_sync), (50 * 3600, 50, true));
            next += f.len;
        }
        assert_eq!(next, data.len() as u64);
    }

    #[test]
    fn init_layout() {
        let data = segment(0);
        let ftyp = &data[..be32(&data, 0).unwrap() as usize];
        assert_eq!(&ftyp[4..12], b"ftypiso6");
        assert!(ftyp[16..].chunks(4).any(|b| b == b"avc1"));
        assert!(ftyp[16..].chunks(4).any(|b| b == b"mp41"));
        let mvhd = find(&data, &[b"moov", b"mvhd"]);
        assert_eq!(be32(&data, mvhd + 20), Some(TIMESCALE));
        assert_eq!(be32(&data, mvhd), Some(108));
        assert_eq!(be32(&data, mvhd + 104), Some(2), "next_track_ID");
        let tkhd = find(&data, &[b"moov", b"trak", b"tkhd"]);
        assert_eq!(be32(&data, tkhd + 8), Some(3), "enabled | in_movie");
        assert_eq!(be32(&data, tkhd + 20), Some(1), "track_ID");
        assert_eq!(be32(&data, tkhd + 84), Some(1920 << 16));
        assert_eq!(be32(&data, tkhd + 88), Some(1080 << 16));
        assert_eq!(be32(&data, tkhd), Some(92));
        let mdhd = find(&data, &[b"moov", b"trak", b"mdia", b"mdhd"]);
        assert_eq!(be32(&data, mdhd + 20), Some(TIMESCALE));
        assert_eq!(be16(&data, mdhd + 28), Some(0x55c4), "'und'");
        let stsd = find(&data, &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"]);
        assert_eq!(&data[stsd + 20..stsd + 24], b"avc1");
        let trex = find(&data, &[b"moov", b"mvex", b"trex"]);
        assert_eq!(be32(&data, trex + 12), Some(1), "track_ID");
        assert_eq!(be32(&data, trex + 16), Some(1), "default_sample_description_index");
        let crdl = find(&data, &[b"moov", b"udta", b"crdl"]);
        assert_eq!(&data[crdl + 8..crdl + 8 + META.len()], META);
        assert_eq!(crdl + 8 + META.len(), data.len(), "udta/crdl ends moov and the init part");
    }

    #[test]
    fn fragment_layout() {
        let samples =
            [Sample { duration: 3600, size: 10, is_sync: true }, Sample { duration: 3603, size: 20, is_sync: false }];
        let mut out = vec![0xEE; 5]; // appending after existing bytes must not matter
        write_fragment_header(7, 1 << 40, &samples, &mut out);
        let d = &out[5..];
        let moof_len = be32(d, 0).unwrap() as usize;
        assert_eq!(&d[4..8], b"moof");
        assert_eq!(d.len(), moof_len + 8);
        assert_eq!(be32(d, moof_len), Some(38));
        assert_eq!(&d[moof_len + 4..], b"mdat");
        let mfhd = find(d, &[b"moof", b"mfhd"]);
        assert_eq!(be32(d, mfhd + 12), Some(7));
        let tfhd = find(d, &[b"moof", b"traf", b"tfhd"]);
        assert_eq!(be32(d, tfhd + 8), Some(0x02_0000), "default-base-is-moof only");
        let tfdt = find(d, &[b"moof", b"traf", b"tfdt"]);
        assert_eq!(d[tfdt + 8], 1, "tfdt version 1");
        assert_eq!(be64(d, tfdt + 12), Some(1 << 40));
        let trun = find(d, &[b"moof", b"traf", b"trun"]);
        assert_eq!(be32(d, trun + 8), Some(0x0701));
        assert_eq!(be32(d, trun + 12), Some(2));
        assert_eq!(be32(d, trun + 16), Some(moof_len as u32 + 8), "data_offset to the mdat payload");
        let rows: Vec<u32> = (0..6).map(|i| be32(d, trun + 20 + 4 * i).unwrap()).collect();
        assert_eq!(rows, [3600, 10, 0x0200_0000, 3603, 20, 0x0101_0000]);
    }

    #[test]
    fn huge_fragment_uses_largesize_mdat() {
        let samples = [Sample { duration: 1, size: u32::MAX, is_sync: true }; 2];
        let mut out = Vec::new();
        write_fragment_header(1, 0, &samples, &mut out);
        let moof_len = be32(&out, 0).unwrap() as usize;
        assert_eq!(be32(&out, moof_len), Some(1));
        assert_eq!(&out[moof_len + 4..moof_len + 8], b"mdat");
        assert_eq!(be64(&out, moof_len + 8), Some(2 * u64::from(u32::MAX) + 16));
        let trun = find(&out, &[b"moof", b"traf", b"trun"]);
        assert_eq!(be32(&out, trun + 16), Some(moof_len as u32 + 16));

        // Just below the limit the compact header still fits.
        let mut out = Vec::new();
        write_fragment_header(1, 0, &[Sample { duration: 1, size: u32::MAX - 8, is_sync: true }], &mut out);
        let moof_len = be32(&out, 0).unwrap() as usize;
        assert_eq!(be32(&out, moof_len), Some(u32::MAX));
    }

    #[test]
    fn parses_a_largesize_mdat() {
        // Rewrite the one fragment of a segment with a 16-byte mdat header.
        let data = segment(1);
        let p = parse(&data).unwrap();
        let f = &p.fragments[0];
        let moof_at = f.offset as usize;
        let moof_len = be32(&data, moof_at).unwrap() as usize;
        let payload = &data[moof_at + moof_len + 8..];
        let mut d = data[..moof_at + moof_len].to_vec();
        let trun = moof_at + find(&d[moof_at..], &[b"moof", b"traf", b"trun"]);
        d[trun + 16..trun + 20].copy_from_slice(&(moof_len as u32 + 16).to_be_bytes());
        u32be(&mut d, 1);
        d.extend_from_slice(b"mdat");
        u64be(&mut d, payload.len() as u64 + 16);
        d.extend_from_slice(payload);
        let q = parse(&d).unwrap();
        assert_eq!(q.fragments.len(), 1);
        assert_eq!(q.fragments[0].len, f.len + 8);
        assert_eq!(q.complete_len, d.len() as u64);
    }

    #[test]
    fn hevc_entry() {
        let data = segment_with(b"hvc1", 1);
        let ftyp = &data[..be32(&data, 0).unwrap() as usize];
        assert!(ftyp[16..].chunks(4).any(|b| b == b"hvc1"));
        let p = parse(&data).unwrap();
        assert_eq!(&p.sample_entry_type, b"hvc1");
        assert_eq!((p.frames, p.fragments.len()), (50, 1));
    }

    #[test]
    fn every_truncation_keeps_only_whole_fragments() {
        let data = segment(3);
        let full = parse(&data).unwrap();
        let ends: Vec<u64> = full.fragments.iter().map(|f| f.offset + f.len).collect();
        for cut in 0..=data.len() {
            match parse(&data[..cut]) {
                Ok(p) => {
                    assert!(cut as u64 >= full.init_len, "cut {cut} inside the init part parsed");
                    assert!(p.complete_len <= cut as u64);
                    let whole = ends.iter().filter(|&&e| e <= cut as u64).count();
                    assert_eq!(p.fragments[..], full.fragments[..whole], "cut {cut}");
                    assert_eq!(p.complete_len, if whole == 0 { full.init_len } else { ends[whole - 1] });
                    assert_eq!(p.frames, 50 * whole as u64);
                    assert_eq!(p.metadata.as_deref(), Some(META));
                    // What recovery does: cut at complete_len, and the result is whole.
                    let cut_back = parse(&data[..p.complete_len as usize]).unwrap();
                    assert_eq!(cut_back.fragments, p.fragments);
                    assert_eq!(cut_back.complete_len, p.complete_len);
                }
                Err(ParseError::TruncatedInit) => assert!((cut as u64) < full.init_len),
                Err(e) => panic!("cut {cut}: {e}"),
            }
        }
    }

    #[test]
    fn torn_tails_that_are_not_truncations() {
        let data = segment(2);
        let full = parse(&data).unwrap();
        let first_end = (full.fragments[0].offset + full.fragments[0].len) as usize;

        // A crash can leave the file longer than what reached the disk, padded with zeros.
        let mut d = data[..first_end + 100].to_vec();
        d.extend_from_slice(&[0; 4096]);
        assert_eq!(parse(&d).unwrap().complete_len, first_end as u64);

        // The mdat must hold exactly the trun's bytes.
        let moof = full.fragments[0].offset as usize;
        let mdat = moof + be32(&data, moof).unwrap() as usize;
        let mut d = data.clone();
        let size = be32(&d, mdat).unwrap();
        d[mdat..mdat + 4].copy_from_slice(&(size - 1).to_be_bytes());
        assert_eq!(parse(&d).unwrap().fragments.len(), 0);

        // An mdat of size 0 ("to the end of the file") would hide any tearing.
        let mut d = data.clone();
        d[mdat..mdat + 4].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(parse(&d).unwrap().complete_len, full.init_len);

        // A data_offset that does not point at the mdat payload.
        let mut d = data.clone();
        let trun = find(&d[first_end..], &[b"moof", b"traf", b"trun"]) + first_end;
        d[trun + 19] += 1;
        assert_eq!(parse(&d).unwrap().fragments.len(), 1);

        // Another track's fragment.
        let mut d = data.clone();
        let tfhd = find(&d[first_end..], &[b"moof", b"traf", b"tfhd"]) + first_end;
        d[tfhd + 15] = 2;
        assert_eq!(parse(&d).unwrap().fragments.len(), 1);

        // Something other than a moof after the last fragment.
        let mut d = data.clone();
        d.extend_from_slice(b"\0\0\0\x10free\0\0\0\0\0\0\0\0");
        assert_eq!(parse(&d).unwrap().complete_len, data.len() as u64);
    }

    #[test]
    fn first_sample_not_sync() {
        let entry = sample_entry(b"avc1", 64, 48);
        let mut d = Vec::new();
        write_init(&TrackInfo { sample_entry: &entry, width: 64, height: 48 }, b"", &mut d);
        let samples =
            [Sample { duration: 3000, size: 3, is_sync: false }, Sample { duration: 3000, size: 4, is_sync: true }];
        write_fragment_header(1, 0, &samples, &mut d);
        d.extend_from_slice(&[1; 7]);
        let p = parse(&d).unwrap();
        assert!(!p.fragments[0].first_is_sync);
        assert_eq!(p.metadata.as_deref(), Some(&b""[..]));
        assert_eq!((p.width, p.height, p.duration), (64, 48, 6000));
    }

    #[test]
    fn defaults_from_tfhd_and_first_sample_flags() {
        // A moof as other muxers write it: sizes in the trun, duration and flags from tfhd
        // defaults, first_sample_flags for the keyframe, tfdt v0.
        let mut d = segment(0);
        let moof_at = d.len();
        let mut data_offset_at = 0;
        bx(&mut d, b"moof", |o| {
            bx(o, b"mfhd", |o| {
                full(o, 0, 0);
                u32be(o, 1);
            });
            bx(o, b"traf", |o| {
                bx(o, b"tfhd", |o| {
                    full(o, 0, TFHD_DEFAULT_BASE_IS_MOOF | TFHD_DEFAULT_DURATION | TFHD_DEFAULT_FLAGS);
                    u32be(o, 1);
                    u32be(o, 1800);
                    u32be(o, NON_SYNC_SAMPLE_FLAGS);
                });
                bx(o, b"tfdt", |o| {
                    full(o, 0, 0);
                    u32be(o, 90_000);
                });
                bx(o, b"trun", |o| {
                    full(o, 0, TRUN_DATA_OFFSET | TRUN_FIRST_SAMPLE_FLAGS | TRUN_SIZE);
                    u32be(o, 3);
                    data_offset_at = o.len();
                    u32be(o, 0);
                    u32be(o, SYNC_SAMPLE_FLAGS);
                    [5, 6, 7].into_iter().for_each(|s| u32be(o, s));
                });
            });
        });
        let off = (d.len() - moof_at + 8) as u32;
        d[data_offset_at..data_offset_at + 4].copy_from_slice(&off.to_be_bytes());
        bx(&mut d, b"mdat", |o| o.extend_from_slice(&[9; 18]));
        let p = parse(&d).unwrap();
        assert_eq!(p.fragments.len(), 1);
        let f = &p.fragments[0];
        assert_eq!((f.base_decode_time, f.duration, f.samples, f.first_is_sync), (90_000, 5400, 3, true));
        assert_eq!(p.complete_len, d.len() as u64);
    }

    #[test]
    fn init_errors() {
        assert!(matches!(parse(b""), Err(ParseError::TruncatedInit)));
        assert!(matches!(parse(b"\0\0\0\x08free"), Err(ParseError::NotMp4)));
        assert!(matches!(parse(b"<html><body>not found</body></html>"), Err(ParseError::NotMp4)));
        let data = segment(1);
        let init_len = parse(&data).unwrap().init_len as usize;
        assert!(matches!(parse(&data[..init_len - 1]), Err(ParseError::TruncatedInit)));

        // Fragments before any moov: not a segment.
        let ftyp_len = be32(&data, 0).unwrap() as usize;
        let mut d = data[..ftyp_len].to_vec();
        d.extend_from_slice(&data[init_len..]);
        assert!(matches!(parse(&d), Err(ParseError::Malformed { .. })));

        // A moov without mvex is a plain MP4, which this parser does not read.
        let mut d = data.clone();
        let mvex = find(&d, &[b"moov", b"mvex"]);
        d[mvex + 4..mvex + 8].copy_from_slice(b"xvex");
        assert!(matches!(parse(&d), Err(ParseError::Malformed { .. })));

        // Another timescale would make every reported duration wrong.
        let mut d = data.clone();
        let mdhd = find(&d, &[b"moov", b"trak", b"mdia", b"mdhd"]);
        d[mdhd + 20..mdhd + 24].copy_from_slice(&1000u32.to_be_bytes());
        assert!(matches!(parse(&d), Err(ParseError::Malformed { .. })));

        // A free box between ftyp and moov is fine.
        let mut d = data[..ftyp_len].to_vec();
        d.extend_from_slice(b"\0\0\0\x0cfree\0\0\0\0");
        d.extend_from_slice(&data[ftyp_len..]);
        let p = parse(&d).unwrap();
        assert_eq!((p.init_len, p.frames), (init_len as u64 + 12, 50));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = segment(2);
        for round in 0..5000 {
            let mut d = base.clone();
            // Mostly small edits (so the structure mostly survives), sometimes box sizes.
            for _ in 0..1 + rand() % 8 {
                let i = (rand() as usize) % d.len();
                match rand() % 4 {
                    0 => d[i] = rand() as u8,
                    1 => d[i] ^= 1 << (rand() % 8),
                    2 => {
                        let v = [0u32, 1, 7, 8, 16, u32::MAX, rand() as u32][(rand() % 7) as usize];
                        let i = i.min(d.len() - 4);
                        d[i..i + 4].copy_from_slice(&v.to_be_bytes());
                    }
                    _ => d[i] = 0,
                }
            }
            if let Ok(p) = parse(&d) {
                assert!(p.complete_len <= d.len() as u64 && p.init_len <= p.complete_len);
            }
            let cut = (rand() as usize) % d.len();
            let _ = parse(&d[..cut]);
            let noise: Vec<u8> = (0..(round % 200)).map(|_| rand() as u8).collect();
            let _ = parse(&noise);
            let mut framed = b"\0\0\0\x10ftypiso6\0\0\0\0".to_vec();
            framed.extend_from_slice(&noise);
            let _ = parse(&framed);
        }
    }

    // --- sample_table -------------------------------------------------------------------

    #[test]
    fn sample_table_lists_every_sample_where_the_writer_put_it() {
        let data = segment(3);
        let t = sample_table(&data).unwrap();
        assert_eq!(t.sample_entry, sample_entry(b"avc1", 1920, 1080));
        assert_eq!(&t.sample_entry_type(), b"avc1");
        assert_eq!((t.width, t.height), (1920, 1080));
        assert_eq!(t.samples.len(), 150);
        let p = parse(&data).unwrap();
        for (f, frag) in p.fragments.iter().enumerate() {
            let moof_len = u64::from(be32(&data, frag.offset as usize).unwrap());
            let rows = &t.samples[50 * f..50 * (f + 1)];
            assert_eq!(rows[0].offset, frag.offset + moof_len + 8, "first sample right after the mdat header");
            for (i, (s, want)) in rows.iter().zip(gop(50, 100 + f as u32)).enumerate() {
                assert_eq!((s.size, s.duration, s.is_sync, s.composition_offset), (want.size, 3600, i == 0, 0));
                let bytes = &data[s.offset as usize..(s.offset + u64::from(s.size)) as usize];
                assert!(bytes.iter().all(|&b| b == f as u8), "fragment {f} sample {i} points at its own bytes");
                if i > 0 {
                    assert_eq!(s.offset, rows[i - 1].offset + u64::from(rows[i - 1].size));
                }
            }
        }
    }

    #[test]
    fn sample_table_ignores_a_torn_tail_like_parse() {
        let data = segment(3);
        let full = sample_table(&data).unwrap();
        let p = parse(&data).unwrap();
        let last = &p.fragments[2];
        for cut in [last.offset as usize + 3, last.offset as usize + 300, data.len() - 1] {
            let t = sample_table(&data[..cut]).unwrap();
            assert_eq!(t.samples[..], full.samples[..100], "cut at {cut}");
        }
        let t = sample_table(&data[..p.init_len as usize]).unwrap();
        assert!(t.samples.is_empty());
        assert_eq!(t.sample_entry, full.sample_entry);
    }

    /// Appends a moof (mfhd + one traf written by `traf`) and an mdat with `payload`.
    /// `traf` gets the file offsets of the moof and of the mdat payload, to compute
    /// data offsets the way the muxer it imitates would.
    fn push_fragment(d: &mut Vec<u8>, payload: &[u8], traf: impl Fn(&mut Vec<u8>, u64, u64)) {
        let moof_at = d.len() as u64;
        let build = |payload_at: u64| {
            let mut m = Vec::new();
            bx(&mut m, b"moof", |o| {
                bx(o, b"mfhd", |o| {
                    full(o, 0, 0);
                    u32be(o, 1);
                });
                bx(o, b"traf", |o| traf(o, moof_at, payload_at));
            });
            m
        };
        let moof_len = build(moof_at + 4096).len() as u64; // any plausible offset: same size
        d.extend(build(moof_at + moof_len + 8));
        bx(d, b"mdat", |o| o.extend_from_slice(payload));
    }

    fn tfdt0(o: &mut Vec<u8>) {
        bx(o, b"tfdt", |o| {
            full(o, 1, 0);
            u64be(o, 0);
        });
    }

    #[test]
    fn sample_table_reads_tfhd_defaults_and_first_sample_flags() {
        // As ffmpeg writes it: duration, size and flags defaulted in tfhd, sizes in the
        // trun, the keyframe marked by first_sample_flags.
        let mut d = segment(0);
        push_fragment(&mut d, &[7; 5 + 6 + 9], |o, moof_at, payload_at| {
            bx(o, b"tfhd", |o| {
                full(o, 0, TFHD_DEFAULT_BASE_IS_MOOF | TFHD_DEFAULT_DURATION | TFHD_DEFAULT_SIZE | TFHD_DEFAULT_FLAGS);
                u32be(o, 1);
                u32be(o, 3600);
                u32be(o, 999); // default size, overridden by every row
                u32be(o, NON_SYNC_SAMPLE_FLAGS);
            });
            tfdt0(o);
            bx(o, b"trun", |o| {
                full(o, 0, TRUN_DATA_OFFSET | TRUN_FIRST_SAMPLE_FLAGS | TRUN_SIZE);
                u32be(o, 3);
                u32be(o, (payload_at - moof_at) as u32);
                u32be(o, SYNC_SAMPLE_FLAGS);
                [5, 6, 9].into_iter().for_each(|s| u32be(o, s));
            });
        });
        let t = sample_table(&d).unwrap();
        let payload_at = d.len() as u64 - 20;
        let got: Vec<_> = t.samples.iter().map(|s| (s.offset - payload_at, s.size, s.duration, s.is_sync)).collect();
        assert_eq!(got, [(0, 5, 3600, true), (5, 6, 3600, false), (11, 9, 3600, false)]);
    }

    #[test]
    fn sample_table_reads_an_explicit_base_data_offset_and_composition_offsets() {
        // No default-base-is-moof: the base is an absolute file offset from tfhd, sizes
        // come from the tfhd default, and trun v0 carries unsigned composition offsets.
        let mut d = segment(0);
        push_fragment(&mut d, &[1; 12], |o, _moof_at, payload_at| {
            bx(o, b"tfhd", |o| {
                full(o, 0, TFHD_BASE_DATA_OFFSET | TFHD_SAMPLE_DESCRIPTION_INDEX | TFHD_DEFAULT_SIZE);
                u32be(o, 1);
                u64be(o, payload_at - 100);
                u32be(o, 1);
                u32be(o, 4);
            });
            tfdt0(o);
            bx(o, b"trun", |o| {
                full(o, 0, TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_FLAGS | TRUN_CTS_OFFSET);
                u32be(o, 3);
                u32be(o, 100);
                for (dur, flags, cts) in
                    [(3000, SYNC_SAMPLE_FLAGS, 6000), (3000, NON_SYNC_SAMPLE_FLAGS, 0), (3003, 0, 3000)]
                {
                    [dur, flags, cts].into_iter().for_each(|v| u32be(o, v));
                }
            });
        });
        let t = sample_table(&d).unwrap();
        let payload_at = d.len() as u64 - 12;
        let got: Vec<_> = t
            .samples
            .iter()
            .map(|s| (s.offset - payload_at, s.size, s.duration, s.is_sync, s.composition_offset))
            .collect();
        assert_eq!(got, [(0, 4, 3000, true, 6000), (4, 4, 3000, false, 0), (8, 4, 3003, true, 3000)]);
    }

    #[test]
    fn sample_table_reads_signed_composition_offsets_of_trun_version_1() {
        let mut d = segment(0);
        push_fragment(&mut d, &[1; 4], |o, moof_at, payload_at| {
            bx(o, b"tfhd", |o| {
                full(o, 0, TFHD_DEFAULT_BASE_IS_MOOF);
                u32be(o, 1);
            });
            tfdt0(o);
            bx(o, b"trun", |o| {
                full(o, 1, TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS | TRUN_CTS_OFFSET);
                u32be(o, 2);
                u32be(o, (payload_at - moof_at) as u32);
                [3600, 2, SYNC_SAMPLE_FLAGS, (-3600i32) as u32].into_iter().for_each(|v| u32be(o, v));
                [3600, 2, NON_SYNC_SAMPLE_FLAGS, 0].into_iter().for_each(|v| u32be(o, v));
            });
        });
        let t = sample_table(&d).unwrap();
        let cts: Vec<i32> = t.samples.iter().map(|s| s.composition_offset).collect();
        assert_eq!(cts, [-3600, 0]);
    }

    /// The track's fragment defaults as `sample_table` sees them.
    fn init_of(data: &[u8]) -> Init {
        let init_len = parse(data).unwrap().init_len as usize;
        parse_moov(&only(&data[..init_len], 0, b"moov").unwrap().unwrap()).unwrap()
    }

    #[test]
    fn a_trun_without_data_offset_continues_after_the_previous_run() {
        // `parse` only accepts one trun per fragment, so the rule of §8.8.8.1 is checked
        // on the moof reader directly: the second run starts where the first one ended.
        let mut d = segment(0);
        let init = init_of(&d);
        let moof_at = d.len() as u64;
        push_fragment(&mut d, &[3; 10], |o, moof_at, payload_at| {
            bx(o, b"tfhd", |o| {
                full(o, 0, TFHD_DEFAULT_DURATION);
                u32be(o, 1);
                u32be(o, 1800);
            });
            tfdt0(o);
            bx(o, b"trun", |o| {
                full(o, 0, TRUN_DATA_OFFSET | TRUN_SIZE);
                u32be(o, 2);
                u32be(o, (payload_at - moof_at) as u32); // relative to the moof: first traf
                [3, 4].into_iter().for_each(|v| u32be(o, v));
            });
            bx(o, b"trun", |o| {
                full(o, 0, TRUN_SIZE);
                u32be(o, 1);
                u32be(o, 3);
            });
        });
        let frag = FragmentInfo {
            offset: moof_at,
            len: d.len() as u64 - moof_at,
            base_decode_time: 0,
            duration: 0,
            samples: 0,
            first_is_sync: false,
        };
        let mut out = Vec::new();
        fragment_samples(&d, &frag, &init, &mut out).unwrap();
        let payload_at = d.len() as u64 - 10;
        let got: Vec<_> = out.iter().map(|s| (s.offset - payload_at, s.size, s.duration)).collect();
        assert_eq!(got, [(0, 3, 1800), (3, 4, 1800), (7, 3, 1800)]);

        // One byte more in the last run would read past the mdat.
        let trun2_size_at = d.len() - 8 - 10 - 4;
        d[trun2_size_at + 3] = 4;
        let mut out = Vec::new();
        let err = fragment_samples(&d, &frag, &init, &mut out).unwrap_err();
        assert!(err.to_string().contains("outside its fragment's mdat"), "{err}");
    }

    #[test]
    fn sample_table_rejects_what_cannot_be_copied() {
        // A second sample description: which one a fragment uses is not in the table.
        let mut d = segment(1);
        let stsd = find(&d, &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"]);
        d[stsd + 15] = 2;
        assert!(parse(&d).is_ok());
        assert!(matches!(sample_table(&d), Err(ParseError::Malformed { .. })));

        // A fragment pointing at sample description 2.
        let mut d = segment(0);
        push_fragment(&mut d, &[1; 4], |o, moof_at, payload_at| {
            bx(o, b"tfhd", |o| {
                full(o, 0, TFHD_DEFAULT_BASE_IS_MOOF | TFHD_SAMPLE_DESCRIPTION_INDEX);
                u32be(o, 1);
                u32be(o, 2);
            });
            tfdt0(o);
            bx(o, b"trun", |o| {
                full(o, 0, TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE);
                u32be(o, 1);
                u32be(o, (payload_at - moof_at) as u32);
                u32be(o, 3600);
                u32be(o, 4);
            });
        });
        assert_eq!(parse(&d).unwrap().frames, 1);
        let err = sample_table(&d).unwrap_err();
        assert!(err.to_string().contains("sample description"), "{err}");
    }

    #[test]
    fn sample_table_never_panics_on_garbage() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = segment(2);
        for _ in 0..3000 {
            let mut d = base.clone();
            for _ in 0..1 + rand() % 6 {
                let i = (rand() as usize) % d.len();
                match rand() % 3 {
                    0 => d[i] = rand() as u8,
                    1 => d[i] ^= 1 << (rand() % 8),
                    _ => {
                        let v = [0u32, 1, 8, u32::MAX, rand() as u32][(rand() % 5) as usize];
                        let i = i.min(d.len() - 4);
                        d[i..i + 4].copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
            let cut = d.len() - (rand() as usize) % 64;
            if let Ok(t) = sample_table(&d[..cut]) {
                for s in &t.samples {
                    assert!(s.size > 0 && s.offset + u64::from(s.size) <= cut as u64);
                }
            }
        }
    }
}
