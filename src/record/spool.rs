//! The local spool: every segment is written here first, one fsynced fragment (one GOP)
//! at a time, and stays until object storage has it.
//!
//! Layout: `SPOOL/CAMERA/START.partial` while a segment is being written, renamed to
//! `SPOOL/CAMERA/START.mp4` when it is complete. After a crash, a `.partial` is cut
//! back to its last complete fragment (fMP4 makes that a valid file) and finished, so
//! kill -9 loses at most the GOP that was being collected in memory.
//!
//! Writes bypass the page cache (`O_DIRECT`) where the file system allows it: footage
//! is written once and read back rarely, and copying it into page-cache pages that the
//! kernel must allocate, write back and later reclaim was most of a recorder's CPU
//! (ffmpeg pays it too). Direct I/O needs whole aligned blocks, so each write starts at
//! the block holding the file's current end — that block's bytes are kept in memory and
//! written again — and ends zero-padded to a block boundary. A crash can therefore leave
//! up to one block of zeros after the last fragment; zeros are not a box, so recovery
//! cuts them off with any torn fragment. A finished segment is cut to its exact length.
//! Where `O_DIRECT` is refused (tmpfs, some network file systems) the same aligned
//! writes go through the page cache.
//!
//! On a direct file, a fragment is written without anyone waiting for it: the recorder
//! copies it into an aligned buffer, hashes it and submits one `RWF_DSYNC` write with
//! Linux AIO ([`super::aio`]), and takes the result at its next batch (before the next
//! fragment, or when the segment closes, at the latest). A failed write takes its fragment back: the file is
//! cut to its previous end and its state restored, as for a synchronous write. So that
//! the kernel need not wait for a write that extends the file, the file is preallocated
//! [`PREALLOCATE`] bytes at a time ahead of its footage; a crash leaves those blocks as
//! zeros after the last fragment, which recovery cuts like any padding.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{aio, fmp4};
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

/// Alignment of direct writes: offset, length and buffer address. 4096 covers every
/// logical block size Linux file systems use for `O_DIRECT` (512 or 4096 bytes).
const BLOCK: usize = 4096;

/// Most bytes staged per direct write, a multiple of `BLOCK`: a whole fragment up to
/// this size (a 2 s GOP at 8 Mbit/s) goes out in one write, so the thread sleeps once
/// for the device, not once per slice; a larger one in several.
const STAGING_MAX: usize = 2 * 1024 * 1024;

/// Largest fragment written asynchronously (a 4 s GOP at 32 Mbit/s); a larger one goes
/// through the synchronous path, which writes it in `STAGING_MAX` windows.
const ASYNC_MAX: usize = 16 * 1024 * 1024;

/// Preallocation step for asynchronous writes: about 16 s of a 4 Mbit/s camera, so a
/// one-minute segment grows its file four times; at 50 cameras at most 400 MiB of the
/// spool is allocated ahead. Where that much is not free, just what the write needs.
const PREALLOCATE: u64 = 8 * 1024 * 1024;

