//! Evidence export: a time range of recorded segments as ONE ordinary MP4.
//!
//! Police, courts and browsers want a single progressive file (ISO/IEC 14496-12 with the
//! `moov` before the `mdat`, "fast start", so playback can begin before the download
//! ends), not Cradle's fragmented segments. [`plan`] builds that file from the segments'
//! sample tables ([`sample_table`](crate::record::fmp4::sample_table)) without holding
//! any sample data: a [`Plan`] is the file's header (`ftyp` + `moov` + the `mdat`
//! header) followed by byte ranges of the source segment objects. Those ranges are copied unchanged — the export is a remux,
//! never a re-encode — so every frame in the file is bit-identical to what the camera
//! sent and what the index hashes cover. The API serves a plan with HTTP `Range:`
//! support through [`Plan::ranges`]; an export is written with [`Plan::write_to`].
//!
//! The file's timeline is wall-clock time: position t in the file shows the instant
//! [`Plan::actual_start_us`] + t. Where the camera was offline between segments, the
//! last frame before the gap stays on screen until the next segment's first frame, which
//! lands at its recorded wall time.
//!
//! Section numbers refer to ISO/IEC 14496-12:2015 (5th edition).

use std::io::{self, Write};
use std::ops::Range;

use crate::record::fmp4::{
    bx, full, u16be, u32be, u64be, video_handler, video_media_header, SegmentTable, LANGUAGE_UND, MATRIX, TIMESCALE,
};

/// One recorded segment offered to [`plan`].
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// Wall-clock time of the segment's first frame, UTC µs (the index's `start_us`).
    pub start_us: i64,
    pub table: &'a SegmentTable,
}

/// A byte range of one source segment that the planned file contains verbatim (or, when
/// `source` is [`INLINE`], a range of [`Plan::inline`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Index into the segments given to [`plan`], or [`INLINE`].
    pub source: usize,
    /// Offset in that segment's object.
    pub offset: u64,
    pub len: u64,
}

/// [`Piece::source`] of the parameter sets the plan carries in-band (see [`plan`]).
pub const INLINE: usize = usize::MAX;

/// Where a byte range of the planned file comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// A range of [`Plan::header`].
    Header(Range<usize>),
    /// A range of [`Plan::inline`].
    Inline(Range<usize>),
    /// `len` bytes at `offset` in source segment `source`.
    Source { source: usize, offset: u64, len: u64 },
}

/// A progressive MP4 described, not built: `header` followed by `pieces` is the file.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `ftyp` + `moov` + the `mdat` box header.
    pub header: Vec<u8>,
    /// Parameter sets carried in-band at codec-parameter changes (see [`plan`]).
    pub inline: Vec<u8>,
    /// The `mdat` payload, in order; adjacent samples of one segment share a piece.
    pub pieces: Vec<Piece>,
    /// File offset of each piece, parallel to `pieces`.
    piece_at: Vec<u64>,
    /// Length of the whole file.
    pub total_len: u64,
    /// Wall time of the first frame: the first keyframe at or after the requested start.
    pub actual_start_us: i64,
    /// `actual_start_us` + the file's duration. Not after the requested end unless
    /// overlapping segments pushed frames later (`clamped_joins` > 0, see [`plan`]);
    /// every frame's recorded wall time is inside the range regardless.
    pub actual_end_us: i64,
    pub frames: u64,
    pub keyframes: u64,
    /// The file's duration, 90 kHz.
    pub duration_90k: u64,
    /// Indices of the segments that contribute frames, ascending.
    pub sources_used: Vec<usize>,
    /// RFC 6381 codec strings of the sample entries, deduplicated, for a `<video>`
    /// element's `type` (`avc1.64001e`); the bare entry type (`hvc1`) where Cradle does
    /// not derive the full string.
    pub codecs: Vec<String>,
    /// Sample entries in `stsd`: more than one where the codec parameters changed.
    pub sample_entries: usize,
    /// `tkhd` width and height: the largest picture (by area) of the sample entries used,
    /// so no player scales the larger resolution down; a player shows each frame at its
    /// own decoded size within that box.
    pub width: u16,
    pub height: u16,
    /// Joins between segments where the next segment's wall time was not after the
    /// previous frame's (clock drift between segments), so that frame was given the
    /// minimum duration of 1 tick instead; see [`plan`].
    pub clamped_joins: u32,
}

/// Why a range cannot be exported; the messages are for the police user or admin.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("empty time range: the end ({}) is not after the start ({})", when(*end_us), when(*start_us))]
    EmptyRange { start_us: i64, end_us: i64 },
    #[error("no recorded footage between {} and {}", when(*start_us), when(*end_us))]
    NoFootage { start_us: i64, end_us: i64 },
    #[error(
        "no keyframe between {} and {}: the footage in this range can only be decoded from a keyframe \
         before its start, which the request does not cover; widen the range to include the next \
         keyframe (cameras send one every few seconds)",
        when(*start_us),
        when(*end_us)
    )]
    NoKeyframe { start_us: i64, end_us: i64 },
    #[error(
        "the video codec changes from {from} to {to} at {}; one MP4 file cannot hold both, so export \
         the range in two parts, one ending and one starting at that time",
        when(*at_us)
    )]
    CodecChanged { at_us: i64, from: String, to: String },
    #[error(
        "the recording gap before {} is longer than one MP4 frame can last (13 h 15 min); export the \
         parts before and after the gap separately",
        when(*at_us)
    )]
    GapTooLong { at_us: i64 },
    #[error(
        "the range holds {frames} frames, more than one export file can index ({MAX_FRAMES}); export it \
         in shorter parts"
    )]
    TooManyFrames { frames: u64 },
    #[error("segment {index} of the export starts before the one listed before it; segments must be in time order")]
    OutOfOrder { index: usize },
    #[error("segment {index} of the export has no usable video sample entry; the stored object may be damaged")]
    BadSampleEntry { index: usize },
}

/// More frames than this would make `moov` (about 44 bytes per frame in the worst case)
/// approach the 4 GiB a 32-bit box size holds; 50 M frames is 23 days at 25 fps.
const MAX_FRAMES: u64 = 50_000_000;

/// No codec configuration comes near this; a bigger "sample entry" is damage, and would
/// bloat every `moov` it is copied into.
const MAX_SAMPLE_ENTRY: usize = 1 << 20;

/// Wall times are kept in units of 1/9 µs (1/9,000,000 s), the finest unit that both µs
/// and 90 kHz ticks are whole multiples of, so frame times are exact and selection does
/// not depend on rounding.
const UNITS_PER_US: i128 = 9;
const UNITS_PER_TICK: i128 = 100;

/// Seconds from the MP4 epoch, 1904-01-01T00:00:00Z (§8.2.2.3), to the Unix epoch.
const MP4_EPOCH_TO_UNIX: i64 = 2_082_844_800;

