//! Fragmented MP4 (ISO/IEC 14496-12) for recorded segments: the writer the recorder
//! uses, and the parser that spool recovery and `cradle reindex` use.
//!
//! A segment is one file: `ftyp` + `moov` (one video track, empty sample tables, `mvex`,
//! and Cradle's metadata in `moov/udta/crdl`) followed by fragments, each a `moof` +
//! `mdat` holding one GOP. Because fragments are self-describing, a file cut after any
//! complete fragment is still a valid, playable MP4: that is what makes crash recovery
//! a truncation.

/// Codec parameters of the single video track. `sample_entry` is a complete
/// VisualSampleEntry box (`avc1`+`avcC` or `hvc1`+`hvcC`), as retina builds it.
pub struct TrackInfo<'a> {
    pub sample_entry: &'a [u8],
    pub width: u16,
    pub height: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub duration: u32,
    pub size: u32,
    pub is_sync: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentInfo {
    pub offset: u64,
    pub len: u64,
    pub base_decode_time: u64,
    pub duration: u64,
    pub samples: u32,
    pub first_is_sync: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSegment {
    /// Bytes of ftyp + moov.
    pub init_len: u64,
    pub sample_entry_type: [u8; 4],
    pub width: u16,
    pub height: u16,
    /// The payload of moov/udta/crdl.
    pub metadata: Option<Vec<u8>>,
    /// Complete fragments, in order.
    pub fragments: Vec<FragmentInfo>,
    /// End of the last complete fragment (== init_len if none); anything after is torn.
    pub complete_len: u64,
    pub duration: u64,
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

const TIMESCALE: u32 = 90_000;
const TRACK_ID: u32 = 1;

/// Writes a box: reserves the size, runs `body`, patches the size (§4.2).
fn bx(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A FullBox header: version and 24-bit flags (§4.2).
fn full(out: &mut Vec<u8>, version: u8, flags: u32) {
    out.push(version);
    out.extend_from_slice(&flags.to_be_bytes()[1..]);
}

fn u16be(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u32be(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn u64be(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// The unity transformation matrix (§8.2.2.3).
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// ftyp + moov. `metadata` goes into moov/udta/crdl (players ignore unknown udta boxes).
pub fn write_init(track: &TrackInfo<'_>, metadata: &[u8], out: &mut Vec<u8>) {
    let codec_brand: &[u8; 4] = if track.sample_entry.get(4..8) == Some(b"hvc1") { b"hvc1" } else { b"avc1" };
    // §4.3 ftyp: iso6 covers the boxes used here (tfdt v1, default-base-is-moof).
    bx(out, b"ftyp", |o| {
        o.extend_from_slice(b"iso6");
        u32be(o, 0);
        for b in [b"iso6", b"iso5", b"mp41", codec_brand] {
            o.extend_from_slice(b);
        }
    });
    bx(out, b"moov", |o| {
        // §8.2.2 mvhd: duration 0, the real durations are in the fragments.
        bx(o, b"mvhd", |o| {
            full(o, 0, 0);
            u32be(o, 0); // creation_time
            u32be(o, 0); // modification_time
            u32be(o, TIMESCALE);
            u32be(o, 0); // duration
            u32be(o, 0x0001_0000); // rate 1.0
            u16be(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 10]);
            MATRIX.iter().for_each(|&m| u32be(o, m));
            o.extend_from_slice(&[0; 24]); // pre_defined
            u32be(o, TRACK_ID + 1); // next_track_ID
        });
        bx(o, b"trak", |o| {
            // §8.3.2 tkhd: enabled | in_movie.
            bx(o, b"tkhd", |o| {
                full(o, 0, 3);
                u32be(o, 0);
                u32be(o, 0);
                u32be(o, TRACK_ID);
                u32be(o, 0); // reserved
                u32be(o, 0); // duration
                o.extend_from_slice(&[0; 8]);
                u16be(o, 0); // layer
                u16be(o, 0); // alternate_group
                u16be(o, 0); // volume: 0 for video
                u16be(o, 0);
                MATRIX.iter().for_each(|&m| u32be(o, m));
                u32be(o, (track.width as u32) << 16);
                u32be(o, (track.height as u32) << 16);
            });
            bx(o, b"mdia", |o| {
                bx(o, b"mdhd", |o| {
                    full(o, 0, 0);
                    u32be(o, 0);
                    u32be(o, 0);
                    u32be(o, TIMESCALE);
                    u32be(o, 0);
                    u16be(o, 0x55c4); // language "und" (§8.4.2.3, packed ISO 639-2/T)
                    u16be(o, 0);
                });
                bx(o, b"hdlr", |o| {
                    full(o, 0, 0);
                    u32be(o, 0);
                    o.extend_from_slice(b"vide");
                    o.extend_from_slice(&[0; 12]);
                    o.extend_from_slice(b"Cradle video\0");
                });
                bx(o, b"minf", |o| {
                    bx(o, b"vmhd", |o| {
                        full(o, 0, 1);
                        o.extend_from_slice(&[0; 8]);
                    });
                    bx(o, b"dinf", |o| {
                        bx(o, b"dref", |o| {
                            full(o, 0, 0);
                            u32be(o, 1);
                            bx(o, b"url ", |o| full(o, 0, 1)); // media in this file
                        });
                    });
                    bx(o, b"stbl", |o| {
                        bx(o, b"stsd", |o| {
                            full(o, 0, 0);
                            u32be(o, 1);
                            o.extend_from_slice(track.sample_entry);
                        });
                        // Empty tables: every sample lives in a fragment (§8.8.1).
                        for kind in [b"stts", b"stsc", b"stco"] {
                            bx(o, kind, |o| {
                                full(o, 0, 0);
                                u32be(o, 0);
                            });
                        }
                        bx(o, b"stsz", |o| {
                            full(o, 0, 0);
                            u32be(o, 0);
                            u32be(o, 0);
                        });
                    });
                });
            });
        });
        // §8.8.1 mvex/trex: the movie is fragmented.
        bx(o, b"mvex", |o| {
            bx(o, b"trex", |o| {
                full(o, 0, 0);
                u32be(o, TRACK_ID);
                u32be(o, 1); // default_sample_description_index
                u32be(o, 0);
                u32be(o, 0);
                u32be(o, 0);
            });
        });
        bx(o, b"udta", |o| bx(o, b"crdl", |o| o.extend_from_slice(metadata)));
    });
}

/// sample_flags (§8.8.3.1): a sync sample depends on nothing; others depend on earlier
/// samples and are marked non-sync, so players seek to keyframes.
const SYNC_FLAGS: u32 = 0x0200_0000;
const NON_SYNC_FLAGS: u32 = 0x0101_0000;

/// Appends `moof` + the `mdat` header for `samples`; the caller writes the sample bytes
/// (their sizes summed) right after.
pub fn write_fragment_header(sequence_number: u32, base_decode_time: u64, samples: &[Sample], out: &mut Vec<u8>) {
    let moof_start = out.len();
    let mut data_offset_pos = 0;
    bx(out, b"moof", |o| {
        bx(o, b"mfhd", |o| {
            full(o, 0, 0);
            u32be(o, sequence_number);
        });
        bx(o, b"traf", |o| {
            // §8.8.7 tfhd: default-base-is-moof (0x020000), so data offsets are relative
            // to this moof and fragments can be moved or cut independently.
            bx(o, b"tfhd", |o| {
                full(o, 0, 0x02_0000);
                u32be(o, TRACK_ID);
            });
            // §8.8.12 tfdt v1: 64-bit decode time of the first sample.
            bx(o, b"tfdt", |o| {
                full(o, 1, 0);
                u64be(o, base_decode_time);
            });
            // §8.8.8 trun: data-offset, sample-duration, -size, -flags present.
            bx(o, b"trun", |o| {
                full(o, 0, 0x0001 | 0x0100 | 0x0200 | 0x0400);
                u32be(o, samples.len() as u32);
                data_offset_pos = o.len();
                u32be(o, 0);
                for s in samples {
                    u32be(o, s.duration);
                    u32be(o, s.size);
                    u32be(o, if s.is_sync { SYNC_FLAGS } else { NON_SYNC_FLAGS });
                }
            });
        });
    });
    let payload: u64 = samples.iter().map(|s| s.size as u64).sum();
    let mdat_header = if payload + 8 > u32::MAX as u64 { 16 } else { 8 };
    let data_offset = (out.len() - moof_start + mdat_header) as u32;
    out[data_offset_pos..data_offset_pos + 4].copy_from_slice(&data_offset.to_be_bytes());
    if mdat_header == 8 {
        u32be(out, (payload + 8) as u32);
        out.extend_from_slice(b"mdat");
    } else {
        u32be(out, 1);
        out.extend_from_slice(b"mdat");
        u64be(out, payload + 16);
    }
}

/// A box header read from `data` at `pos`: (type, header length, total length).
fn header(data: &[u8], pos: usize) -> Option<([u8; 4], usize, u64)> {
    let h = data.get(pos..pos + 8)?;
    let size = u32::from_be_bytes(h[0..4].try_into().unwrap()) as u64;
    let kind: [u8; 4] = h[4..8].try_into().unwrap();
    match size {
        1 => {
            let large = u64::from_be_bytes(data.get(pos + 8..pos + 16)?.try_into().unwrap());
            Some((kind, 16, large))
        }
        0 => Some((kind, 8, (data.len() - pos) as u64)), // to end of file
        n => Some((kind, 8, n)),
    }
}

/// The children of a container box's body.
fn children(body: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let (kind, hl, len) = header(body, pos)?;
        if len < hl as u64 || pos as u64 + len > body.len() as u64 {
            return None;
        }
        let b = &body[pos + hl..pos + len as usize];
        pos += len as usize;
        Some((kind, b))
    })
}

fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(body).find(|(k, _)| k == kind).map(|(_, b)| b)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a segment held in memory. A torn final fragment is not an error: it is left
/// out and `complete_len` stops before it.
pub fn parse(data: &[u8]) -> Result<ParsedSegment, ParseError> {
    let (kind, _, ftyp_len) = header(data, 0).ok_or(ParseError::NotMp4)?;
    if &kind != b"ftyp" || ftyp_len < 8 {
        return Err(ParseError::NotMp4);
    }
    let mut pos = ftyp_len as usize;
    let (kind, hl, moov_len) = header(data, pos).ok_or(ParseError::TruncatedInit)?;
    if &kind != b"moov" {
        return Err(ParseError::Malformed { offset: pos as u64, reason: "expected moov after ftyp" });
    }
    if moov_len < hl as u64 || pos as u64 + moov_len > data.len() as u64 {
        return Err(ParseError::TruncatedInit);
    }
    let moov = &data[pos + hl..pos + moov_len as usize];
    let bad = |reason| ParseError::Malformed { offset: pos as u64, reason };
    let stsd = child(moov, b"trak")
        .and_then(|t| child(t, b"mdia"))
        .and_then(|m| child(m, b"minf"))
        .and_then(|m| child(m, b"stbl"))
        .and_then(|s| child(s, b"stsd"))
        .ok_or(bad("no trak/mdia/minf/stbl/stsd"))?;
    // stsd: FullBox header (4) + entry_count (4), then the sample entry box.
    let entry = stsd.get(8..).ok_or(bad("empty stsd"))?;
    let (entry_type, ehl, _) = header(entry, 0).ok_or(bad("no sample entry"))?;
    // VisualSampleEntry: 8 bytes SampleEntry + 16 predefined/reserved, then width, height.
    let dims = entry.get(ehl + 24..ehl + 28).ok_or(bad("short sample entry"))?;
    let metadata = child(moov, b"udta").and_then(|u| child(u, b"crdl")).map(|b| b.to_vec());
    pos += moov_len as usize;
    let init_len = pos as u64;

    let mut fragments = Vec::new();
    let mut duration = 0u64;
    let mut frames = 0u64;
    // Fragments: moof then mdat, until the data runs out or a fragment is incomplete.
    while let Some((kind, hl, moof_len)) = header(data, pos) {
        if &kind != b"moof" || moof_len < hl as u64 || pos as u64 + moof_len > data.len() as u64 {
            break;
        }
        let moof = &data[pos + hl..pos + moof_len as usize];
        let Some(info) = fragment_info(moof) else { break };
        let mdat_pos = pos + moof_len as usize;
        let Some((mkind, mhl, mdat_len)) = header(data, mdat_pos) else { break };
        // A size of 0 ("to end of file") would make any truncation look complete: not ours.
        let declared = be32(data, mdat_pos).unwrap_or(0);
        if &mkind != b"mdat" || declared == 0 || mdat_len < mhl as u64 || mdat_len - mhl as u64 != info.payload {
            break;
        }
        if mdat_pos as u64 + mdat_len > data.len() as u64 {
            break; // torn tail
        }
        let len = moof_len + mdat_len;
        fragments.push(FragmentInfo {
            offset: pos as u64,
            len,
            base_decode_time: info.base_decode_time,
            duration: info.duration,
            samples: info.samples,
            first_is_sync: info.first_is_sync,
        });
        duration += info.duration;
        frames += info.samples as u64;
        pos += len as usize;
    }
    Ok(ParsedSegment {
        init_len,
        sample_entry_type: entry_type,
        width: u16::from_be_bytes([dims[0], dims[1]]),
        height: u16::from_be_bytes([dims[2], dims[3]]),
        metadata,
        fragments,
        complete_len: pos as u64,
        duration,
        frames,
    })
}

struct MoofInfo {
    base_decode_time: u64,
    duration: u64,
    samples: u32,
    first_is_sync: bool,
    payload: u64,
}

/// Reads what recovery needs from a moof written by [`write_fragment_header`] (or any
/// moof whose trun carries durations and sizes).
fn fragment_info(moof: &[u8]) -> Option<MoofInfo> {
    let traf = child(moof, b"traf")?;
    let tfdt = child(traf, b"tfdt")?;
    let base_decode_time = match tfdt.first()? {
        1 => u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?),
        _ => be32(tfdt, 4)? as u64,
    };
    let trun = child(traf, b"trun")?;
    let flags = be32(trun, 0)? & 0x00ff_ffff;
    let count = be32(trun, 4)?;
    let mut at = 8;
    if flags & 0x0001 != 0 {
        at += 4; // data_offset
    }
    let first_flags_present = flags & 0x0004 != 0;
    if first_flags_present {
        at += 4;
    }
    let has = |bit: u32| flags & bit != 0;
    if !has(0x0100) || !has(0x0200) {
        return None; // no per-sample durations or sizes: not one of ours
    }
    let per = 4 * [0x0100, 0x0200, 0x0400, 0x0800].iter().filter(|&&b| has(b)).count();
    if trun.len() < at + per * count as usize {
        return None;
    }
    let (mut duration, mut payload, mut first_is_sync) = (0u64, 0u64, false);
    for i in 0..count as usize {
        let mut p = at + i * per;
        duration += be32(trun, p)? as u64;
        p += 4;
        payload += be32(trun, p)? as u64;
        p += 4;
        if i == 0 && has(0x0400) {
            first_is_sync = be32(trun, p)? & 0x0001_0000 == 0;
        }
    }
    Some(MoofInfo { base_decode_time, duration, samples: count, first_is_sync, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal avc1 sample entry (dimensions only; avcC contents are not parsed here).
    fn avc1(w: u16, h: u16) -> Vec<u8> {
        let mut e = Vec::new();
        bx(&mut e, b"avc1", |o| {
            o.extend_from_slice(&[0; 6]);
            u16be(o, 1);
            o.extend_from_slice(&[0; 16]);
            u16be(o, w);
            u16be(o, h);
            o.extend_from_slice(&[0; 50]);
            bx(o, b"avcC", |o| o.extend_from_slice(&[1, 0x64, 0, 0x28, 0xff, 0xe0, 0]));
        });
        e
    }

    fn segment(fragments: usize) -> Vec<u8> {
        let entry = avc1(1920, 1080);
        let mut out = Vec::new();
        write_init(&TrackInfo { sample_entry: &entry, width: 1920, height: 1080 }, b"{\"k\":1}", &mut out);
        let mut t = 0;
        for f in 0..fragments {
            let samples: Vec<Sample> =
                (0..50).map(|i| Sample { duration: 3600, size: 100 + i, is_sync: i == 0 }).collect();
            write_fragment_header(f as u32 + 1, t, &samples, &mut out);
            for s in &samples {
                out.extend(std::iter::repeat_n(0xAB, s.size as usize));
            }
            t += 50 * 3600;
        }
        out
    }

    #[test]
    fn written_segment_parses_back() {
        let data = segment(3);
        let p = parse(&data).unwrap();
        assert_eq!(p.fragments.len(), 3);
        assert_eq!(p.frames, 150);
        assert_eq!(p.duration, 150 * 3600);
        assert_eq!(p.complete_len, data.len() as u64);
        assert_eq!(&p.sample_entry_type, b"avc1");
        assert_eq!((p.width, p.height), (1920, 1080));
        assert_eq!(p.metadata.as_deref(), Some(&b"{\"k\":1}"[..]));
        assert_eq!(p.fragments[1].base_decode_time, 50 * 3600);
        assert!(p.fragments.iter().all(|f| f.first_is_sync));
    }

    #[test]
    fn every_truncation_keeps_only_whole_fragments() {
        let data = segment(3);
        let full = parse(&data).unwrap();
        let ends: Vec<u64> = full.fragments.iter().map(|f| f.offset + f.len).collect();
        for cut in 0..data.len() {
            match parse(&data[..cut]) {
                Ok(p) => {
                    assert!(p.complete_len <= cut as u64);
                    assert!(p.complete_len == p.init_len || ends.contains(&p.complete_len), "cut {cut}");
                    assert_eq!(p.fragments.len(), ends.iter().filter(|&&e| e <= cut as u64).count());
                }
                Err(_) => assert!((cut as u64) < full.init_len, "cut {cut} after the init part must parse"),
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let base = segment(2);
        for _ in 0..2000 {
            let mut d = base.clone();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % d.len();
                d[i] = (seed >> 32) as u8;
            }
            let _ = parse(&d);
            let _ = parse(&d[..(seed as usize) % d.len()]);
        }
        assert!(parse(b"").is_err());
        assert!(parse(b"\0\0\0\x08free").is_err());
    }
}
