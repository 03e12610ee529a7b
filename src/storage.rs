//! Object storage for finished segments: a local directory (the embedded default) or
//! an S3 bucket, through `object_store`.
//!
//! The key scheme is the contract that lets `cradle reindex` rebuild the index from
//! the bucket alone: `CAMERA/YYYY-MM-DD/CAMERA_YYYYMMDDTHHMMSS.ffffffZ.mp4`. Keys of one
//! camera sort by start time, and each object carries its own codec parameters and
//! Cradle metadata (see `record::fmp4`).
//!
//! Segment PUTs to S3 carry the segment's SHA-256 for the server to check, and with
//! `[storage] object_lock` an Object Lock retention (see [`s3_put`]); everything else
//! goes through `object_store`.

mod s3_put;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::config::{CameraId, StorageConfig};
use crate::time::{format_compact, format_day, parse_compact, WallUs};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("storage {0}")]
    Store(#[from] object_store::Error),
    #[error("storage: local file: {0}")]
    Io(#[from] std::io::Error),
    /// A request `object_store` cannot make (the Object Lock PUT and bucket check)
    /// failed or was refused; the text names the request and the server's answer.
    #[error("storage: {0}")]
    Request(String),
}

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Where segment puts go (everything else goes through `store`).
    segments: SegmentStore,
    pub description: String,
}

#[derive(Clone)]
enum SegmentStore {
    /// A local directory: puts bypass `object_store` there, they hard-link (or copy) the
    /// spool file and fsync, which `object_store`'s local store does not.
    Local(PathBuf),
    /// S3: PUTs with the segment's SHA-256 (and a retention with `[storage] object_lock`).
    S3(Arc<s3_put::SegmentPut>),
}

/// An object as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the store last wrote it (S3: the PUT; a local directory: the file's mtime).
    pub last_modified_us: WallUs,
}