/// Plans one progressive MP4 holding `[start_us, end_us)` of `sources` (in time order).
///
/// Selection: the file starts at the first keyframe whose wall time is ≥ `start_us`, never
/// earlier, because an approval covers only the requested range; it includes every later
/// frame whose wall time is < `end_us`. A segment that does not start with a keyframe is
/// joined at its first keyframe. Frame k of a segment starts at `start_us` of the segment
/// plus the recorded durations of frames 0..k.
///
/// Timing: each segment's first selected frame is placed at its wall time relative to
/// the first frame (rounded to the 90 kHz tick), by setting the duration of the frame
/// before it: longer across a gap, slightly shorter or longer where the recorder's clocks
/// drifted. If segments overlap so that a frame would last ≤ 0 ticks, it lasts 1 tick and
/// the next segment starts up to its overlap later than its wall time; the count is in
/// [`Plan::clamped_joins`]. The last frame keeps its recorded duration, cut so the file
/// ends at `end_us` at the latest.
///
/// Codec parameters: each distinct sample entry (new SPS/PPS, another resolution) gets its
/// own `stsd` entry, referenced per chunk from `stsc`. A change of codec (`avc1` ↔ `hvc1`)
/// is an error: §8.5.2 would allow entries of different formats in one track, but players
/// set up one decoder per track and do not switch it mid-file. Some players (Chromium's)
/// also ignore a change of sample entry and go on decoding with the first one's
/// SPS/PPS, which fails at a new resolution; so when a file has more than one entry,
/// each keyframe also carries its entry's parameter sets (VPS/SPS/PPS, length-prefixed
/// as in the samples) in-band, in front of the camera's bytes (ISO/IEC 14496-15 allows
/// parameter sets in samples) — every keyframe, because a seek may start decoding at any
/// of them. Only then are samples not byte-identical to the source, and only by that
/// prefix; a file with one entry (no change) is the camera's bytes alone.
pub fn plan(sources: &[Input<'_>], start_us: i64, end_us: i64) -> Result<Plan, PlanError> {
    if end_us <= start_us {
        return Err(PlanError::EmptyRange { start_us, end_us });
    }
    if let Some(i) = sources.windows(2).position(|w| w[1].start_us < w[0].start_us) {
        return Err(PlanError::OutOfOrder { index: i + 1 });
    }
    let mut runs = select(sources, start_us, end_us)?;
    let frames: u64 = runs.iter().map(|r| r.samples.len() as u64).sum();
    if frames > MAX_FRAMES {
        return Err(PlanError::TooManyFrames { frames });
    }
    let entries = sample_entries(sources, &mut runs)?;
    let (mut samples, clamped_joins) = timeline(sources, &runs, end_us)?;
    let payload = layout(sources, &runs, &entries, &mut samples)?;

    let origin = runs[0].wall;
    let duration_90k: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
    let actual_start_us = units_to_us(origin);
    let (width, height) = runs
        .iter()
        .map(|r| (sources[r.source].table.width, sources[r.source].table.height))
        .fold((0, 0), |best, wh| if area(wh) > area(best) { wh } else { best });
    let movie = Movie {
        entries: &entries,
        samples: &samples,
        chunks: &payload.chunks,
        width,
        height,
        duration: duration_90k,
        created: u64::try_from(actual_start_us.div_euclid(1_000_000).saturating_add(MP4_EPOCH_TO_UNIX)).unwrap_or(0),
    };
    let header = header(&movie, payload.len);
    let header_len = header.len() as u64;
    let mut piece_at = Vec::with_capacity(payload.pieces.len());
    let mut at = header_len;
    for p in &payload.pieces {
        piece_at.push(at);
        at += p.len;
    }
    let mut codecs: Vec<String> = Vec::new();
    for c in entries.iter().map(|e| codec_string(e)) {
        if !codecs.contains(&c) {
            codecs.push(c);
        }
    }
    let mut sources_used: Vec<usize> = runs.iter().map(|r| r.source).collect();
    sources_used.dedup();
    Ok(Plan {
        header,
        inline: payload.inline,
        pieces: payload.pieces,
        piece_at,
        total_len: header_len + payload.len,
        actual_start_us,
        actual_end_us: units_to_us(origin + i128::from(duration_90k) * UNITS_PER_TICK),
        frames,
        keyframes: samples.iter().filter(|s| s.is_sync).count() as u64,
        duration_90k,
        sources_used,
        codecs,
        sample_entries: entries.len(),
        width,
        height,
        clamped_joins,
    })
}

impl Plan {
    /// Where bytes `start..end_exclusive` of the file come from, in order; clipped to
    /// the file, empty if nothing of it remains. Serving a `Range:` request is writing
    /// these chunks, so the file never has to exist as a whole.
    pub fn ranges(&self, start: u64, end_exclusive: u64) -> Vec<Chunk> {
        let end = end_exclusive.min(self.total_len);
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let header_len = self.header.len() as u64;
        if start < header_len {
            // Both below header_len, which is a usize.
            out.push(Chunk::Header(start as usize..end.min(header_len) as usize));
        }
        let mut pos = start.max(header_len);
        // The last piece starting at or before `pos`.
        let mut i = self.piece_at.partition_point(|&at| at <= pos).saturating_sub(1);
        while pos < end && i < self.pieces.len() {
            let (p, at) = (&self.pieces[i], self.piece_at[i]);
            let skip = pos - at;
            let len = (p.len - skip).min(end - pos);
            if len > 0 && p.source == INLINE {
                // Both within `inline`, a Vec.
                let from = (p.offset + skip) as usize;
                out.push(Chunk::Inline(from..from + len as usize));
            } else if len > 0 {
                // Saturating: offsets come from the tables; a bad one fails in the read, not here.
                out.push(Chunk::Source { source: p.source, offset: p.offset.saturating_add(skip), len });
            }
            pos += len;
            i += 1;
        }
        out
    }

    /// Writes the whole file. `sources[i]` is the complete object of source segment i,
    /// the one its sample table was read from.
    pub fn write_to<W: Write>(&self, sources: &[&[u8]], out: &mut W) -> io::Result<()> {
        for chunk in self.ranges(0, self.total_len) {
            match chunk {
                Chunk::Header(r) => out.write_all(&self.header[r])?,
                Chunk::Inline(r) => out.write_all(&self.inline[r])?,
                Chunk::Source { source, offset, len } => out.write_all(source_bytes(sources, source, offset, len)?)?,
            }
        }
        Ok(())
    }
}

/// `len` bytes at `offset` of source `source`, or an error naming what is missing: a
/// source that does not match its sample table must not turn into a panic or a short file.
fn source_bytes<'a>(sources: &[&'a [u8]], source: usize, offset: u64, len: u64) -> io::Result<&'a [u8]> {
    let range = usize::try_from(offset).ok().zip(usize::try_from(offset.saturating_add(len)).ok());
    sources.get(source).zip(range).and_then(|(s, (a, b))| s.get(a..b)).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "source segment {source} lacks bytes {offset}..{} its sample table names",
                offset.saturating_add(len)
            ),
        )
    })
}

// ---------------------------------------------------------------------------------------
// Planning

/// The selected samples of one source segment: one chunk of the output.
struct Run {
    source: usize,
    samples: Range<usize>,
    /// Wall time of the first selected sample, in 1/9 µs.
    wall: i128,
    /// 1-based index of its sample entry in the output's `stsd`.
    entry: u32,
}

/// Picks the samples of each segment that go into the file (see [`plan`]).
fn select(sources: &[Input<'_>], start_us: i64, end_us: i64) -> Result<Vec<Run>, PlanError> {
    let (start, end) = (i128::from(start_us) * UNITS_PER_US, i128::from(end_us) * UNITS_PER_US);
    let mut runs = Vec::new();
    let mut footage = false;
    for (source, seg) in sources.iter().enumerate() {
        let mut wall = i128::from(seg.start_us) * UNITS_PER_US;
        let mut first: Option<(usize, i128)> = None;
        let mut after_last = 0;
        for (k, s) in seg.table.samples.iter().enumerate() {
            if wall >= end {
                break;
            }
            if wall >= start {
                footage = true;
                // Decoding can only begin at a keyframe, here as at every segment start.
                if first.is_none() && s.is_sync {
                    first = Some((k, wall));
                }
            }
            if first.is_some() {
                after_last = k + 1;
            }
            wall += i128::from(s.duration) * UNITS_PER_TICK;
        }
        if let Some((k, wall)) = first {
            runs.push(Run { source, samples: k..after_last, wall, entry: 0 });
        }
    }
    if runs.is_empty() {
        return Err(if footage {
            PlanError::NoKeyframe { start_us, end_us }
        } else {
            PlanError::NoFootage { start_us, end_us }
        });
    }
    Ok(runs)
}

/// The distinct sample entries of `runs`, in first-use order, and each run's index into
/// them. Equal bytes are one entry, so a resumed camera with unchanged parameters does
/// not add one.
fn sample_entries<'a>(sources: &[Input<'a>], runs: &mut [Run]) -> Result<Vec<&'a [u8]>, PlanError> {
    let mut entries: Vec<&'a [u8]> = Vec::new();
    for run in runs.iter_mut() {
        let entry = sources[run.source].table.sample_entry.as_slice();
        let kind = entry_type(entry).ok_or(PlanError::BadSampleEntry { index: run.source })?;
        if let Some(first) = entries.first().and_then(|e| entry_type(e)) {
            if first != kind {
                return Err(PlanError::CodecChanged {
                    at_us: units_to_us(run.wall),
                    from: String::from_utf8_lossy(&first).into_owned(),
                    to: String::from_utf8_lossy(&kind).into_owned(),
                });
            }
        }
        let index = match entries.iter().position(|e| *e == entry) {
            Some(i) => i,
            None => {
                entries.push(entry);
                entries.len() - 1
            }
        };
        // At most one entry per run, and runs ≤ MAX_FRAMES.
        run.entry = index as u32 + 1;
    }
    Ok(entries)
}