thread_local! {
    /// One staging buffer per (blocking) thread, not per camera: spool writes are short
    /// and few run at once. It grows to the largest fragment the thread has written (at
    /// most `STAGING_MAX`); `BLOCK` spare bytes let the window start aligned.
    static STAGING: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A segment being written into the spool.
pub struct SegmentFile {
    file: File,
    path: PathBuf,
    camera: CameraId,
    meta: SegmentMeta,
    /// Bytes of footage in the file; on disk it may be followed by zero padding up to
    /// the next block boundary until `finish` cuts it.
    len: u64,
    /// The bytes of the last, partly filled block (`len % BLOCK` of them), written again
    /// in front of the next fragment.
    tail: Vec<u8>,
    direct: bool,
    sha: Sha256,
    next_seq: u32,
    duration_90k: u64,
    frames: u64,
    /// Asynchronous writes, on a direct file where the kernel offers them.
    aio: Option<AsyncWrites>,
}

/// What a fragment's write changes, as it was before (restored if the write fails).
struct Before {
    len: u64,
    tail: Vec<u8>,
    sha: Sha256,
    next_seq: u32,
    duration_90k: u64,
    frames: u64,
}

/// A buffer aligned for direct I/O.
struct Aligned {
    raw: Vec<u8>,
    skew: usize,
    len: usize,
}

impl Aligned {
    /// Capacity rounded up to 256 KiB, so later fragments (sizes vary) reuse it rather
    /// than fault in fresh pages.
    fn new(len: usize) -> Aligned {
        const STEP: usize = 256 << 10;
        let raw = vec![0u8; len.div_ceil(STEP) * STEP + BLOCK];
        let skew = raw.as_ptr().align_offset(BLOCK);
        Aligned { raw, skew, len }
    }

    /// Reuses `self` if it can hold `len` bytes.
    fn reuse(self, len: usize) -> Aligned {
        if self.raw.len() - self.skew >= len {
            Aligned { len, ..self }
        } else {
            Aligned::new(len)
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.skew..self.skew + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.skew..self.skew + self.len]
    }
}

/// A fragment's write in flight: its buffer (the kernel reads it until the write
/// completes) and the state to restore if it fails.
struct InFlight {
    buf: Aligned,
    before: Before,
}

/// Fields drop in order: the context first (waiting for a write in flight), then the
/// buffer that write reads.
struct AsyncWrites {
    ctx: aio::Context,
    in_flight: Option<InFlight>,
    /// The file's size: footage plus the blocks preallocated after it.
    allocated: u64,
}

/// Buffers of finished writes, for the next ones (of any camera): a write holds its
/// buffer only until its result is taken, so at 50 cameras a dozen or so are in use,
/// not one per camera.
static BUFFERS: std::sync::Mutex<Vec<Aligned>> = std::sync::Mutex::new(Vec::new());
/// Most buffers kept for reuse.
const BUFFERS_KEPT: usize = 16;

fn take_buffer(len: usize) -> Aligned {
    let pooled = BUFFERS.lock().unwrap_or_else(|e| e.into_inner()).pop();
    match pooled {
        Some(b) => b.reuse(len),
        None => Aligned::new(len),
    }
}

fn give_buffer(b: Aligned) {
    let mut pool = BUFFERS.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < BUFFERS_KEPT {
        pool.push(b);
    }
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
        let file = OpenOptions::new().create_new(true).write(true).open(&path)?;
        let direct = set_direct(&file);
        let mut seg = SegmentFile {
            file,
            path,
            camera: camera.clone(),
            meta,
            len: 0,
            tail: Vec::with_capacity(BLOCK),
            direct,
            sha: Sha256::new(),
            next_seq: 1,
            duration_90k: 0,
            frames: 0,
            aio: None,
        };
        if let Err(e) = seg.write_after_end(&[&init]) {
            drop(seg.file);
            let _ = fs::remove_file(&seg.path);
            return Err(e);
        }
        sync_dir(&dir)?;
        if seg.direct {
            seg.aio = async_writes(seg.len.div_ceil(BLOCK as u64) * BLOCK as u64);
        }
        Ok(seg)
    }

    /// Whether this file's fragments are written asynchronously ([`Self::submit_fragment`]).
    pub fn is_async(&self) -> bool {
        self.aio.is_some()
    }

    /// Whether this file's writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
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

    /// Appends one fragment (moof + mdat) holding `frames`, in one write (several for a
    /// fragment over `STAGING_MAX`) and one `fdatasync` — per GOP, not per frame (the
    /// syscalls and the sleeps for the device dominate a recorder's CPU).
    /// `durations[i]` is the 90 kHz duration of `frames[i]`. On error the file still
    /// ends on its last complete fragment.
    pub fn append_fragment(&mut self, frames: &[Arc<Frame>], durations: &[u32]) -> io::Result<()> {
        self.settle_wait()?;
        let header = self.fragment_header(frames, durations);
        let mut parts: Vec<&[u8]> = Vec::with_capacity(frames.len() + 1);
        parts.push(&header);
        parts.extend(frames.iter().map(|f| &f.data[..]));
        self.write_after_end(&parts)?;
        self.count_fragment(frames, durations);
        Ok(())
    }

    /// The moof and mdat header of the next fragment.
    fn fragment_header(&self, frames: &[Arc<Frame>], durations: &[u32]) -> Vec<u8> {
        debug_assert_eq!(frames.len(), durations.len());
        let samples: Vec<fmp4::Sample> = frames
            .iter()
            .zip(durations)
            .map(|(f, &d)| fmp4::Sample { duration: d, size: f.data.len() as u32, is_sync: f.is_key })
            .collect();
        let mut header = Vec::with_capacity(128 + 16 * samples.len());
        fmp4::write_fragment_header(self.next_seq, self.duration_90k, &samples, &mut header);
        header
    }

    fn count_fragment(&mut self, frames: &[Arc<Frame>], durations: &[u32]) {
        self.next_seq += 1;
        self.duration_90k += durations.iter().map(|&d| d as u64).sum::<u64>();
        self.frames += frames.len() as u64;
    }

    /// Starts the durable write of one fragment (as [`Self::append_fragment`]) and
    /// returns without waiting for it; [`Self::settle`] takes its result. Cheap enough
    /// for the capture thread: a copy, the hash, and a preallocation every few seconds.
    /// `Ok(false)`: nothing was written, and this file (or this fragment, if very large)
    /// takes the synchronous path. An error (no room for the preallocation) leaves the
    /// file as it was.
    pub fn submit_fragment(&mut self, frames: &[Arc<Frame>], durations: &[u32]) -> io::Result<bool> {
        if !self.settle(std::time::Duration::ZERO)? {
            return Ok(false); // the caller settles first; never two writes in flight
        }
        let header = self.fragment_header(frames, durations);
        let payload = header.len() + frames.iter().map(|f| f.data.len()).sum::<usize>();
        let total = self.tail.len() + payload;
        let Some(aw) = self.aio.as_mut().filter(|_| total <= ASYNC_MAX) else { return Ok(false) };
        let offset = self.len - self.tail.len() as u64;
        let padded = total.div_ceil(BLOCK) * BLOCK;
        let end = offset + padded as u64;
        if end > aw.allocated {
            aw.allocated = preallocate(&self.file, aw.allocated, end)?;
        }
        let mut buf = take_buffer(padded);
        let out = buf.bytes_mut();
        let mut fill = 0;
        for part in std::iter::once(&self.tail[..]).chain([&header[..]]).chain(frames.iter().map(|f| &f.data[..])) {
            out[fill..fill + part.len()].copy_from_slice(part);
            fill += part.len();
        }
        out[fill..].fill(0);
        // SAFETY: the buffer moves into `in_flight` below and stays there, untouched,
        // until `settle` has the write's result or the context is dropped (first).
        if let Err(e) = unsafe { aw.ctx.submit_write(self.file.as_raw_fd(), buf.bytes(), offset) } {
            tracing::warn!(file = %self.path.display(), "asynchronous spool write refused ({e}); writing synchronously");
            self.aio = None;
            return Ok(false);
        }
        let before = Before {
            len: self.len,
            tail: std::mem::take(&mut self.tail),
            sha: self.sha.clone(),
            next_seq: self.next_seq,
            duration_90k: self.duration_90k,
            frames: self.frames,
        };
        // Hashed while the device writes.
        self.sha.update(&header);
        for f in frames {
            self.sha.update(&f.data);
        }
        let keep = fill % BLOCK;
        self.tail.extend_from_slice(&buf.bytes()[fill - keep..fill]);
        aw.in_flight = Some(InFlight { buf, before });
        self.len += payload as u64;
        self.count_fragment(frames, durations);
        Ok(true)
    }

    /// Takes the result of the write in flight, waiting up to `wait` for it; true when
    /// none is in flight any more. A failed write's fragment is taken back (the file cut
    /// to its previous end, the state as before) and its error returned.
    pub fn settle(&mut self, wait: std::time::Duration) -> io::Result<bool> {
        let Some(aw) = self.aio.as_mut() else { return Ok(true) };
        let Some(expected) = aw.in_flight.as_ref().map(|f| f.buf.len) else { return Ok(true) };
        let result = match aw.ctx.reap(wait) {
            Ok(None) => return Ok(false),
            Ok(Some(Ok(n))) if n == expected => Ok(()),
            Ok(Some(Ok(n))) => Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write: {n} of {expected} bytes"))),
            Ok(Some(Err(e))) => Err(e),
            Err(e) => {
                // The write's fate is unknown: once the context is gone (which waits for
                // it), count it as failed, and write synchronously from now on.
                let aw = self.aio.take().expect("checked above");
                drop(aw.ctx);
                self.take_back(aw.in_flight.expect("checked above").before);
                return Err(e);
            }
        };
        self.complete(result).map(|()| true)
    }

    /// Applies the result of the write in flight.
    fn complete(&mut self, result: io::Result<()>) -> io::Result<()> {
        let aw = self.aio.as_mut().expect("a write in flight");
        let flight = aw.in_flight.take().expect("a write in flight");
        match result {
            Ok(()) => {
                give_buffer(flight.buf);
                Ok(())
            }
            Err(e) => {
                give_buffer(flight.buf);
                self.take_back(flight.before);
                Err(e)
            }
        }
    }

    /// Takes a failed write's fragment back: the state as before it, the file cut to
    /// its previous end (rewritten blocks before that end carried the same bytes).
    fn take_back(&mut self, b: Before) {
        (self.len, self.tail, self.sha) = (b.len, b.tail, b.sha);
        (self.next_seq, self.duration_90k, self.frames) = (b.next_seq, b.duration_90k, b.frames);
        let _ = self.file.set_len(self.len);
        if let Some(aw) = self.aio.as_mut() {
            aw.allocated = self.len;
        }
    }

    /// A failure of the write in flight (which really completes first), as a device
    /// would report it: faults that real parts cannot produce on demand.
    #[cfg(test)]
    fn fail_in_flight(&mut self, e: io::Error) -> io::Error {
        let aw = self.aio.as_mut().expect("asynchronous writes");
        aw.ctx.reap(std::time::Duration::from_secs(30)).unwrap().expect("the write completed").unwrap();
        self.complete(Err(e)).unwrap_err()
    }

    /// Whether a write is in flight (its result not taken yet).
    pub fn writing(&self) -> bool {
        self.aio.as_ref().is_some_and(|aw| aw.in_flight.is_some())
    }

    /// Waits for the write in flight, if any (see [`Self::settle`]).
    pub fn settle_wait(&mut self) -> io::Result<()> {
        while !self.settle(std::time::Duration::from_millis(500))? {}
        Ok(())
    }

    /// Writes `parts` after the footage already in the file and makes them durable:
    /// aligned writes from the start of the block holding the current end (its bytes come
    /// from `tail`), the last one zero-padded to a block boundary, then `fdatasync`.
    /// Updates the length, the tail and the running SHA-256. On error the file is cut
    /// back to its previous length (the rewritten block carried the same bytes, so
    /// nothing before it changed) and the state is left as it was.
    fn write_after_end(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let mut offset = self.len - self.tail.len() as u64;
        let total = self.tail.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let window = total.div_ceil(BLOCK).max(1).saturating_mul(BLOCK).min(STAGING_MAX);
        let written = STAGING.with_borrow_mut(|staging| -> io::Result<usize> {
            if staging.len() < window + BLOCK {
                staging.resize(window + BLOCK, 0);
            }
            let skew = staging.as_ptr().align_offset(BLOCK);
            let buf = &mut staging[skew..skew + window];
            buf[..self.tail.len()].copy_from_slice(&self.tail);
            let mut fill = self.tail.len();
            for part in parts {
                let mut part = *part;
                while !part.is_empty() {
                    let n = part.len().min(window - fill);
                    buf[fill..fill + n].copy_from_slice(&part[..n]);
                    (fill, part) = (fill + n, &part[n..]);
                    if fill == window {
                        self.file.write_all_at(buf, offset)?;
                        (offset, fill) = (offset + window as u64, 0);
                    }
                }
            }
            let padded = fill.div_ceil(BLOCK) * BLOCK;
            buf[fill..padded].fill(0);
            self.file.write_all_at(&buf[..padded], offset)?;
            self.file.sync_data()?;
            let keep = fill % BLOCK;
            self.tail.clear();
            self.tail.extend_from_slice(&buf[fill - keep..fill]);
            Ok(parts.iter().map(|p| p.len()).sum())
        });
        match written {
            Ok(n) => {
                for part in parts {
                    self.sha.update(part);
                }
                self.len += n as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                if let Some(aw) = self.aio.as_mut() {
                    aw.allocated = self.len;
                }
                Err(e)
            }
        }
    }

    /// Renames to `.mp4` and returns the segment's index row. `wall_end_us` is the
    /// segment's end on the wall clock (its RTP duration, slewed toward the server clock).
    /// A segment without any fragment is removed and `None` returned.
    pub fn finish(mut self, wall_end_us: WallUs, drift_us: i64) -> io::Result<Option<SpooledSegment>> {
        self.settle_wait()?;
        drop(self.aio.take());
        if self.frames == 0 {
            drop(self.file);
            fs::remove_file(&self.path)?;
            return Ok(None);
        }
        // Cut the zero padding after the last fragment.
        if self.file.metadata()?.len() != self.len {
            self.file.set_len(self.len)?;
            self.file.sync_data()?;
        }
        drop(self.file);
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

/// Turns on `O_DIRECT` for `file`; false (and buffered writes) where the file system
/// refuses it.
fn set_direct(file: &File) -> bool {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) == 0
    }
}