impl Storage {
    pub fn from_config(cfg: &StorageConfig) -> Result<Storage, StorageError> {
        if let Some(dir) = cfg.url.strip_prefix("file://") {
            let root = PathBuf::from(dir);
            std::fs::create_dir_all(&root)
                .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", root.display())))?;
            let root = root.canonicalize()?;
            // Deleting a day's last segment removes its emptied directories (the sweeper).
            let store = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
            return Ok(Storage {
                store: Arc::new(store),
                description: format!("directory {}", root.display()),
                segments: SegmentStore::Local(root),
            });
        }
        let rest = cfg
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| StorageError::Config(format!("unsupported storage url {:?}", cfg.url)))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(cfg.allow_http)
            .with_region(cfg.region.clone().unwrap_or_else(|| "us-east-1".into()))
            // Cradle retries uploads itself, forever, from the spool; the client should
            // fail fast so the backlog and the alarm reflect reality.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120))
                    .with_allow_http(cfg.allow_http),
            );
        if let Some(e) = &cfg.endpoint {
            // Path-style requests: Garage, MinIO and Ceph are usually addressed by IP or a
            // single host name without wildcard DNS.
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &cfg.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let s3 = b.build()?;
        let description = format!(
            "s3://{bucket}/{prefix} at {}",
            cfg.endpoint.as_deref().unwrap_or("AWS")
        );
        let segment_put = s3_put::SegmentPut::new(s3.clone(), bucket, prefix, cfg.allow_http, cfg.object_lock)?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Storage { store, segments: SegmentStore::S3(Arc::new(segment_put)), description })
    }

    /// Object Lock retains each segment until its start plus `days` (the policy floor;
    /// [`crate::config::RETENTION_FLOOR_DAYS`] until this is called). Only the recorder's storage puts.
    pub fn lock_retention_days(self, days: u32) -> Storage {
        if let SegmentStore::S3(p) = &self.segments {
            p.set_retain_days(days);
        }
        self
    }

    /// With `[storage] object_lock`: `Ok` when the bucket has Object Lock enabled;
    /// [`StorageError::Config`] when the server says it has not (or cannot: Garage),
    /// which must stop start-up; any other error when the server could not be asked.
    /// Without Object Lock: `Ok` at once.
    pub async fn check_object_lock(&self) -> Result<(), StorageError> {
        match &self.segments {
            SegmentStore::S3(p) if p.object_lock() => p.check_bucket().await,
            _ => Ok(()),
        }
    }

    pub fn object_lock(&self) -> bool {
        matches!(&self.segments, SegmentStore::S3(p) if p.object_lock())
    }

    /// Stores the finished spool file `path` as object `key`, durably: when this returns
    /// Ok, the object survives a crash of this process and (for a local directory) a
    /// power cut, and the spool copy may be deleted. `sha256` (hex) is the file's SHA-256,
    /// as its index row has it.
    ///
    /// A local directory on the spool's filesystem gets a hard link (no bytes copied: a
    /// segment is written once, by the recorder); elsewhere the file is copied in the
    /// kernel. S3 uploads the file memory-mapped, so a 30 MB segment never sits on the
    /// heap, and refuses it unless the bytes it received hash to `sha256` (see
    /// [`s3_put`]). Storing the same segment twice (a crash between upload and index) is
    /// a no-op.
    pub async fn put_file(&self, key: &str, path: &Path, sha256: &str) -> Result<(), StorageError> {
        let put = match &self.segments {
            SegmentStore::S3(put) => put,
            SegmentStore::Local(root) => {
                let (dst, src) = (root.join(key), path.to_owned());
                return tokio::task::spawn_blocking(move || link_or_copy(&src, &dst))
                    .await
                    .expect("local store task panicked")
                    .map_err(StorageError::Io);
            }
        };
        let digest: [u8; 32] = hex::decode(sha256)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| StorageError::Request(format!("{key}: {sha256:?} is not a SHA-256 in hex")))?;
        let file = std::fs::File::open(path)?;
        // SAFETY: a finished spool file is never written again (the recorder renamed it
        // from `.partial` after its last write, and recovery only truncates `.partial`
        // files before the uploader starts), so the mapping cannot change under us.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        put.put(key, Bytes::from_owner(map), &digest).await
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        Ok(self.store.get(&ObjPath::from(key)).await?.bytes().await?)
    }

    /// Bytes `range` of the object at `key` (a ranged GET; a `pread` for a local directory).
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes, StorageError> {
        Ok(self.store.get_range(&ObjPath::from(key), range).await?)
    }

    /// Puts `data` at `key` as it is (through `object_store`, never locked): tools and
    /// tests that restore or plant objects. The recorder uses [`Storage::put_file`].
    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.store.put(&ObjPath::from(key), PutPayload::from(data)).await?;
        Ok(())
    }

    /// Whether `key` exists (a HEAD request).
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self.store.head(&ObjPath::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The objects directly under `prefix` (all, when `None`) and the "directories"
    /// (common prefixes, without their trailing `/`) one level down: the camera ids at
    /// the top, the days under a camera.
    pub async fn list_dir(&self, prefix: Option<&str>) -> Result<(Vec<String>, Vec<ObjectInfo>), StorageError> {
        let p = prefix.map(ObjPath::from);
        let r = self.store.list_with_delimiter(p.as_ref()).await?;
        let dirs = r.common_prefixes.into_iter().map(|d| d.to_string()).collect();
        Ok((dirs, r.objects.into_iter().map(object_info).collect()))
    }

    /// Every object under `prefix` (or all), with its last modification time.
    pub async fn list_objects(&self, prefix: Option<&str>) -> Result<Vec<ObjectInfo>, StorageError> {
        let p = prefix.map(ObjPath::from);
        let metas: Vec<_> = self.store.list(p.as_ref()).try_collect().await?;
        Ok(metas.into_iter().map(object_info).collect())
    }

    /// Every object under `prefix` (or all), as (key, size).
    pub async fn list(&self, prefix: Option<&str>) -> Result<Vec<(String, u64)>, StorageError> {
        let p = prefix.map(ObjPath::from);
        let metas: Vec<_> = self.store.list(p.as_ref()).try_collect().await?;
        Ok(metas.into_iter().map(|m| (m.location.to_string(), m.size)).collect())
    }

    /// Deletes `keys` (the sweeper's step (b)). A key already gone counts as deleted, so
    /// a sweep that crashed part-way can be repeated. On S3 this is one multi-object
    /// `DeleteObjects` request per 1000 keys; a local directory deletes file by file.
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        let paths: Vec<object_store::Result<ObjPath>> = keys.iter().map(|k| Ok(ObjPath::from(k.as_str()))).collect();
        let mut done = self.store.delete_stream(futures::stream::iter(paths).boxed());
        while let Some(r) = done.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A cheap request that fails when storage is unreachable or refuses our credentials.
    pub async fn probe(&self) -> Result<(), StorageError> {
        let mut s = self.store.list(Some(&ObjPath::from("cradle-probe")));
        s.try_next().await?;
        Ok(())
    }
}

