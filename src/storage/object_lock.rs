//! S3 Object Lock: every segment is written in COMPLIANCE mode, retained until its start
//! plus the retention floor, so not even the bucket's owner (nor a compromised Cradle)
//! can delete or overwrite it before the floor has passed (MISSION: footage must not be
//! altered or deleted). Only the recorder's PUT is special; GET, LIST and DELETE stay
//! with `object_store` (a DELETE without a version id adds a delete marker, which a
//! locked bucket allows; the locked version itself stays).
//!
//! `object_store` 0.14 cannot add headers to a PUT — its `Attribute`s are a closed set
//! (content type, cache control, …, user metadata) — and SigV4 must cover every `x-amz-*`
//! header a request carries (S3 refuses unsigned ones), so the lock headers cannot be
//! slipped in after it signed. Its [`Signer`] can presign a request with extra signed
//! headers and query parameters, though: the PUT and the bucket check are presigned
//! with the same credentials and region as every other request, then sent here.
//!
//! Per the S3 API (PutObject, "Object Lock"): `x-amz-object-lock-mode`,
//! `x-amz-object-lock-retain-until-date` (ISO 8601), and a `Content-MD5` (or checksum)
//! header, which S3 requires on any PUT with a retention. The bucket must have been
//! created with Object Lock enabled; `GET /bucket?object-lock` tells.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjPath;
use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions, Signer};

use super::StorageError;
use crate::config::RETENTION_FLOOR_DAYS;
use crate::time::WallUs;

/// A presigned URL is used at once; this only bounds a clock skew or a slow upload start.
const PRESIGN_FOR: Duration = Duration::from_secs(15 * 60);
const DAY_US: i64 = 86_400 * 1_000_000;

pub(super) struct ObjectLock {
    s3: AmazonS3,
    bucket: String,
    /// Key prefix inside the bucket (`s3://bucket/prefix`), without slashes at the ends.
    prefix: String,
    http: http_client::Client,
    retain_days: AtomicU32,
}

impl ObjectLock {
    pub(super) fn new(
        s3: AmazonS3,
        bucket: &str,
        prefix: &str,
        allow_http: bool,
    ) -> Result<ObjectLock, StorageError> {
        // The same limits as object_store's own client (see Storage::from_config). A
        // plain-HTTP endpoint is allowed only when [storage] allow_http says so.
        let http = http_client::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .https_only(!allow_http)
            .build()
            .map_err(|e| StorageError::Config(format!("HTTP client for Object Lock: {e}")))?;
        Ok(ObjectLock {
            s3,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            http,
            retain_days: AtomicU32::new(RETENTION_FLOOR_DAYS),
        })
    }

    pub(super) fn set_retain_days(&self, days: u32) {
        self.retain_days.store(days.max(RETENTION_FLOOR_DAYS), Ordering::Relaxed);
    }

    fn path(&self, key: &str) -> ObjPath {
        match self.prefix.is_empty() {
            true => ObjPath::from(key),
            false => ObjPath::from(format!("{}/{key}", self.prefix)),
        }
    }

    /// PUTs `data` as `key` in COMPLIANCE mode until `start` plus the retention days.
    pub(super) async fn put(&self, key: &str, data: Bytes, start: WallUs) -> Result<(), StorageError> {
        let until = retain_until(start, self.retain_days.load(Ordering::Relaxed));
        let md5 = {
            let d = data.clone();
            // ~30 MB per segment: hashing is CPU work, off the async workers.
            tokio::task::spawn_blocking(move || base64::engine::general_purpose::STANDARD.encode(Md5::digest(&d)))
                .await
                .expect("MD5 task panicked")
        };
        let headers = [
            ("content-md5", md5),
            ("content-type", "video/mp4".to_owned()),
            ("x-amz-object-lock-mode", "COMPLIANCE".to_owned()),
            ("x-amz-object-lock-retain-until-date", until),
        ];
        let mut opts = SignedUrlOptions::default();
        for (name, value) in &headers {
            opts = opts.with_signed_header(HeaderName::from_static(name), header_value(value)?);
        }
        let url = self.s3.signed_url_opts(Method::PUT, &self.path(key), PRESIGN_FOR, &opts).await?;
        let mut req = self.http.put(url.as_str()).body(data);
        for (name, value) in &headers {
            req = req.header(*name, value.as_str());
        }
        let r = req.send().await.map_err(|e| StorageError::Request(format!("locked PUT of {key}: {e}")))?;
        if r.status().is_success() {
            return Ok(());
        }
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let why = s3_error(&body);
        // S3 answers InvalidRequest "Bucket is missing Object Lock Configuration".
        let hint = match why.contains("Object Lock") {
            true => format!(" — was bucket {} created with Object Lock enabled?", self.bucket),
            false => String::new(),
        };
        Err(StorageError::Request(format!("locked PUT of {key} refused: {status} {why}{hint}")))
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
    fn s3_errors_read_as_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>InvalidRequest</Code><Message>Bucket is missing Object Lock Configuration</Message></Error>";
        assert_eq!(s3_error(body), "InvalidRequest: Bucket is missing Object Lock Configuration");
        assert_eq!(s3_error("<Error><Code>NotImplemented</Code></Error>"), "NotImplemented");
        assert_eq!(s3_error("plain text"), "plain text");
    }
}
