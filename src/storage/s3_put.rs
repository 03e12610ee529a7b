//! Segment PUTs to S3, presigned and sent here rather than through `object_store`, for
//! two reasons.
//!
//! **The index's SHA-256 goes with the bytes.** Every PUT carries the segment's SHA-256,
//! computed once by the spool as it wrote the file, in `x-amz-checksum-sha256` (a signed
//! header). The server hashes what it receives and refuses the PUT if the two differ, so
//! a stored object is known to be byte for byte what the index describes. `object_store`
//! cannot take a digest it did not compute: its SigV4 signing hashes every payload itself
//! (`x-amz-content-sha256`), ~30 MB per minute-long segment, which doubled Cradle's
//! hashing — about 1 CPU-second per 4 Mbit/s camera-hour. A presigned URL signs the
//! headers and says `UNSIGNED-PAYLOAD`; the checksum header covers the payload instead.
//!
//! **S3 Object Lock** (`[storage] object_lock`): every segment is written in COMPLIANCE
//! mode, retained until its start plus the retention floor, so not even the bucket's
//! owner (nor a compromised Cradle) can delete or overwrite it before the floor has passed
//! (MISSION: footage must not be altered or deleted). GET, LIST and DELETE stay with
//! `object_store` (a DELETE without a version id adds a delete marker, which a locked
//! bucket allows; the locked version itself stays).
//!
//! `object_store` 0.14 cannot add headers to a PUT — its `Attribute`s are a closed set
//! (content type, cache control, …, user metadata) — and SigV4 must cover every `x-amz-*`
//! header a request carries (S3 refuses unsigned ones), so these headers cannot be
//! slipped in after it signed. Its [`Signer`] can presign a request with extra signed
//! headers and query parameters, though: the PUT and the bucket check are presigned
//! with the same credentials and region as every other request, then sent here.
//!
//! Per the S3 API (PutObject, "Object Lock"): `x-amz-object-lock-mode`,
//! `x-amz-object-lock-retain-until-date` (ISO 8601), and a `Content-MD5` header, which
//! S3 requires on any PUT with a retention (an SDK's checksum-algorithm header would do
//! too, but not every Object Lock server takes it). The bucket must have been created
//! with Object Lock enabled; `GET /bucket?object-lock` tells.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjPath;
use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions, Signer};

use super::{parse_segment_key, StorageError};
use crate::config::RETENTION_FLOOR_DAYS;
use crate::time::WallUs;

/// A presigned URL is used at once; this only bounds a clock skew or a slow upload start.
const PRESIGN_FOR: Duration = Duration::from_secs(15 * 60);

/// The slowest a segment PUT may send before it counts as stalled: 2 Mbit/s.
const SLOWEST_PUT_BYTES_PER_SEC: f64 = 256.0 * 1024.0;

/// How long one PUT of `bytes` may take: the client's two minutes, plus the body at
/// [`SLOWEST_PUT_BYTES_PER_SEC`]. A fixed limit would fail every upload of a large
/// segment on a modest uplink, and the backlog would grow for ever.
fn put_time_limit(bytes: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_secs_f64(bytes as f64 / SLOWEST_PUT_BYTES_PER_SEC)
}
const DAY_US: i64 = 86_400 * 1_000_000;

pub(super) struct SegmentPut {
    s3: AmazonS3,
    bucket: String,
    /// Key prefix inside the bucket (`s3://bucket/prefix`), without slashes at the ends.
    prefix: String,
    http: http_client::Client,
    /// With `[storage] object_lock`: the days each segment is retained past its start.
    retain_days: Option<AtomicU32>,
}

impl SegmentPut {
    pub(super) fn new(
        s3: AmazonS3,
        bucket: &str,
        prefix: &str,
        allow_http: bool,
        object_lock: bool,
    ) -> Result<SegmentPut, StorageError> {
        // The same limits as object_store's own client (see Storage::from_config). A
        // plain-HTTP endpoint is allowed only when [storage] allow_http says so.
        let http = http_client::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .https_only(!allow_http)
            .build()
            .map_err(|e| StorageError::Config(format!("HTTP client for segment uploads: {e}")))?;
        Ok(SegmentPut {
            s3,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            http,
            retain_days: object_lock.then(|| AtomicU32::new(RETENTION_FLOOR_DAYS)),
        })
    }

    pub(super) fn object_lock(&self) -> bool {
        self.retain_days.is_some()
    }

    pub(super) fn set_retain_days(&self, days: u32) {
        if let Some(d) = &self.retain_days {
            d.store(days.max(RETENTION_FLOOR_DAYS), Ordering::Relaxed);
        }
    }

    fn path(&self, key: &str) -> ObjPath {
        match self.prefix.is_empty() {
            true => ObjPath::from(key),
            false => ObjPath::from(format!("{}/{key}", self.prefix)),
        }
    }