fn object_info(m: object_store::ObjectMeta) -> ObjectInfo {
    ObjectInfo { key: m.location.to_string(), size: m.size, last_modified_us: m.last_modified.timestamp_micros() }
}

/// Puts `src` at `dst` in a local store: a hard link when both are on one filesystem,
/// else a copy through a temporary name. New directories and the entry are fsynced.
fn link_or_copy(src: &Path, dst: &Path) -> io::Result<()> {
    let dir = dst.parent().expect("object path has a parent");
    if !dir.is_dir() {
        fs::create_dir_all(dir)?;
        // The new day directory (and a new camera directory) must survive a power cut.
        for d in dir.ancestors().skip(1).take(2) {
            fs::File::open(d)?.sync_all()?;
        }
    }
    match fs::hard_link(src, dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return already_stored(src, dst),
        // Another filesystem (EXDEV), or one without hard links: copy.
        Err(_) => {
            let tmp = dir.join(format!(".{}.tmp", dst.file_name().expect("object has a name").to_string_lossy()));
            fs::copy(src, &tmp)?;
            fs::File::open(&tmp)?.sync_all()?;
            if dst.exists() {
                fs::remove_file(&tmp)?;
                return already_stored(src, dst);
            }
            fs::rename(&tmp, dst)?;
        }
    }
    fs::File::open(dir)?.sync_all()
}

/// `dst` exists: fine when it is this segment (a repeated upload), an error otherwise —
/// stored footage is never overwritten.
fn already_stored(src: &Path, dst: &Path) -> io::Result<()> {
    let (a, b) = (fs::metadata(src)?, fs::metadata(dst)?);
    if a.len() == b.len() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{} already exists with {} bytes (this segment has {}); not overwriting stored footage", dst.display(), b.len(), a.len()),
    ))
}

/// `CAMERA/YYYY-MM-DD/CAMERA_YYYYMMDDTHHMMSS.ffffffZ.mp4`: camera first so a camera's
/// footage is one prefix; the UTC day so listings of a day are cheap; the camera id
/// again in the file name so a downloaded file still says where it came from.
pub fn segment_key(camera: &CameraId, start_us: WallUs) -> String {
    format!("{camera}/{}/{camera}_{}.mp4", format_day(start_us), format_compact(start_us))
}

/// The inverse of [`segment_key`]: `None` for anything that is not a segment key.
pub fn parse_segment_key(key: &str) -> Option<(CameraId, WallUs)> {
    let mut parts = key.split('/');
    let (cam, day, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let camera = CameraId::parse(cam).ok()?;
    let stem = file.strip_suffix(".mp4")?;
    let ts = stem.strip_prefix(cam)?.strip_prefix('_')?;
    let start = parse_compact(ts)?;
    (format_day(start) == day).then_some((camera, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_keys_round_trip_and_sort_by_time() {
        let cam = CameraId::parse("room-1").unwrap();
        let t = 1_795_000_000_123_456;
        let k = segment_key(&cam, t);
        assert_eq!(parse_segment_key(&k), Some((cam.clone(), t)));
        assert!(segment_key(&cam, t) < segment_key(&cam, t + 1));
        assert!(segment_key(&cam, t) < segment_key(&cam, t + 86_400_000_000));
        assert_eq!(parse_segment_key("room-1/x.mp4"), None);
        assert_eq!(parse_segment_key("room-1/2020-01-01/room-2_20200101T000000.000000Z.mp4"), None);
    }
}
