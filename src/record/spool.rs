//! The local spool: every segment is written here first, one fsynced fragment (one GOP)
//! at a time, and stays until object storage has it.
//!
//! Layout: `SPOOL/CAMERA/START.partial` while a segment is being written, renamed to
//! `SPOOL/CAMERA/START.mp4` when it is complete. After a crash, a `.partial` is cut
//! back to its last complete fragment (fMP4 makes that a valid file) and finished, so
//! kill -9 loses at most the GOP that was being collected in memory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fmp4;
use crate::config::CameraId;
use crate::db::{SegmentRow, STATE_SPOOLED};
use crate::hub::{Frame, StreamParams};
use crate::storage::segment_key;
use crate::time::{format_compact, ticks_to_us, WallUs};

/// Cradle's metadata inside each segment (moov/udta/crdl), enough to rebuild its index
/// row from the object alone.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SegmentMeta {
    pub camera: String,
    pub start_us: WallUs,
    pub run_id: String,
    pub codec: String,
}

/// A segment being written into the spool.
pub struct SegmentFile {
    file: File,
    path: PathBuf,
    camera: CameraId,
    meta: SegmentMeta,
    len: u64,
    sha: Sha256,
    next_seq: u32,
    duration_90k: u64,
    frames: u64,
}

/// A complete segment in the spool, ready to upload.
#[derive(Debug, Clone)]
pub struct SpooledSegment {
    pub path: PathBuf,
    pub row: SegmentRow,
}

impl SegmentFile {
    /// Creates `START.partial` with the init part (ftyp+moov) and fsyncs it.
    pub fn create(
        spool_dir: &Path,
        camera: &CameraId,
        start_us: WallUs,
        run_id: &str,
        params: &StreamParams,
    ) -> io::Result<SegmentFile> {
        let dir = spool_dir.join(camera.as_str());
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.partial", format_compact(start_us)));
        let meta = SegmentMeta {
            camera: camera.to_string(),
            start_us,
            run_id: run_id.to_owned(),
            codec: params.codec.clone(),
        };
        let mut init = Vec::with_capacity(1024);
        let track = fmp4::TrackInfo { sample_entry: &params.sample_entry, width: params.width, height: params.height };
        fmp4::write_init(&track, &serde_json::to_vec(&meta).expect("meta serialises"), &mut init);
        let mut file = OpenOptions::new().create_new(true).write(true).open(&path)?;
        file.write_all(&init)?;
        file.sync_data()?;
        sync_dir(&dir)?;
        let mut sha = Sha256::new();
        sha.update(&init);
        Ok(SegmentFile {
            file,
            path,
            camera: camera.clone(),
            meta,
            len: init.len() as u64,
            sha,
            next_seq: 1,
            duration_90k: 0,
            frames: 0,
        })
    }

    pub fn start_us(&self) -> WallUs {
        self.meta.start_us
    }

