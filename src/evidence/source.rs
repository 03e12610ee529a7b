//! Reading stored segments for playback and export: from object storage, or from the
//! spool while a segment still waits for upload.
//!
//! Playback needs only each segment's sample table (where every frame's bytes are), not
//! its video, until the player asks for a byte range. [`Sources::table`] therefore reads
//! just the boxes that describe the file — `ftyp`, `moov` and every `moof` — with ranged
//! reads, skipping each `mdat`, into a zero-filled buffer of the object's size (the
//! allocator's zeroed pages cost nothing until touched), which the fMP4 parser then
//! reads as if it were the whole file. That is ~31 small reads for a 60 s segment with
//! a 2 s GOP instead of ~30 MB; tables are cached. Exports read whole objects and check
//! each one's SHA-256 against the index ([`Sources::whole`]): evidence is made only
//! from footage proven unaltered.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::db::SegmentRow;
use crate::record::fmp4::{self, SegmentTable};
use crate::storage::{Storage, StorageError};
use crate::time::format_compact;

/// Parsed tables kept for playback (about 40 KB each for a 60 s, 25 fps segment).
const TABLE_CACHE: usize = 512;
/// The first read of a segment: ftyp + moov and usually the first moof.
const FIRST_READ: u64 = 64 * 1024;
/// Each later read of a box header: a moof with its trun fits in this for any GOP a
/// camera sends (16 bytes per sample).
const HEADER_READ: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("segment {key}: {source}")]
    Storage { key: String, source: StorageError },
    #[error("segment {key} is not in storage or in the spool")]
    Missing { key: String },
    #[error(
        "segment {key} does not match the index: SHA-256 {actual} ({bytes} bytes), indexed {expected} ({indexed_bytes} bytes); \
         it was altered or damaged, so it is not used as evidence"
    )]
    Altered { key: String, expected: String, actual: String, bytes: u64, indexed_bytes: i64 },
    #[error("segment {key}: {reason}")]
    Malformed { key: String, reason: String },
}

pub struct Sources {
    storage: Storage,
    spool_dir: PathBuf,
    tables: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, Arc<SegmentTable>>,
    order: VecDeque<String>,
}

impl Sources {
    pub fn new(storage: Storage, spool_dir: PathBuf) -> Sources {
        Sources { storage, spool_dir, tables: Mutex::new(Cache::default()) }
    }

    fn spool_path(&self, row: &SegmentRow) -> PathBuf {
        self.spool_dir.join(&row.camera_id).join(format!("{}.mp4", format_compact(row.start_us)))
    }

    /// A byte range of the segment, from storage, or from the spool while it waits there.
    pub async fn range(&self, row: &SegmentRow, range: std::ops::Range<u64>) -> Result<Bytes, SourceError> {
        if row.state == "spooled" {
            let path = self.spool_path(row);
            let r = range.clone();
            let local = tokio::task::spawn_blocking(move || read_file_range(&path, r)).await.ok().and_then(|r| r.ok());
            if let Some(b) = local {
                return Ok(b);
            }
            // Uploaded (and removed from the spool) since the row was read.
        }
        match self.storage.get_range(&row.object_key, range).await {
            Ok(b) => Ok(b),
            Err(StorageError::Store(object_store::Error::NotFound { .. })) => {
                Err(SourceError::Missing { key: row.object_key.clone() })
            }
            Err(e) => Err(SourceError::Storage { key: row.object_key.clone(), source: e }),
        }
    }

    /// The whole segment, checked against the index's SHA-256 and size.
    pub async fn whole(&self, row: &SegmentRow) -> Result<Bytes, SourceError> {
        let data = if row.state == "spooled" {
            let path = self.spool_path(row);
            match tokio::fs::read(&path).await {
                Ok(v) => Bytes::from(v),
                Err(_) => self.get(row).await?,
            }
        } else {
            self.get(row).await?
        };
        let (data, actual) = tokio::task::spawn_blocking(move || {
            let h = hex::encode(Sha256::digest(&data));
            (data, h)
        })
        .await
        .expect("hashing does not panic");
        if actual != row.sha256 || data.len() as i64 != row.bytes {
            return Err(SourceError::Altered {
                key: row.object_key.clone(),
                expected: row.sha256.clone(),
                actual,
                bytes: data.len() as u64,
                indexed_bytes: row.bytes,
            });
        }
        Ok(data)
    }