/// Asynchronous writes for a direct file of `size` bytes, if the kernel offers them.
fn async_writes(size: u64) -> Option<AsyncWrites> {
    static SAID: std::sync::Once = std::sync::Once::new();
    match aio::Context::new() {
        Ok(ctx) => Some(AsyncWrites { ctx, in_flight: None, allocated: size }),
        Err(e) => {
            SAID.call_once(|| tracing::warn!("Linux AIO unavailable ({e}): spool writes wait on a thread"));
            None
        }
    }
}

/// Grows `file` from `size` to cover `end`, [`PREALLOCATE`] at a time (just to `end`
/// where that much is not free); answers the new size. The new blocks read as zeros.
fn preallocate(file: &File, size: u64, end: u64) -> io::Result<u64> {
    let step = end.div_ceil(PREALLOCATE) * PREALLOCATE;
    for target in [step, end] {
        // SAFETY: fallocate on a descriptor we own, with integer arguments only.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, size as libc::off_t, (target - size) as libc::off_t) } == 0 {
            return Ok(target);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSPC) || target == end {
            return Err(e);
        }
    }
    unreachable!("the last target returns")
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn params() -> StreamParams {
        StreamParams {
            codec: "avc1.640028".into(),
            sample_entry: fmp4::tests::sample_entry(b"avc1", 1920, 1080),
            width: 1920,
            height: 1080,
        }
    }

    /// A GOP of `n` frames of `size` bytes each (contents vary with `seed`).
    fn gop(n: usize, size: usize, seed: u8, params: &Arc<StreamParams>) -> Vec<Arc<Frame>> {
        (0..n)
            .map(|i| {
                let data: Vec<u8> = (0..size).map(|j| seed.wrapping_add((i * 31 + j) as u8)).collect();
                Arc::new(Frame { ts_90k: 0, arrival_us: 0, is_key: i == 0, data: Bytes::from(data), params: params.clone() })
            })
            .collect()
    }

    /// Fragments small and large: one within a block, one in a single write, one larger
    /// than the staging window (several writes), odd sizes so that every write starts
    /// mid-block.
    fn write_fragments(dir: &Path) -> (SegmentFile, Vec<Vec<Arc<Frame>>>) {
        let p = Arc::new(params());
        let cam = CameraId::parse("room-1").unwrap();
        let mut seg = SegmentFile::create(dir, &cam, 1_700_000_000_000_000, "run-1", &p).unwrap();
        let gops = [gop(3, 333, 1, &p), gop(50, 13_337, 2, &p), gop(200, 13_337, 3, &p), gop(7, 1_001, 4, &p)];
        for g in &gops {
            seg.append_fragment(g, &vec![3600; g.len()]).unwrap();
        }
        (seg, gops.into())
    }

    fn frame_count(gops: &[Vec<Arc<Frame>>]) -> i64 {
        gops.iter().map(|g| g.len() as i64).sum()
    }

    #[test]
    fn a_crash_leaves_at_most_a_padded_block_which_recovery_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, gops) = write_fragments(dir.path());
        let (len, path) = (seg.bytes(), seg.path.clone());
        eprintln!("direct I/O: {}", seg.is_direct());
        drop(seg); // killed before the segment was finished
        let on_disk = fs::metadata(&path).unwrap().len();
        assert!(on_disk >= len && on_disk < len + BLOCK as u64, "{on_disk} bytes on disk for {len}");
        let data = fs::read(&path).unwrap();
        assert!(data[len as usize..].iter().all(|&b| b == 0), "padding is zeros");

        let (segments, problems) = recover(dir.path()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(segments.len(), 1);
        let s = &segments[0];
        assert_eq!((s.row.frames, s.row.bytes), (frame_count(&gops), len as i64));
        let kept = fs::read(&s.path).unwrap();
        assert_eq!(kept.len() as u64, len, "cut to the last complete fragment");
        assert_eq!(kept[..], data[..len as usize], "nothing before the padding changed");
        assert_eq!(s.row.sha256, hex::encode(Sha256::digest(&kept)));
    }

    #[test]
    fn a_finished_segment_has_its_exact_length_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, gops) = write_fragments(dir.path());
        let done = seg.finish(1_700_000_060_000_000, 0).unwrap().expect("has frames");
        let data = fs::read(&done.path).unwrap();
        assert_eq!(data.len() as i64, done.row.bytes);
        assert_eq!(done.row.frames, frame_count(&gops));
        assert_eq!(done.row.sha256, hex::encode(Sha256::digest(&data)));
        let parsed = fmp4::parse(&data).unwrap();
        assert_eq!((parsed.frames as i64, parsed.complete_len), (frame_count(&gops), data.len() as u64));
        // Each fragment ends with its GOP's frames, byte for byte, in order.
        assert_eq!(parsed.fragments.len(), gops.len());
        for (f, g) in parsed.fragments.iter().zip(&gops) {
            let payload: Vec<u8> = g.iter().flat_map(|fr| fr.data.iter().copied()).collect();
            let end = (f.offset + f.len) as usize;
            assert_eq!(data[end - payload.len()..end], payload[..]);
        }
    }

    /// The same fragments as [`write_fragments`], written asynchronously (as recorders
    /// on the capture thread do), the last one left in flight. None where the file
    /// system refuses `O_DIRECT`.
    fn submit_fragments(dir: &Path) -> Option<(SegmentFile, Vec<Vec<Arc<Frame>>>)> {
        let p = Arc::new(params());
        let cam = CameraId::parse("room-1").unwrap();
        let mut seg = SegmentFile::create(dir, &cam, 1_700_000_000_000_000, "run-1", &p).unwrap();
        if !seg.is_direct() {
            eprintln!("no O_DIRECT on this file system: asynchronous writes not tested");
            return None;
        }
        assert!(seg.is_async(), "Linux AIO wherever O_DIRECT works");
        let gops = [gop(3, 333, 1, &p), gop(50, 13_337, 2, &p), gop(200, 13_337, 3, &p), gop(7, 1_001, 4, &p)];
        for g in &gops {
            seg.settle_wait().unwrap();
            assert!(seg.submit_fragment(g, &vec![3600; g.len()]).unwrap(), "written asynchronously");
        }
        Some((seg, gops.into()))
    }

    #[test]
    fn asynchronous_writes_make_the_same_segment_as_synchronous_ones() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let Some((mut seg, gops)) = submit_fragments(a.path()) else { return };
        seg.settle_wait().unwrap();
        let on_disk = fs::metadata(&seg.path).unwrap().len();
        assert!(on_disk >= PREALLOCATE && on_disk > seg.bytes(), "preallocated ahead of the footage: {on_disk} bytes");
        let (sync, _) = write_fragments(b.path());
        let x = seg.finish(1_700_000_060_000_000, 0).unwrap().expect("has frames");
        let y = sync.finish(1_700_000_060_000_000, 0).unwrap().expect("has frames");
        let data = fs::read(&x.path).unwrap();
        assert_eq!(data, fs::read(&y.path).unwrap(), "byte for byte");
        assert_eq!((x.row.bytes, x.row.frames), (data.len() as i64, frame_count(&gops)));
        assert_eq!(x.row.sha256, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn a_crash_during_asynchronous_writes_leaves_zeros_which_recovery_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let Some((seg, gops)) = submit_fragments(dir.path()) else { return };
        let (len, path) = (seg.bytes(), seg.path.clone());
        drop(seg); // killed with the last write in flight (the kernel still completes it)
        let data = fs::read(&path).unwrap();
        assert!(data.len() as u64 >= PREALLOCATE, "{} bytes on disk", data.len());
        assert!(data[len as usize..].iter().all(|&b| b == 0), "preallocated blocks read as zeros");

        let (segments, problems) = recover(dir.path()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let s = &segments[0];
        assert_eq!((s.row.frames, s.row.bytes), (frame_count(&gops), len as i64));
        let kept = fs::read(&s.path).unwrap();
        assert_eq!(kept[..], data[..len as usize]);
        assert_eq!(s.row.sha256, hex::encode(Sha256::digest(&kept)));
    }

    #[test]
    fn a_failed_asynchronous_write_takes_its_fragment_back() {
        let dir = tempfile::tempdir().unwrap();
        let Some((mut seg, gops)) = submit_fragments(dir.path()) else { return };
        seg.settle_wait().unwrap();
        let (len, frames) = (seg.bytes(), seg.frames);
        let p = Arc::new(params());
        let lost = gop(25, 20_000, 5, &p);
        assert!(seg.submit_fragment(&lost, &vec![3600; lost.len()]).unwrap());
        let e = seg.fail_in_flight(io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert_eq!((seg.bytes(), seg.frames), (len, frames), "the fragment is taken back");
        assert_eq!(fs::metadata(&seg.path).unwrap().len(), len, "and cut off the file");

        // The next fragment follows the last good one; the segment stays whole.
        let next = gop(10, 5_000, 6, &p);
        assert!(seg.submit_fragment(&next, &vec![3600; next.len()]).unwrap());
        let done = seg.finish(1_700_000_060_000_000, 0).unwrap().expect("has frames");
        let data = fs::read(&done.path).unwrap();
        let parsed = fmp4::parse(&data).unwrap();
        assert_eq!(parsed.fragments.len(), gops.len() + 1);
        assert_eq!((parsed.frames as i64, parsed.complete_len), (frame_count(&gops) + 10, data.len() as u64));
        assert_eq!(done.row.sha256, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn a_segment_torn_before_its_first_fragment_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cam = CameraId::parse("room-1").unwrap();
        let seg = SegmentFile::create(dir.path(), &cam, 1, "run-1", &Arc::new(params())).unwrap();
        let path = seg.path.clone();
        drop(seg);
        let (segments, problems) = recover(dir.path()).unwrap();
        assert!(segments.is_empty() && problems.is_empty());
        assert!(!path.exists());
    }
}