/// The box type of a sample entry that is a whole VisualSampleEntry box (§12.1.3): an
/// 8-byte header whose size matches, then 78 bytes of fields.
fn entry_type(entry: &[u8]) -> Option<[u8; 4]> {
    let size = u32::from_be_bytes(entry.get(..4)?.try_into().ok()?);
    if size as usize != entry.len() || entry.len() < 86 || entry.len() > MAX_SAMPLE_ENTRY {
        return None;
    }
    entry.get(4..8)?.try_into().ok()
}

/// One sample of the output as its tables describe it.
struct OutSample {
    size: u32,
    /// 90 kHz, ≥ 1.
    duration: u32,
    is_sync: bool,
    composition_offset: i32,
}

/// The output samples with their durations on the wall-clock timeline (see [`plan`]),
/// and how many joins had to be clamped.
fn timeline(sources: &[Input<'_>], runs: &[Run], end_us: i64) -> Result<(Vec<OutSample>, u32), PlanError> {
    let origin = runs[0].wall;
    let mut out: Vec<OutSample> = Vec::new();
    let mut clamped = 0;
    let mut next: u64 = 0; // decode time of the next sample, 90 kHz
    for run in runs {
        if let Some(last) = out.last_mut() {
            // Make the previous frame last until this run's first frame is due.
            let last_start = next - u64::from(last.duration);
            let due = div_round(run.wall - origin, UNITS_PER_TICK);
            let duration = due - i128::from(last_start);
            if duration < 1 {
                clamped += 1;
            }
            last.duration =
                u32::try_from(duration.max(1)).map_err(|_| PlanError::GapTooLong { at_us: units_to_us(run.wall) })?;
            next = last_start + u64::from(last.duration);
        }
        for s in &sources[run.source].table.samples[run.samples.clone()] {
            // A 0-tick sample (another muxer's last frame) would share its decode time.
            let duration = s.duration.max(1);
            out.push(OutSample {
                size: s.size,
                duration,
                is_sync: s.is_sync,
                composition_offset: s.composition_offset,
            });
            next += u64::from(duration);
        }
    }
    // The last frame: its own duration, but not past the requested end (floor, so the
    // file ends at end_us at the latest), and at least 1 tick.
    let end = (i128::from(end_us) * UNITS_PER_US - origin).div_euclid(UNITS_PER_TICK);
    if let Some(last) = out.last_mut() {
        let last_start = i128::from(next - u64::from(last.duration));
        // Clamped to 1..=duration, so it fits.
        last.duration = (end - last_start).clamp(1, i128::from(last.duration)) as u32;
    }
    Ok((out, clamped))
}

/// One output chunk (§8.7.4): a run's samples, contiguous in `mdat`.
struct OutChunk {
    /// Offset from the start of the `mdat` payload.
    offset: u64,
    samples: u32,
    entry: u32,
}

/// The `mdat` payload: which source bytes, and where each chunk starts.
struct Payload {
    pieces: Vec<Piece>,
    chunks: Vec<OutChunk>,
    len: u64,
    inline: Vec<u8>,
}

/// Lays the samples out in the `mdat`, one chunk per run. When the file has more than
/// one sample entry, every keyframe gets its entry's parameter sets in front (its size
/// in `samples` grows by as much): a player that keeps the first entry's SPS/PPS must
/// find the right ones wherever a seek makes it start decoding.
fn layout(sources: &[Input<'_>], runs: &[Run], entries: &[&[u8]], samples: &mut [OutSample]) -> Result<Payload, PlanError> {
    let mut p = Payload { pieces: Vec::new(), chunks: Vec::with_capacity(runs.len()), len: 0, inline: Vec::new() };
    let mut out_index = 0usize;
    for run in runs {
        p.chunks.push(OutChunk { offset: p.len, samples: run.samples.len() as u32, entry: run.entry });
        let bad = PlanError::BadSampleEntry { index: run.source };
        let sets = match entries.len() {
            1 => None,
            _ => Some(parameter_sets(entries[run.entry as usize - 1]).ok_or(bad)?),
        };
        // The run's sets go into `inline` once; its keyframes all point at them.
        let sets_at = p.inline.len() as u64;
        if let Some(sets) = &sets {
            p.inline.extend_from_slice(sets);
        }
        for s in &sources[run.source].table.samples[run.samples.clone()] {
            if let (Some(sets), true) = (&sets, s.is_sync) {
                let out = &mut samples[out_index];
                let grow = u32::try_from(sets.len()).ok();
                out.size = grow.and_then(|g| out.size.checked_add(g)).ok_or(PlanError::BadSampleEntry { index: run.source })?;
                p.pieces.push(Piece { source: INLINE, offset: sets_at, len: sets.len() as u64 });
                p.len += sets.len() as u64;
            }
            out_index += 1;
            let len = u64::from(s.size);
            p.len += len;
            match p.pieces.last_mut() {
                // Samples of one fragment are back to back in the source; a moof sits
                // between fragments, so each fragment's run becomes one piece.
                Some(last) if last.source == run.source && last.offset.checked_add(last.len) == Some(s.offset) => {
                    last.len += len
                }
                _ if len == 0 => {}
                _ => p.pieces.push(Piece { source: run.source, offset: s.offset, len }),
            }
        }
    }
    Ok(p)
}

/// The parameter sets of an `avc1`/`avcC` or `hvc1`/`hvcC` sample entry as the samples
/// carry NAL units: each prefixed with its length in the configuration's
/// `lengthSizeMinusOne + 1` bytes (ISO/IEC 14496-15 §5.3.3.1, §8.3.3.1). `None` when the
/// entry has no such configuration or it is malformed.
fn parameter_sets(entry: &[u8]) -> Option<Vec<u8>> {
    // Child boxes follow the 8-byte header and 78 bytes of VisualSampleEntry fields.
    let mut pos = 86;
    while pos + 8 <= entry.len() {
        let size = u32::from_be_bytes(entry[pos..pos + 4].try_into().ok()?) as usize;
        if size < 8 || pos + size > entry.len() {
            return None;
        }
        let body = &entry[pos + 8..pos + size];
        match &entry[pos + 4..pos + 8] {
            b"avcC" => return avcc_sets(body),
            b"hvcC" => return hvcc_sets(body),
            _ => pos += size,
        }
    }
    None
}

fn push_nal(out: &mut Vec<u8>, nal: &[u8], length_size: usize) -> Option<()> {
    let len = nal.len() as u64;
    if length_size < 8 && len >> (8 * length_size) != 0 {
        return None;
    }
    out.extend_from_slice(&len.to_be_bytes()[8 - length_size..]);
    out.extend_from_slice(nal);
    Some(())
}

/// AVCDecoderConfigurationRecord: SPS then PPS.
fn avcc_sets(c: &[u8]) -> Option<Vec<u8>> {
    let length_size = usize::from(*c.get(4)? & 3) + 1;
    let mut out = Vec::new();
    let mut pos = 5;
    for count_mask in [0x1f, 0xff] {
        let n = *c.get(pos)? & count_mask;
        pos += 1;
        for _ in 0..n {
            let len = usize::from(u16::from_be_bytes(c.get(pos..pos + 2)?.try_into().ok()?));
            push_nal(&mut out, c.get(pos + 2..pos + 2 + len)?, length_size)?;
            pos += 2 + len;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// HEVCDecoderConfigurationRecord: its arrays (VPS, SPS, PPS, SEI) in order.
fn hvcc_sets(c: &[u8]) -> Option<Vec<u8>> {
    let length_size = usize::from(*c.get(21)? & 3) + 1;
    let arrays = *c.get(22)?;
    let mut out = Vec::new();
    let mut pos = 23;
    for _ in 0..arrays {
        let n = u16::from_be_bytes(c.get(pos + 1..pos + 3)?.try_into().ok()?);
        pos += 3;
        for _ in 0..n {
            let len = usize::from(u16::from_be_bytes(c.get(pos..pos + 2)?.try_into().ok()?));
            push_nal(&mut out, c.get(pos + 2..pos + 2 + len)?, length_size)?;
            pos += 2 + len;
        }
    }
    (!out.is_empty()).then_some(out)
}

fn area((w, h): (u16, u16)) -> u32 {
    u32::from(w) * u32::from(h)
}

/// `n / d` rounded to nearest (halves up), for `d > 0`.
fn div_round(n: i128, d: i128) -> i128 {
    (n + d / 2).div_euclid(d)
}

/// 1/9 µs units to µs, rounded, saturating (times come from data).
fn units_to_us(units: i128) -> i64 {
    let us = div_round(units, UNITS_PER_US);
    i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX })
}

/// An instant for a message: RFC 3339 when it is a plausible date.
fn when(us: i64) -> String {
    // `format_rfc3339` handles years 1970..=9999 here; the value comes from data.
    const MAX_US: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
    if (0..=MAX_US).contains(&us) {
        crate::time::format_rfc3339(us)
    } else {
        format!("{us} µs after 1970")
    }
}

/// The RFC 6381 codec string of a sample entry: `avc1.PPCCLL` from `avcC`'s profile,
/// compatibility and level bytes (RFC 6381 §3.3); otherwise the entry type alone.
fn codec_string(entry: &[u8]) -> String {
    let kind = String::from_utf8_lossy(entry.get(4..8).unwrap_or_default()).into_owned();
    // The child boxes follow the 8-byte header and 78 bytes of VisualSampleEntry fields.
    let mut pos = 86;
    while let Some(size) = entry.get(pos..pos + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes) {
        let Some(child) = entry.get(pos..pos.saturating_add(size as usize)).filter(|_| size >= 8) else { break };
        if &child[4..8] == b"avcC" {
            if let Some(c) = child.get(9..12) {
                return format!("{kind}.{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
            }
        }
        pos += size as usize;
    }
    kind
}

// ---------------------------------------------------------------------------------------
// Writing the header

/// What `moov` describes.
struct Movie<'a> {
    entries: &'a [&'a [u8]],
    samples: &'a [OutSample],
    chunks: &'a [OutChunk],
    width: u16,
    height: u16,
    /// 90 kHz.
    duration: u64,
    /// Seconds since 1904 (§8.2.2.3): the wall time of the first frame, not the time of
    /// the export, so the same range always yields the same bytes and hash.
    created: u64,
}

/// `ftyp` + `moov` + the `mdat` header for a payload of `payload_len` bytes.
fn header(movie: &Movie<'_>, payload_len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    ftyp(movie, &mut out);
    // §4.2: the 64-bit largesize only when the payload does not fit the 32-bit size.
    let mdat_header_len = if payload_len + 8 > u64::from(u32::MAX) { 16 } else { 8 };
    // The moov's size does not depend on the chunk offsets (co64 is always 8 bytes
    // each), so it is built once to measure and once with the offsets.
    let mut probe = Vec::new();
    moov(movie, 0, &mut probe);
    let payload_at = (out.len() + probe.len()) as u64 + mdat_header_len;
    moov(movie, payload_at, &mut out);
    if mdat_header_len == 8 {
        u32be(&mut out, (payload_len + 8) as u32);
        out.extend_from_slice(b"mdat");
    } else {
        u32be(&mut out, 1);
        out.extend_from_slice(b"mdat");
        u64be(&mut out, payload_len + 16);
    }
    out
}

/// §4.3 ftyp: isom/iso2 (the boxes used here), the codec's brand, and mp41 for players
/// that look only for that.
fn ftyp(movie: &Movie<'_>, out: &mut Vec<u8>) {
    let codec: &[u8; 4] = match movie.entries.first().and_then(|e| e.get(4..8)) {
        Some(b"hvc1") | Some(b"hev1") => b"hvc1",
        _ => b"avc1",
    };
    bx(out, b"ftyp", |o| {
        o.extend_from_slice(b"isom");
        u32be(o, 0x200); // minor_version
        for brand in [b"isom", b"iso2", codec, b"mp41"] {
            o.extend_from_slice(brand);
        }
    });
}

/// §8.2.1 moov with one video track whose chunk offsets are relative to `payload_at`,
/// the file offset of the mdat payload.
fn moov(movie: &Movie<'_>, payload_at: u64, out: &mut Vec<u8>) {
    const TRACK_ID: u32 = 1;
    // Version 1 (64-bit times) only when a value needs it (§8.2.2, §8.3.2, §8.4.2).
    let version = u8::from(movie.duration > u64::from(u32::MAX) || movie.created > u64::from(u32::MAX));
    bx(out, b"moov", |o| {
        // §8.2.2 mvhd.
        bx(o, b"mvhd", |o| {
            full(o, version, 0);
            times(o, version, movie.created, &[TIMESCALE], movie.duration);
            u32be(o, 0x0001_0000); // rate 1.0
            u16be(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 2 + 8]); // reserved
            MATRIX.iter().for_each(|&m| u32be(o, m));
            o.extend_from_slice(&[0; 24]); // pre_defined
            u32be(o, TRACK_ID + 1); // next_track_ID
        });
        bx(o, b"trak", |o| {
            // §8.3.2 tkhd: track_enabled | track_in_movie.
            bx(o, b"tkhd", |o| {
                full(o, version, 0x3);
                times(o, version, movie.created, &[TRACK_ID, 0], movie.duration);
                o.extend_from_slice(&[0; 8]); // reserved
                u16be(o, 0); // layer
                u16be(o, 0); // alternate_group
                u16be(o, 0); // volume: 0 for a visual track
                u16be(o, 0); // reserved
                MATRIX.iter().for_each(|&m| u32be(o, m));
                u32be(o, u32::from(movie.width) << 16); // 16.16 fixed point
                u32be(o, u32::from(movie.height) << 16);
            });
            bx(o, b"mdia", |o| {
                // §8.4.2 mdhd: 90 kHz, so recorded durations go in unchanged.
                bx(o, b"mdhd", |o| {
                    full(o, version, 0);
                    times(o, version, movie.created, &[TIMESCALE], movie.duration);
                    u16be(o, LANGUAGE_UND);
                    u16be(o, 0); // pre_defined
                });
                video_handler(o);
                bx(o, b"minf", |o| {
                    video_media_header(o);
                    bx(o, b"stbl", |o| stbl(movie, payload_at, o));
                });
            });
        });
    });
}

/// creation_time and modification_time (both `created`), the u32 fields in between,
/// then duration; 32 or 64 bits by `version`.
fn times(o: &mut Vec<u8>, version: u8, created: u64, between: &[u32], duration: u64) {
    let wide = |o: &mut Vec<u8>, v: u64| if version == 1 { u64be(o, v) } else { u32be(o, v as u32) };
    wide(o, created);
    wide(o, created);
    between.iter().for_each(|&v| u32be(o, v));
    wide(o, duration);
}

/// §8.5.1 stbl: where each sample is, how long it lasts, which are keyframes.
fn stbl(movie: &Movie<'_>, payload_at: u64, o: &mut Vec<u8>) {
    let samples = movie.samples;
    // §8.5.2 stsd: the source segments' entries, byte for byte.
    bx(o, b"stsd", |o| {
        full(o, 0, 0);
        u32be(o, movie.entries.len() as u32);
        movie.entries.iter().for_each(|e| o.extend_from_slice(e));
    });
    // §8.6.1.2 stts: run-length coded durations.
    let stts = run_lengths(samples.iter().map(|s| s.duration));
    bx(o, b"stts", |o| {
        full(o, 0, 0);
        u32be(o, stts.len() as u32);
        for (count, delta) in &stts {
            u32be(o, *count);
            u32be(o, *delta);
        }
    });
    // §8.6.1.3 ctts, only with B-frames; version 1 (signed) if any offset is negative.
    if samples.iter().any(|s| s.composition_offset != 0) {
        let ctts = run_lengths(samples.iter().map(|s| s.composition_offset));
        let version = u8::from(samples.iter().any(|s| s.composition_offset < 0));
        bx(o, b"ctts", |o| {
            full(o, version, 0);
            u32be(o, ctts.len() as u32);
            for (count, offset) in &ctts {
                u32be(o, *count);
                u32be(o, *offset as u32); // two's complement for version 1
            }
        });
    }
    // §8.6.2 stss: 1-based numbers of the keyframes, for seeking.
    let sync: Vec<u32> = (1..).zip(samples).filter(|(_, s)| s.is_sync).map(|(n, _)| n).collect();
    bx(o, b"stss", |o| {
        full(o, 0, 0);
        u32be(o, sync.len() as u32);
        sync.iter().for_each(|&n| u32be(o, n));
    });
    // §8.7.4 stsc: a row where samples_per_chunk or sample_description_index changes.
    bx(o, b"stsc", |o| {
        full(o, 0, 0);
        let count_at = o.len();
        u32be(o, 0);
        let mut rows = 0u32;
        let mut previous = None;
        for (first_chunk, c) in (1u32..).zip(movie.chunks) {
            if previous != Some((c.samples, c.entry)) {
                [first_chunk, c.samples, c.entry].into_iter().for_each(|v| u32be(o, v));
                rows += 1;
                previous = Some((c.samples, c.entry));
            }
        }
        o[count_at..count_at + 4].copy_from_slice(&rows.to_be_bytes());
    });
    // §8.7.3 stsz: sizes per sample.
    bx(o, b"stsz", |o| {
        full(o, 0, 0);
        u32be(o, 0); // sample_size: they differ
        u32be(o, samples.len() as u32);
        samples.iter().for_each(|s| u32be(o, s.size));
    });
    // §8.7.5 co64: always 64-bit, as an export may pass 4 GiB.
    bx(o, b"co64", |o| {
        full(o, 0, 0);
        u32be(o, movie.chunks.len() as u32);
        movie.chunks.iter().for_each(|c| u64be(o, payload_at + c.offset));
    });
}

/// (count, value) for each run of equal values.
fn run_lengths<T: PartialEq + Copy>(values: impl Iterator<Item = T>) -> Vec<(u32, T)> {
    let mut runs: Vec<(u32, T)> = Vec::new();
    for v in values {
        match runs.last_mut() {
            Some((n, last)) if *last == v => *n += 1,
            _ => runs.push((1, v)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fmp4::{sample_table, write_fragment_header, write_init, Sample, TableSample, TrackInfo};
    use crate::time::format_rfc3339;

    /// 2023-11-14T22:13:20Z.
    const T0: i64 = 1_700_000_000_000_000;
    const S: i64 = 1_000_000;

    /// A VisualSampleEntry of type `kind` whose config box (`avcC`/`hvcC`) holds
    /// `config`: different parameter sets give different bytes, as from a camera.
    fn entry(kind: &[u8; 4], w: u16, h: u16, config: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        bx(&mut e, kind, |o| {
            o.extend_from_slice(&[0; 6]);
            u16be(o, 1); // data_reference_index
            o.extend_from_slice(&[0; 16]);
            u16be(o, w);
            u16be(o, h);
            u32be(o, 0x0048_0000);
            u32be(o, 0x0048_0000);
            u32be(o, 0);
            u16be(o, 1);
            o.extend_from_slice(&[0; 32]);
            u16be(o, 0x0018);
            u16be(o, 0xffff);
            bx(o, if kind == b"hvc1" { b"hvcC" } else { b"avcC" }, |o| o.extend_from_slice(config));
        });
        e
    }

    fn avc_a() -> Vec<u8> {
        entry(b"avc1", 320, 240, &[1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0xc0, 0x1e, 1, 0, 2, 0x68, 0xce])
    }
    fn avc_b() -> Vec<u8> {
        entry(b"avc1", 640, 360, &[1, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0x00, 0x1f, 1, 0, 2, 0x68, 0xee])
    }

    /// A Cradle segment at 25 fps: one fragment per entry of `gops` (frames per GOP).
    /// With `starts_mid_gop` its first frame is not a keyframe. Every sample's bytes
    /// are distinct (`tag`, frame number, position), so a misplaced copy shows.
    fn segment(entry: &[u8], gops: &[usize], starts_mid_gop: bool, tag: u8) -> Vec<u8> {
        let (w, h) = (u16::from_be_bytes([entry[32], entry[33]]), u16::from_be_bytes([entry[34], entry[35]]));
        let mut out = Vec::new();
        write_init(&TrackInfo { sample_entry: entry, width: w, height: h }, b"{}", &mut out);
        let (mut frame, mut t) = (0usize, 0u64);
        for (g, &n) in gops.iter().enumerate() {
            let samples: Vec<Sample> = (0..n)
                .map(|i| Sample {
                    duration: 3600,
                    size: 20 + ((frame + i) % 7) as u32,
                    is_sync: i == 0 && !(g == 0 && starts_mid_gop),
                })
                .collect();
            write_fragment_header(g as u32 + 1, t, &samples, &mut out);
            for s in &samples {
                out.extend((0..s.size).map(|j| tag ^ (frame as u8).wrapping_mul(31) ^ (j as u8).wrapping_mul(7)));
                frame += 1;
                t += u64::from(s.duration);
            }
        }
        out
    }

    /// The body of the first box at `path` (32-bit sizes, as in a moov).
    fn find<'a>(data: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
        let mut d = data;
        for kind in path {
            let mut pos = 0;
            loop {
                let size = u32::from_be_bytes(d.get(pos..pos + 4)?.try_into().ok()?) as usize;
                if d.get(pos + 4..pos + 8)? == &kind[..] {
                    d = d.get(pos + 8..pos + size)?;
                    break;
                }
                if size < 8 {
                    return None;
                }
                pos += size;
            }
        }
        Some(d)
    }

    fn be32s(b: &[u8]) -> Vec<u32> {
        b.chunks_exact(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect()
    }

    const STBL: [&[u8; 4]; 5] = [b"moov", b"trak", b"mdia", b"minf", b"stbl"];

    fn stbl_box<'a>(file: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
        let mut path = STBL.to_vec();
        path.push(kind);
        find(file, &path)
    }

    /// The sample tables of an output file, expanded per sample.
    struct Tables {
        entries: Vec<Vec<u8>>,
        durations: Vec<u32>,
        sync: Vec<u32>,
        stsc: Vec<[u32; 3]>,
        /// (file offset, size, sample description index) per sample.
        samples: Vec<(u64, u32, u32)>,
        co64: Vec<u64>,
    }

    fn tables(file: &[u8]) -> Tables {
        let stsd = stbl_box(file, b"stsd").expect("stsd");
        let mut entries = Vec::new();
        let mut pos = 8;
        while pos < stsd.len() {
            let size = u32::from_be_bytes(stsd[pos..pos + 4].try_into().unwrap()) as usize;
            entries.push(stsd[pos..pos + size].to_vec());
            pos += size;
        }
        assert_eq!(be32s(&stsd[4..8])[0] as usize, entries.len());
        let stts = be32s(&stbl_box(file, b"stts").expect("stts")[4..]);
        let durations: Vec<u32> = stts[1..].chunks(2).flat_map(|r| std::iter::repeat_n(r[1], r[0] as usize)).collect();
        let sync = be32s(&stbl_box(file, b"stss").expect("stss")[8..]);
        let stsc: Vec<[u32; 3]> =
            be32s(&stbl_box(file, b"stsc").expect("stsc")[8..]).chunks(3).map(|r| [r[0], r[1], r[2]]).collect();
        let stsz = be32s(&stbl_box(file, b"stsz").expect("stsz")[4..]);
        assert_eq!(stsz[0], 0);
        let sizes = &stsz[2..];
        assert_eq!(sizes.len(), stsz[1] as usize);
        let co64: Vec<u64> = stbl_box(file, b"co64").expect("co64")[8..]
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect();
        let mut samples = Vec::new();
        for (c, &at) in co64.iter().enumerate() {
            let row = stsc.iter().rev().find(|r| r[0] as usize <= c + 1).expect("stsc row");
            let mut at = at;
            for _ in 0..row[1] {
                let size = sizes[samples.len()];
                samples.push((at, size, row[2]));
                at += u64::from(size);
            }
        }
        assert_eq!(samples.len(), sizes.len(), "stsc covers every sample");
        assert_eq!(durations.len(), sizes.len(), "stts covers every sample");
        Tables { entries, durations, sync, stsc, samples, co64 }
    }

    fn file_of(plan: &Plan, sources: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        plan.write_to(sources, &mut out).unwrap();
        assert_eq!(out.len() as u64, plan.total_len);
        assert_eq!(&out[..plan.header.len()], &plan.header[..]);
        out
    }

    /// Every sample of the file holds exactly the bytes of source sample `want[i]`
    /// (segment, index in its table) — after its segment's parameter sets where the
    /// sample entry changed. Returns the indices of the samples with in-band sets.
    fn assert_samples_copied(
        file: &[u8],
        t: &Tables,
        srcs: &[&[u8]],
        tabs: &[SegmentTable],
        want: &[(usize, usize)],
    ) -> Vec<usize> {
        assert_eq!(t.samples.len(), want.len());
        let mut inband = Vec::new();
        for (i, (&(at, size, _), &(seg, k))) in t.samples.iter().zip(want).enumerate() {
            let s: &TableSample = &tabs[seg].samples[k];
            let got = &file[at as usize..(at + u64::from(size)) as usize];
            let (sets, rest) = got.split_at((size - s.size) as usize);
            if !sets.is_empty() {
                assert_eq!(sets, parameter_sets(&tabs[seg].sample_entry).unwrap(), "sample {i}: in-band parameter sets");
                assert!(s.is_sync, "sample {i}: parameter sets only before a keyframe");
                inband.push(i);
            }
            assert_eq!(rest, &srcs[seg][s.offset as usize..(s.offset + u64::from(s.size)) as usize], "sample {i}");
        }
        inband
    }

    /// Reassembles bytes `a..b` of the file from `ranges`.
    fn from_ranges(plan: &Plan, sources: &[&[u8]], a: u64, b: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for c in plan.ranges(a, b) {
            match c {
                Chunk::Header(r) => out.extend_from_slice(&plan.header[r]),
                Chunk::Inline(r) => out.extend_from_slice(&plan.inline[r]),
                Chunk::Source { source, offset, len } => {
                    out.extend_from_slice(&sources[source][offset as usize..(offset + len) as usize])
                }
            }
        }
        out
    }

    #[test]
    fn a_range_across_a_gap_and_a_parameter_change_becomes_one_wall_clock_file() {
        let (a, b) = (avc_a(), avc_b());
        let segs = [
            segment(&a, &[25, 25], false, 0x10),
            segment(&a, &[25, 25], false, 0x20),
            segment(&b, &[25, 25], false, 0x30), // after a 1 s gap, new SPS/PPS and size
            segment(&b, &[25, 25], false, 0x40), // starts 20 ms before seg 2 ends: drift
            segment(&b, &[25], false, 0x50),     // after the range
        ];
        let starts = [T0, T0 + 2 * S, T0 + 5 * S, T0 + 6_980_000, T0 + 9 * S];
        let tabs: Vec<SegmentTable> = segs.iter().map(|s| sample_table(s).unwrap()).collect();
        let inputs: Vec<Input<'_>> =
            starts.iter().zip(&tabs).map(|(&start_us, table)| Input { start_us, table }).collect();
        let srcs: Vec<&[u8]> = segs.iter().map(|s| &s[..]).collect();

        // From mid-GOP in segment 0 (its second keyframe, at 1 s, is the first one in
        // range) to 8.09 s, inside segment 3: frames starting before 8.09 s are 6.98 s +
        // 0.04 s × 0..=27; frame 28 would start at 8.10 s.
        let plan = plan(&inputs, T0 + 500_000, T0 + 8_090_000).unwrap();
        assert_eq!((plan.actual_start_us, plan.actual_end_us), (T0 + S, T0 + 8_090_000));
        assert_eq!((plan.frames, plan.keyframes), (25 + 50 + 50 + 28, 7));
        assert_eq!(plan.duration_90k, 638_100, "7.09 s");
        assert_eq!(plan.sources_used, [0, 1, 2, 3]);
        assert_eq!((plan.width, plan.height, plan.sample_entries), (640, 360, 2));
        assert_eq!(plan.codecs, ["avc1.42c01e", "avc1.64001f"]);
        assert_eq!(plan.clamped_joins, 0);
        assert_eq!(plan.pieces.len(), 1 + 2 + 2 + 2 + 7, "one piece per fragment used, and the sets before each keyframe");
        assert_eq!(plan.pieces.iter().filter(|p| p.source == INLINE).count(), 7);

        let file = file_of(&plan, &srcs);
        let t = tables(&file);
        assert_eq!(t.entries, [a.clone(), b.clone()], "sample entries copied byte for byte");
        let mut want_durations = vec![3600u32; 153];
        want_durations[74] = 93_600; // last frame before the gap: 3.96 s → 5.00 s
        want_durations[124] = 1800; // drift: segment 3 starts 20 ms early
        want_durations[152] = 2700; // cut at the requested end
        assert_eq!(t.durations, want_durations);
        assert_eq!(t.sync, [1, 26, 51, 76, 101, 126, 151]);
        assert_eq!(t.stsc, [[1, 25, 1], [2, 50, 1], [3, 50, 2], [4, 28, 2]]);
        let want: Vec<(usize, usize)> = (25..50)
            .map(|k| (0, k))
            .chain((0..50).map(|k| (1, k)))
            .chain((0..50).map(|k| (2, k)))
            .chain((0..28).map(|k| (3, k)))
            .collect();
        // Two entries: every keyframe carries its entry's SPS and PPS in-band.
        assert_eq!(assert_samples_copied(&file, &t, &srcs, &tabs, &want), [0, 25, 50, 75, 100, 125, 150]);

        // The box layout: ftyp, moov, then one mdat holding exactly the samples.
        assert_eq!(&file[4..8], b"ftyp");
        assert!(file[16..32].chunks(4).any(|b| b == b"avc1"));
        let mvhd = find(&file, &[b"moov", b"mvhd"]).unwrap();
        assert_eq!(be32s(&mvhd[12..20]), [TIMESCALE, 638_100]);
        let tkhd = find(&file, &[b"moov", b"trak", b"tkhd"]).unwrap();
        assert_eq!(be32s(&tkhd[76..84]), [640 << 16, 360 << 16]);
        let mdhd = find(&file, &[b"moov", b"trak", b"mdia", b"mdhd"]).unwrap();
        assert_eq!(be32s(&mdhd[12..20]), [TIMESCALE, 638_100]);
        assert!(stbl_box(&file, b"ctts").is_none(), "no B-frames, no ctts");
        assert!(stbl_box(&file, b"stco").is_none());
        let mdat_at = plan.header.len() - 8;
        assert_eq!(&file[mdat_at + 4..mdat_at + 8], b"mdat");
        assert_eq!(u64::from(be32s(&file[mdat_at..mdat_at + 4])[0]), plan.total_len - mdat_at as u64);
        assert_eq!(t.co64[0], plan.header.len() as u64);

        // Any byte range served from the plan is that range of the file.
        let mut cuts: Vec<u64> = vec![0, 1, plan.header.len() as u64, plan.total_len];
        cuts.extend(plan.piece_at.iter().flat_map(|&p| [p - 1, p, p + 1]));
        for &x in &cuts {
            for &y in &cuts {
                let want = if x < y { &file[x as usize..y as usize] } else { &[][..] };
                assert_eq!(from_ranges(&plan, &srcs, x, y), want, "{x}..{y}");
            }
        }
        assert_eq!(from_ranges(&plan, &srcs, 10, u64::MAX), &file[10..], "clipped to the file");
        assert!(plan.ranges(plan.total_len, plan.total_len + 10).is_empty());
    }

    #[test]
    fn a_start_on_a_keyframe_is_included_and_the_end_is_exclusive() {
        let seg = segment(&avc_a(), &[25, 25], false, 1);
        let tab = sample_table(&seg).unwrap();
        let inputs = [Input { start_us: T0, table: &tab }];
        let plan = plan(&inputs, T0 + S, T0 + 2 * S).unwrap();
        assert_eq!((plan.actual_start_us, plan.actual_end_us, plan.frames), (T0 + S, T0 + 2 * S, 25));
        let t = tables(&file_of(&plan, &[&seg]));
        assert_eq!(t.durations, [3600; 25], "the last frame ends exactly at the end");
        // An end exactly where a frame starts leaves that frame out.
        let plan = super::plan(&inputs, T0 + S, T0 + 1_960_000).unwrap();
        assert_eq!(plan.frames, 24);
    }

    #[test]
    fn a_segment_that_starts_mid_gop_is_joined_at_its_first_keyframe() {
        let (a, b) = (avc_a(), avc_a());
        let segs = [segment(&a, &[25], false, 1), segment(&b, &[5, 25], true, 2)];
        let tabs: Vec<SegmentTable> = segs.iter().map(|s| sample_table(s).unwrap()).collect();
        let inputs = [Input { start_us: T0, table: &tabs[0] }, Input { start_us: T0 + S, table: &tabs[1] }];
        let plan = plan(&inputs, T0, T0 + 3 * S).unwrap();
        assert_eq!((plan.frames, plan.keyframes, plan.sample_entries), (50, 2, 1));
        let srcs: Vec<&[u8]> = segs.iter().map(|s| &s[..]).collect();
        let file = file_of(&plan, &srcs);
        let t = tables(&file);
        // Segment 1's keyframe is at 1.2 s; segment 0's last frame (0.96 s) bridges to it.
        assert_eq!(t.durations[24], 21_600);
        assert_eq!(t.sync, [1, 26]);
        let want: Vec<_> = (0..25).map(|k| (0, k)).chain((5..30).map(|k| (1, k))).collect();
        assert_samples_copied(&file, &t, &srcs, &tabs, &want);
    }

    #[test]
    fn overlapping_segments_never_get_a_duration_below_one_tick() {
        let seg = segment(&avc_a(), &[25], false, 1);
        let tab = sample_table(&seg).unwrap();
        // The second segment claims to start 100 ms before the first one ends.
        let inputs = [Input { start_us: T0, table: &tab }, Input { start_us: T0 + 900_000, table: &tab }];
        let plan = plan(&inputs, T0, T0 + 3 * S).unwrap();
        assert_eq!(plan.clamped_joins, 1);
        let t = tables(&file_of(&plan, &[&seg, &seg]));
        let mut want = vec![3600; 50];
        want[24] = 1;
        assert_eq!(t.durations, want);
        assert_eq!(plan.duration_90k, 24 * 3600 + 1 + 25 * 3600);
    }

    #[test]
    fn a_codec_change_is_refused_with_the_time_to_split_at() {
        let hevc = entry(b"hvc1", 320, 240, &[1, 1, 0x60, 0, 0, 0]);
        let segs = [segment(&avc_a(), &[25], false, 1), segment(&hevc, &[25], false, 2)];
        let tabs: Vec<SegmentTable> = segs.iter().map(|s| sample_table(s).unwrap()).collect();
        let inputs = [Input { start_us: T0, table: &tabs[0] }, Input { start_us: T0 + S, table: &tabs[1] }];
        let err = plan(&inputs, T0, T0 + 2 * S).unwrap_err();
        assert!(matches!(&err, PlanError::CodecChanged { at_us, .. } if *at_us == T0 + S), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("from avc1 to hvc1") && msg.contains(&format_rfc3339(T0 + S)), "{msg}");
        assert!(msg.contains("two parts"), "{msg}");
        // Each side on its own is fine.
        assert_eq!(plan(&inputs, T0 + S, T0 + 2 * S).unwrap().codecs, ["hvc1"]);
    }

    #[test]
    fn ranges_that_cannot_be_exported_say_why() {
        let seg = segment(&avc_a(), &[25, 25], false, 1);
        let tab = sample_table(&seg).unwrap();
        let inputs = [Input { start_us: T0, table: &tab }, Input { start_us: T0 + 10 * S, table: &tab }];
        let msg = |r: Result<Plan, PlanError>| r.unwrap_err().to_string();

        let e = msg(plan(&inputs, T0 + S, T0 + S));
        assert!(e.starts_with("empty time range"), "{e}");
        let e = msg(plan(&inputs, T0 + 3 * S, T0 + 9 * S));
        assert_eq!(
            e,
            format!("no recorded footage between {} and {}", format_rfc3339(T0 + 3 * S), format_rfc3339(T0 + 9 * S))
        );
        // Inside one GOP, after its keyframe: frames exist, none decodable from the start.
        let e = msg(plan(&inputs, T0 + 100_000, T0 + 900_000));
        assert!(e.starts_with(&format!("no keyframe between {}", format_rfc3339(T0 + 100_000))), "{e}");
        let e = msg(plan(&[inputs[1], inputs[0]], T0, T0 + 20 * S));
        assert!(e.contains("time order"), "{e}");
        assert!(matches!(plan(&[], T0, T0 + S), Err(PlanError::NoFootage { .. })));

        // A table whose sample entry is not a box.
        let mut bad = tab.clone();
        bad.sample_entry.truncate(40);
        let e = msg(plan(&[Input { start_us: T0, table: &bad }], T0, T0 + S));
        assert!(e.contains("segment 0") && e.contains("damaged"), "{e}");

        // A gap longer than a 32-bit duration at 90 kHz (13 h 15 min).
        let far = [Input { start_us: T0, table: &tab }, Input { start_us: T0 + 48_000 * S, table: &tab }];
        let e = msg(plan(&far, T0, T0 + 50_000 * S));
        assert!(e.contains("recording gap") && e.contains(&format_rfc3339(T0 + 48_000 * S)), "{e}");
    }

    #[test]
    fn composition_offsets_get_a_ctts_signed_when_negative() {
        let sample = |is_sync, composition_offset| TableSample {
            offset: 1000,
            size: 10,
            duration: 3600,
            is_sync,
            composition_offset,
        };
        let mut tab = SegmentTable {
            sample_entry: avc_a(),
            width: 320,
            height: 240,
            samples: vec![sample(true, 7200), sample(false, 0), sample(false, 0), sample(false, 3600)],
        };
        let ctts = |tab: &SegmentTable| {
            let plan = plan(&[Input { start_us: T0, table: tab }], T0, T0 + S).unwrap();
            let file = plan.header.clone(); // the tables are all in the header
            stbl_box(&file, b"ctts").map(|c| (c[0], be32s(&c[4..])))
        };
        assert_eq!(ctts(&tab), Some((0, vec![3, 1, 7200, 2, 0, 1, 3600])));
        tab.samples[1].composition_offset = -3600;
        assert_eq!(ctts(&tab), Some((1, vec![4, 1, 7200, 1, (-3600i32) as u32, 1, 0, 1, 3600])));
    }

    #[test]
    fn a_payload_over_4_gib_gets_a_largesize_mdat_and_64_bit_offsets() {
        // Planning needs only tables, so a 4.5 GB export is checked without the bytes.
        let big = |n: u64| SegmentTable {
            sample_entry: avc_a(),
            width: 320,
            height: 240,
            samples: (0..n)
                .map(|i| TableSample {
                    offset: 1000 + i * 1_500_000_000,
                    size: 1_500_000_000,
                    duration: 3600,
                    is_sync: i == 0,
                    composition_offset: 0,
                })
                .collect(),
        };
        let (t0, t1) = (big(3), big(1));
        let inputs = [Input { start_us: T0, table: &t0 }, Input { start_us: T0 + 120_000, table: &t1 }];
        let plan = plan(&inputs, T0, T0 + S).unwrap();
        let payload = 4 * 1_500_000_000u64;
        let h = &plan.header;
        let mdat_at = h.len() - 16;
        assert_eq!(be32s(&h[mdat_at..mdat_at + 8]), [1, u32::from_be_bytes(*b"mdat")]);
        assert_eq!(u64::from_be_bytes(h[mdat_at + 8..].try_into().unwrap()), payload + 16);
        assert_eq!(plan.total_len, h.len() as u64 + payload);
        let t = tables(h);
        assert_eq!(t.co64, [h.len() as u64, h.len() as u64 + 3 * 1_500_000_000]);
        // Samples of one segment are contiguous: one piece each.
        assert_eq!(
            plan.pieces,
            [
                Piece { source: 0, offset: 1000, len: 3 * 1_500_000_000 },
                Piece { source: 1, offset: 1000, len: 1_500_000_000 }
            ]
        );
        assert_eq!(
            plan.ranges(plan.total_len - 5, u64::MAX),
            [Chunk::Source { source: 1, offset: 1000 + 1_500_000_000 - 5, len: 5 }]
        );
    }

    #[test]
    fn write_to_reports_a_source_shorter_than_its_table() {
        let seg = segment(&avc_a(), &[25], false, 1);
        let tab = sample_table(&seg).unwrap();
        let plan = plan(&[Input { start_us: T0, table: &tab }], T0, T0 + S).unwrap();
        let err = plan.write_to(&[&seg[..seg.len() - 1]], &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(plan.write_to(&[], &mut Vec::new()).is_err());
    }

    // --- Real decoders ---------------------------------------------------------------

    fn have(tool: &str) -> bool {
        std::process::Command::new(tool).arg("-version").output().is_ok_and(|o| o.status.success())
    }

    /// Runs a tool, returning stdout and stderr; panics with both if it fails.
    fn run(tool: &str, args: &[&str]) -> (String, String) {
        let o = std::process::Command::new(tool).args(args).output().unwrap();
        let (out, err) =
            (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
        assert!(o.status.success(), "{tool} {args:?}: {err}");
        (out, err)
    }

    /// 6 s of real H.264 (25 fps, a keyframe per second, no B-frames) from ffmpeg as a
    /// fragmented MP4 at 90 kHz: another muxer's fragments (tfhd defaults,
    /// first_sample_flags), read with the same `sample_table` the exporter uses.
    fn encode(dir: &std::path::Path, name: &str, source: &str) -> Vec<u8> {
        let path = dir.join(name);
        #[rustfmt::skip]
        run("ffmpeg", &[
            "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", "6",
            "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p",
            "-f", "mp4", "-movflags", "frag_keyframe+empty_moov+default_base_moof",
            "-video_track_timescale", "90000", path.to_str().unwrap(),
        ]);
        std::fs::read(&path).unwrap()
    }

    /// Re-writes a clip as Cradle segments of `per_segment` frames with the recorder's
    /// writer: one fragment per GOP, the clip's sample entry and sample bytes unchanged.
    fn cradle_segments(clip: &[u8], per_segment: usize) -> Vec<Vec<u8>> {
        let t = sample_table(clip).unwrap();
        assert!(t.samples.len() >= 150, "{} frames", t.samples.len());
        let track = TrackInfo { sample_entry: &t.sample_entry, width: t.width, height: t.height };
        t.samples
            .chunks(per_segment)
            .map(|frames| {
                let mut out = Vec::new();
                write_init(&track, b"{}", &mut out);
                let mut gop_starts: Vec<usize> = (0..frames.len()).filter(|&i| frames[i].is_sync).collect();
                assert_eq!(gop_starts.first(), Some(&0), "segments cut at keyframes");
                gop_starts.push(frames.len());
                let mut t90k = 0;
                for (n, g) in gop_starts.windows(2).enumerate() {
                    let gop = &frames[g[0]..g[1]];
                    let samples: Vec<Sample> =
                        gop.iter().map(|s| Sample { duration: s.duration, size: s.size, is_sync: s.is_sync }).collect();
                    write_fragment_header(n as u32 + 1, t90k, &samples, &mut out);
                    for s in gop {
                        out.extend_from_slice(&clip[s.offset as usize..(s.offset + u64::from(s.size)) as usize]);
                        t90k += u64::from(s.duration);
                    }
                }
                out
            })
            .collect()
    }

    #[test]
    fn real_h264_across_segments_a_gap_and_a_resolution_change_plays_in_ffmpeg() {
        if !have("ffmpeg") || !have("ffprobe") {
            eprintln!("skipped: ffmpeg/ffprobe not on PATH");
            return;
        }
        let dir = std::env::temp_dir().join(format!("cradle-evidence-mp4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = encode(&dir, "a.mp4", "testsrc=size=320x240:rate=25");
        let large = encode(&dir, "b.mp4", "testsrc2=size=640x360:rate=25");
        // Three 2 s segments at 320×240, a 1 s gap, two 3 s segments at 640×360.
        let mut segs = cradle_segments(&small, 50);
        segs.truncate(3);
        segs.extend(cradle_segments(&large, 75).into_iter().take(2));
        let starts = [T0, T0 + 2 * S, T0 + 4 * S, T0 + 7 * S, T0 + 10 * S];
        let tabs: Vec<SegmentTable> = segs.iter().map(|s| sample_table(s).unwrap()).collect();
        assert_ne!(tabs[0].sample_entry, tabs[3].sample_entry);
        let inputs: Vec<Input<'_>> =
            starts.iter().zip(&tabs).map(|(&start_us, table)| Input { start_us, table }).collect();

        // 0.5 s → 11.5 s: starts at the keyframe at 1 s; ends inside the last segment,
        // whose frames at 10.00 … 11.48 s are in (38 of them), the last cut to 20 ms.
        let plan = plan(&inputs, T0 + 500_000, T0 + 11_500_000).unwrap();
        let frames = 25 + 50 + 50 + 75 + 38;
        assert_eq!((plan.frames, plan.sample_entries, plan.width, plan.height), (frames, 2, 640, 360));
        assert_eq!((plan.actual_start_us, plan.actual_end_us), (T0 + S, T0 + 11_500_000));
        assert!(plan.codecs.iter().all(|c| c.starts_with("avc1.")), "{:?}", plan.codecs);

        let srcs: Vec<&[u8]> = segs.iter().map(|s| &s[..]).collect();
        let out = dir.join("export.mp4");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
        plan.write_to(&srcs, &mut f).unwrap();
        f.flush().unwrap();
        drop(f);
        let file = std::fs::read(&out).unwrap();
        let want: Vec<(usize, usize)> = (25..50)
            .map(|k| (0, k))
            .chain((1..3).flat_map(|s| (0..50).map(move |k| (s, k))))
            .chain((0..75).map(|k| (3, k)))
            .chain((0..38).map(|k| (4, k)))
            .collect();
        // A resolution change: in-band parameter sets before every keyframe.
        let t = tables(&file);
        assert_eq!(assert_samples_copied(&file, &t, &srcs, &tabs, &want).len(), t.sync.len());

        let path = out.to_str().unwrap();
        #[rustfmt::skip]
        let (probe, _) = run("ffprobe", &[
            "-v", "error", "-count_frames", "-select_streams", "v:0",
            "-show_entries", "format=duration:stream=nb_read_frames", "-of", "default=nw=1", path,
        ]);
        let field = |k: &str| {
            let line = probe.lines().find_map(|l| l.strip_prefix(k)).unwrap_or_else(|| panic!("{k} in {probe}"));
            line.trim().parse::<f64>().unwrap()
        };
        assert_eq!(field("nb_read_frames=") as u64, frames, "{probe}");
        let duration = field("duration=");
        assert!((duration - 10.5).abs() <= 0.04, "duration {duration} s, planned 10.5 s");

        let (progress, errors) =
            run("ffmpeg", &["-v", "error", "-nostats", "-progress", "pipe:1", "-i", path, "-f", "null", "-"]);
        assert_eq!(errors, "", "decoder errors");
        let decoded = progress.lines().filter_map(|l| l.strip_prefix("frame=")).next_back().unwrap_or("?");
        assert_eq!(decoded.trim(), frames.to_string(), "{progress}");

        // Each frame decodes at its own size, and the first frame after the gap shows at
        // its wall time: 7 s − 1 s = 6 s into the file.
        #[rustfmt::skip]
        let (shown, _) = run("ffprobe", &[
            "-v", "error", "-select_streams", "v:0",
            "-show_entries", "frame=pts_time,width,height", "-of", "compact=p=0", path,
        ]);
        // (Frames with side data, such as the first after new parameter sets, are
        // followed by an empty line for the side data section.)
        let shown: Vec<(f64, String)> = shown
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let kv = |k: &str| l.split('|').find_map(|f| f.strip_prefix(k)).unwrap_or_default().to_owned();
                (kv("pts_time=").parse().unwrap(), format!("{}x{}", kv("width="), kv("height=")))
            })
            .collect();
        assert_eq!(shown.iter().filter(|(_, s)| s == "320x240").count(), 125);
        assert_eq!(shown.iter().filter(|(_, s)| s == "640x360").count(), 113);
        let first_large = shown.iter().find(|(_, s)| s == "640x360").unwrap().0;
        assert!((first_large - 6.0).abs() < 0.001, "first 640x360 frame at {first_large} s");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