    async fn get(&self, row: &SegmentRow) -> Result<Bytes, SourceError> {
        match self.storage.get(&row.object_key).await {
            Ok(b) => Ok(b),
            Err(StorageError::Store(object_store::Error::NotFound { .. })) => {
                Err(SourceError::Missing { key: row.object_key.clone() })
            }
            Err(e) => Err(SourceError::Storage { key: row.object_key.clone(), source: e }),
        }
    }

    /// The segment's sample table, read box by box (see the module docs) and cached.
    pub async fn table(&self, row: &SegmentRow) -> Result<Arc<SegmentTable>, SourceError> {
        if let Some(t) = self.tables.lock().unwrap().map.get(&row.object_key) {
            return Ok(t.clone());
        }
        let skeleton = self.skeleton(row).await?;
        let key = row.object_key.clone();
        let table = fmp4::sample_table(&skeleton).map_err(|e| SourceError::Malformed { key: key.clone(), reason: e.to_string() })?;
        let table = Arc::new(table);
        let mut c = self.tables.lock().unwrap();
        if c.map.insert(key.clone(), table.clone()).is_none() {
            c.order.push_back(key);
        }
        while c.order.len() > TABLE_CACHE {
            if let Some(old) = c.order.pop_front() {
                c.map.remove(&old);
            }
        }
        Ok(table)
    }

    /// The object with every box but `mdat` read, `mdat` payloads left as zeros.
    async fn skeleton(&self, row: &SegmentRow) -> Result<Vec<u8>, SourceError> {
        let size = u64::try_from(row.bytes).unwrap_or(0);
        let bad = |reason: &str| SourceError::Malformed { key: row.object_key.clone(), reason: reason.to_owned() };
        let mut buf = vec![0u8; size as usize];
        let mut loaded = 0..0u64;
        let mut pos = 0u64;
        while pos + 8 <= size {
            // The box header (and, for the first read, the whole init part).
            let want = pos..(pos + 16).min(size);
            if !(loaded.start <= want.start && want.end <= loaded.end) {
                let len = if pos == 0 { FIRST_READ } else { HEADER_READ };
                loaded = pos..(pos + len).min(size);
                let b = self.range(row, loaded.clone()).await?;
                if b.len() as u64 != loaded.end - loaded.start {
                    return Err(bad("the object is shorter than the index says"));
                }
                buf[loaded.start as usize..loaded.end as usize].copy_from_slice(&b);
            }
            let p = pos as usize;
            let small = u32::from_be_bytes(buf[p..p + 4].try_into().expect("4 bytes")) as u64;
            let kind: [u8; 4] = buf[p + 4..p + 8].try_into().expect("4 bytes");
            let box_len = match small {
                0 => size - pos,
                1 if pos + 16 <= size => u64::from_be_bytes(buf[p + 8..p + 16].try_into().expect("8 bytes")),
                1 => return Err(bad("truncated 64-bit box size")),
                n => n,
            };
            if box_len < 8 || pos + box_len > size {
                // A torn tail: the parser stops at the last complete fragment too.
                break;
            }
            if &kind != b"mdat" && pos + box_len > loaded.end {
                let r = loaded.end.max(pos)..(pos + box_len + 16).min(size);
                let b = self.range(row, r.clone()).await?;
                if b.len() as u64 != r.end - r.start {
                    return Err(bad("the object is shorter than the index says"));
                }
                buf[r.start as usize..r.end as usize].copy_from_slice(&b);
                loaded = loaded.start.min(r.start)..r.end;
            }
            pos += box_len;
        }
        Ok(buf)
    }
}

fn read_file_range(path: &std::path::Path, range: std::ops::Range<u64>) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    f.read_exact_at(&mut buf, range.start)?;
    Ok(Bytes::from(buf))
}