    /// PUTs `data` as `key`, refused by the server unless its SHA-256 is `sha256`; with
    /// Object Lock, in COMPLIANCE mode until the segment's start plus the retention days.
    pub(super) async fn put(&self, key: &str, data: Bytes, sha256: &[u8; 32]) -> Result<(), StorageError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut headers = vec![
            ("content-type", "video/mp4".to_owned()),
            ("x-amz-checksum-sha256", b64.encode(sha256)),
        ];
        if let Some(days) = &self.retain_days {
            let (_, start) = parse_segment_key(key)
                .ok_or_else(|| StorageError::Request(format!("{key} is not a segment key: cannot compute its retention")))?;
            let until = retain_until(start, days.load(Ordering::Relaxed));
            let md5 = {
                let d = data.clone();
                // ~30 MB per segment: hashing is CPU work, off the async workers.
                tokio::task::spawn_blocking(move || b64.encode(Md5::digest(&d))).await.expect("MD5 task panicked")
            };
            headers.extend([
                ("content-md5", md5),
                ("x-amz-object-lock-mode", "COMPLIANCE".to_owned()),
                ("x-amz-object-lock-retain-until-date", until),
            ]);
        }
        let mut opts = SignedUrlOptions::default();
        for (name, value) in &headers {
            opts = opts.with_signed_header(HeaderName::from_static(name), header_value(value)?);
        }
        let url = self.s3.signed_url_opts(Method::PUT, &self.path(key), PRESIGN_FOR, &opts).await?;
        let mut req = self.http.put(url.as_str()).timeout(put_time_limit(data.len())).body(data);
        for (name, value) in &headers {
            req = req.header(*name, value.as_str());
        }
        let what = if self.object_lock() { "locked PUT" } else { "PUT" };
        let r = req.send().await.map_err(|e| StorageError::Request(format!("{what} of {key}: {e}")))?;
        if r.status().is_success() {
            return Ok(());
        }
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let why = s3_error(&body);
        // S3 answers InvalidRequest "Bucket is missing Object Lock Configuration", and
        // BadDigest (Garage: InvalidDigest) when the bytes do not match the checksum.
        let hint = if why.contains("Object Lock") {
            format!(" — was bucket {} created with Object Lock enabled?", self.bucket)
        } else if why.contains("Digest") || why.contains("hecksum") {
            " — the bytes the server received do not match the segment's SHA-256 (the spool file changed after it was hashed, or was damaged on the way)".to_owned()
        } else {
            String::new()
        };
        Err(StorageError::Request(format!("{what} of {key} refused: {status} {why}{hint}")))
    }

    /// `GET /bucket?object-lock`: `Ok` when Object Lock is enabled, `Config` when the
    /// server says it is not or cannot be, `Request` when the server could not be asked.
    pub(super) async fn check_bucket(&self) -> Result<(), StorageError> {
        let opts = SignedUrlOptions::default().with_query([("object-lock", "")]);
        // `…/bucket/?object-lock=`: an empty key names the bucket itself.
        let url = self.s3.signed_url_opts(Method::GET, &ObjPath::from(""), PRESIGN_FOR, &opts).await?;
        let r = self.http.get(url.as_str()).send().await.map_err(|e| {
            StorageError::Request(format!("asking bucket {} whether Object Lock is enabled: {e}", self.bucket))
        })?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let refuse = |why: String| {
            Err(StorageError::Config(format!(
                "[storage] object_lock = true, but {why}. Object Lock must be enabled when the bucket is created \
                 (AWS S3, MinIO and Ceph RGW support it; Garage does not): create a bucket with Object Lock \
                 enabled, or set object_lock = false"
            )))
        };
        if status.is_success() {
            return match body.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>") {
                true => Ok(()),
                false => refuse(format!("bucket {} does not have Object Lock enabled", self.bucket)),
            };
        }
        let code = s3_error(&body);
        if status.as_u16() == 501 || code.starts_with("NotImplemented") {
            return refuse(format!(
                "the S3 server of bucket {} does not implement Object Lock ({status} {code})",
                self.bucket
            ));
        }
        if code.starts_with("ObjectLockConfigurationNotFound") || code.starts_with("InvalidRequest") {
            return refuse(format!("bucket {} does not have Object Lock enabled ({status} {code})", self.bucket));
        }
        Err(StorageError::Request(format!(
            "asking bucket {} whether Object Lock is enabled: {status} {code}",
            self.bucket
        )))
    }
}

/// `start + days`, rounded up to the whole second (so never earlier), as S3 wants it.
pub(crate) fn retain_until(start: WallUs, days: u32) -> String {
    let us = start + i64::from(days) * DAY_US;
    let secs = us.div_euclid(1_000_000) + i64::from(us.rem_euclid(1_000_000) != 0);
    let t = time::OffsetDateTime::from_unix_timestamp(secs).expect("time in range");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn header_value(v: &str) -> Result<HeaderValue, StorageError> {
    HeaderValue::from_str(v).map_err(|e| StorageError::Request(format!("header value {v:?}: {e}")))
}

/// `Code: Message` from an S3 XML error body (or the start of whatever came back).
fn s3_error(body: &str) -> String {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{t}>"))? + start;
        Some(body[start..end].to_owned())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => body.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_start_plus_days_never_rounded_down() {
        // 2026-11-18T11:06:40Z exactly, and a microsecond later.
        let start = 1_795_000_000_000_000;
        assert_eq!(retain_until(start, 90), "2027-02-16T11:06:40Z");
        assert_eq!(retain_until(start + 1, 90), "2027-02-16T11:06:41Z");
        assert_eq!(retain_until(start, 120), "2027-03-18T11:06:40Z");
    }

    #[test]
    fn a_large_segment_gets_time_to_upload() {
        assert_eq!(put_time_limit(0), Duration::from_secs(120));
        // A minute of a 4 Mbit/s camera, and the largest default segment.
        assert_eq!(put_time_limit(30 << 20).as_secs(), 120 + 120);
        assert_eq!(put_time_limit(256 << 20).as_secs(), 120 + 1024);
    }

    #[test]
    fn s3_errors_read_as_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>InvalidRequest</Code><Message>Bucket is missing Object Lock Configuration</Message></Error>";
        assert_eq!(s3_error(body), "InvalidRequest: Bucket is missing Object Lock Configuration");
        assert_eq!(s3_error("<Error><Code>NotImplemented</Code></Error>"), "NotImplemented");
        assert_eq!(s3_error("plain text"), "plain text");
    }
}