    pub fn duration_90k(&self) -> u64 {
        self.duration_90k
    }

    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Appends one fragment (moof + mdat) holding `frames`, with one `writev` and one
    /// `fdatasync` — per GOP, not per frame (the syscalls dominate a recorder's CPU).
    /// `durations[i]` is the 90 kHz duration of `frames[i]`. On error the file is cut
    /// back to its previous end, so it still ends on a complete fragment.
    pub fn append_fragment(&mut self, frames: &[Arc<Frame>], durations: &[u32]) -> io::Result<()> {
        debug_assert_eq!(frames.len(), durations.len());
        let samples: Vec<fmp4::Sample> = frames
            .iter()
            .zip(durations)
            .map(|(f, &d)| fmp4::Sample { duration: d, size: f.data.len() as u32, is_sync: f.is_key })
            .collect();
        let mut header = Vec::with_capacity(128 + 16 * samples.len());
        fmp4::write_fragment_header(self.next_seq, self.duration_90k, &samples, &mut header);
        let mut slices = Vec::with_capacity(frames.len() + 1);
        slices.push(IoSlice::new(&header));
        slices.extend(frames.iter().map(|f| IoSlice::new(&f.data)));
        let total: u64 = slices.iter().map(|s| s.len() as u64).sum();
        if let Err(e) = write_all_vectored(&mut self.file, &mut slices).and_then(|_| self.file.sync_data()) {
            // Leave the file ending on its last complete fragment.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.sha.update(&header);
        for f in frames {
            self.sha.update(&f.data);
        }
        self.len += total;
        self.next_seq += 1;
        self.duration_90k += durations.iter().map(|&d| d as u64).sum::<u64>();
        self.frames += frames.len() as u64;
        Ok(())
    }

    /// Renames to `.mp4` and returns the segment's index row. `wall_end_us` is the
    /// segment's end on the wall clock (its RTP duration, slewed toward the server clock).
    /// A segment without any fragment is removed and `None` returned.
    pub fn finish(self, wall_end_us: WallUs, drift_us: i64) -> io::Result<Option<SpooledSegment>> {
        if self.frames == 0 {
            drop(self.file);
            fs::remove_file(&self.path)?;
            return Ok(None);
        }
        let done = self.path.with_extension("mp4");
        fs::rename(&self.path, &done)?;
        sync_dir(done.parent().expect("spool file has a parent"))?;
        let row = SegmentRow {
            camera_id: self.camera.to_string(),
            start_us: self.meta.start_us,
            end_us: wall_end_us,
            duration_90k: self.duration_90k as i64,
            bytes: self.len as i64,
            frames: self.frames as i64,
            codec: self.meta.codec.clone(),
            object_key: segment_key(&self.camera, self.meta.start_us),
            sha256: hex::encode(self.sha.finalize()),
            run_id: self.meta.run_id.clone(),
            drift_us,
            state: STATE_SPOOLED.into(),
        };
        Ok(Some(SpooledSegment { path: done, row }))
    }
}

fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "spool write returned 0")),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Builds an index row for a complete segment file's bytes (recovery and reindex).
pub fn row_from_bytes(data: &[u8], fallback_camera: Option<&CameraId>) -> Result<SegmentRow, String> {
    let parsed = fmp4::parse(data).map_err(|e| e.to_string())?;
    if parsed.frames == 0 {
        return Err("no complete fragment".into());
    }
    let meta: SegmentMeta = parsed
        .metadata
        .as_deref()
        .ok_or("no Cradle metadata (moov/udta/crdl)")
        .and_then(|m| serde_json::from_slice(m).map_err(|_| "unreadable Cradle metadata"))?;
    let camera = CameraId::parse(&meta.camera)
        .or_else(|e| fallback_camera.cloned().ok_or(e))?;
    let used = &data[..parsed.complete_len as usize];
    Ok(SegmentRow {
        camera_id: camera.to_string(),
        start_us: meta.start_us,
        end_us: meta.start_us + ticks_to_us(parsed.duration as i64),
        duration_90k: parsed.duration as i64,
        bytes: used.len() as i64,
        frames: parsed.frames as i64,
        codec: meta.codec,
        object_key: segment_key(&camera, meta.start_us),
        sha256: hex::encode(Sha256::digest(used)),
        run_id: meta.run_id,
        drift_us: 0,
        state: STATE_SPOOLED.into(),
    })
}

/// Brings the spool back after a crash: each `.partial` is cut to its last complete
/// fragment and finished (or removed if it holds none); every `.mp4` is returned for
/// upload, oldest first. Runs before any recorder starts.
pub fn recover(spool_dir: &Path) -> io::Result<(Vec<SpooledSegment>, Vec<String>)> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    fs::create_dir_all(spool_dir)?;
    for cam_entry in fs::read_dir(spool_dir)? {
        let cam_dir = cam_entry?.path();
        if !cam_dir.is_dir() {
            continue;
        }
        let camera = cam_dir.file_name().and_then(|n| n.to_str()).and_then(|n| CameraId::parse(n).ok());
        for entry in fs::read_dir(&cam_dir)? {
            let path = entry?.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext != "partial" && ext != "mp4" {
                continue;
            }
            let data = fs::read(&path)?;
            let path = if ext == "partial" {
                match fmp4::parse(&data) {
                    Ok(p) if p.frames > 0 => {
                        let f = OpenOptions::new().write(true).open(&path)?;
                        f.set_len(p.complete_len)?;
                        f.sync_all()?;
                        let done = path.with_extension("mp4");
                        fs::rename(&path, &done)?;
                        sync_dir(&cam_dir)?;
                        done
                    }
                    Ok(_) | Err(_) => {
                        // Torn before its first fragment completed: nothing recorded in it.
                        fs::remove_file(&path)?;
                        continue;
                    }
                }
            } else {
                path
            };
            let data = fs::read(&path)?;
            match row_from_bytes(&data, camera.as_ref()) {
                Ok(row) => out.push(SpooledSegment { path, row }),
                Err(e) => {
                    // Never delete what we cannot read: keep it for a human and say so.
                    let bad = path.with_extension("unreadable");
                    let _ = fs::rename(&path, &bad);
                    problems.push(format!("{}: {e} (kept as {})", path.display(), bad.display()));
                }
            }
        }
    }
    out.sort_by(|a, b| (a.row.start_us, &a.row.camera_id).cmp(&(b.row.start_us, &b.row.camera_id)));
    Ok((out, problems))
}

/// Free bytes on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}
