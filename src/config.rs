//! The one TOML configuration file, parsed and validated at the edge.
//!
//! Everything downstream trusts these types: camera ids are checked once here
//! (they appear in URLs and object keys), URLs are parsed, secrets written as
//! `${VAR}` are taken from the environment, and every failure names the file,
//! the key and the reason. `cradle check-config` runs exactly this code.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// A configuration error: which file, which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

/// A camera's stable id: lowercase letters, digits, `-` and `_`, 1–64 characters.
/// It is used in URLs and object keys, so it must never need escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CameraId(String);

impl CameraId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if s.is_empty() || s.len() > 64 {
            return Err(format!("camera id {s:?} must be 1 to 64 characters"));
        }
        if !s.chars().all(ok_char) || s.starts_with(['-', '_']) {
            return Err(format!(
                "camera id {s:?} may contain only lowercase letters, digits, '-' and '_' \
                 (and must start with a letter or digit)"
            ));
        }
        Ok(CameraId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtspTransport {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraConfig {
    pub id: CameraId,
    pub name: String,
    pub url: Url,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sub_url: Option<Url>,
    pub transport: RtspTransport,
    /// Days this camera's footage is kept, when longer than `[retention] days`.
    pub retention_days: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// `file:///abs/dir`, `file://./rel/dir` or `s3://bucket[/prefix]`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: bool,
    /// Write every segment with S3 Object Lock in COMPLIANCE mode, retained until its
    /// start plus the retention floor (the bucket must have Object Lock enabled).
    pub object_lock: bool,
    /// What the store can hold, for the storage forecast. A local directory's file
    /// system reports its own size; an S3 bucket has no size, so say it here.
    pub capacity_bytes: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct RecordingConfig {
    /// Target segment length; segments are cut at the first keyframe at or after it.
    pub segment_duration: Duration,
    /// A segment is also cut at the first keyframe once it holds this many bytes, so that
    /// one upload stays far below S3's 5 GB single-PUT limit and its time is bounded.
    pub segment_max_bytes: u64,
    /// Camera-clock drift from the server clock beyond which a recording run is re-anchored.
    pub max_drift: Duration,
    /// How long the capture thread lets frames gather in the sockets between batches at
    /// least while nobody watches live (see `capture`); zero handles every frame as it
    /// comes.
    pub batch: Duration,
}

#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Stop accepting new footage when the spool's file system has less than this free:
    /// the reserve keeps the database (often on the same disk) writable.
    pub min_free_bytes: u64,
    /// Optional cap on the spool backlog (bytes waiting for upload).
    pub max_bytes: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Number of simulated cameras served in-process by camsim.
    pub simulated_cameras: usize,
    pub camsim_listen: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub storage: StorageConfig,
    pub recording: RecordingConfig,
    pub spool: SpoolConfig,
    pub cameras: Vec<CameraConfig>,
    pub demo: Option<DemoConfig>,
    pub auth: AuthConfig,
    pub retention: RetentionConfig,
    pub policy: PolicyConfig,
    pub watchdog: WatchdogConfig,
    pub alarms: AlarmsConfig,
    /// Live view over WebRTC (WHEP): ports, addresses, STUN/TURN, per-family limits.
    pub live: crate::live::config::LiveConfig,
    /// The address users reach Cradle at (behind a TLS proxy: `https://…`). Session
    /// cookies are marked `Secure` when it is https.
    pub public_url: Option<Url>,
    /// The centre's language for the web pages when a user has not chosen one
    /// (`[server] language`); unset, pages follow the browser.
    pub language: Option<Language>,
    /// Snapshots and tamper checks (`[snapshots]`).
    pub snapshots: SnapshotsConfig,
}

/// The languages of the web pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Zh,
    En,
}

/// `[snapshots]`: every `interval_seconds` each camera's newest keyframe is decoded
/// (never every frame) into the JPEG the console shows and the picture the tamper
/// checks read; `[snapshots.tamper]` holds the thresholds every camera starts from
/// (each camera may override them through the API).
#[derive(Clone, Debug)]
pub struct SnapshotsConfig {
    pub interval: Duration,
    pub tamper: crate::snapshot::tamper::Thresholds,
}

impl Default for SnapshotsConfig {
    fn default() -> Self {
        SnapshotsConfig { interval: Duration::from_secs(10), tamper: Default::default() }
    }
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// A session ends this long after login, whatever happens.
    pub session_lifetime: Duration,
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
    /// Failed logins for one account within `failure_window` before it is throttled.
    pub max_failures_per_account: u32,
    /// Failed logins from one address within `failure_window` before it is throttled.
    pub max_failures_per_addr: u32,
    pub failure_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_lifetime: Duration::from_secs(12 * 3600),
            idle_timeout: Duration::from_secs(2 * 3600),
            max_failures_per_account: 5,
            max_failures_per_addr: 20,
            failure_window: Duration::from_secs(15 * 60),
        }
    }
}

/// The retention floor the rules set: no footage younger than this is ever deleted, and
/// no setting may lower it. Policy profiles may raise it.
pub const RETENTION_FLOOR_DAYS: u32 = 90;

#[derive(Clone, Debug)]
pub struct RetentionConfig {
    /// Days footage is kept (≥ the policy's floor); cameras may keep longer.
    pub days: u32,
    /// How often the sweeper deletes expired footage.
    pub sweep_interval: Duration,
    /// Segments deleted per batch (one multi-object delete, three statements).
    pub sweep_batch: usize,
    /// How often the reconciler compares the index with the bucket.
    pub reconcile_interval: Duration,
}

/// Jurisdiction rules. A profile can only make Cradle stricter than the national floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// 90 days; parents may watch live.
    National,
    /// 90 days; no parent live view.
    Beijing,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::National => "national",
            Profile::Beijing => "beijing",
        }
    }

    /// The retention floor of this profile: never below [`RETENTION_FLOOR_DAYS`].
    pub fn floor_days(self) -> u32 {
        match self {
            Profile::National | Profile::Beijing => RETENTION_FLOOR_DAYS,
        }
    }

    pub fn parent_live_view(self) -> bool {
        match self {
            Profile::National => true,
            Profile::Beijing => false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PolicyConfig {
    pub profile: Profile,
    /// The floor in force: the profile's, or higher if `[policy] floor_days` raises it.
    pub floor_days: u32,
    /// Parents may watch live (the profile may forbid it; the file can only forbid more).
    pub parent_live_view: bool,
    /// Live view of a classroom needs the consent of every family with a child in it
    /// (a classroom camera shows all the children), not only the viewer's own.
    pub classroom_consent: bool,
}

/// Thresholds of the per-camera watchdog.
#[derive(Clone, Debug)]
pub struct WatchdogConfig {
    /// A camera without a frame for this long raises `no_frames`.
    pub no_frames: Duration,
    /// This many reconnects within `reconnect_window` raise `reconnect_storm`.
    pub reconnect_storm_count: u32,
    pub reconnect_window: Duration,
    /// Frame rate or bitrate below this fraction of the camera's own recent baseline
    /// raises `frame_rate_collapse` / `bitrate_collapse`.
    pub collapse_ratio: f64,
    /// The camera's clock (RTCP sender reports) or its RTP clock rate may differ from the
    /// server's by at most this much before `clock_drift` is raised.
    pub max_clock_skew: Duration,
    /// Uploads failing for this long raise `upload_failing`.
    pub upload_failing_after: Duration,
    /// A spool backlog whose oldest segment waits longer than this raises `spool_backlog`.
    pub spool_backlog_after: Duration,
    /// Frame rate and bitrate are measured over this window (`rate_window_seconds`)…
    pub rate_window: Duration,
    /// …against the median of such windows over this much recent history
    /// (`baseline_seconds`), the camera's own baseline.
    pub baseline: Duration,
    /// The camera's RTP clock may gain or lose at most `max_clock_skew` on the server's
    /// clock over this window (`clock_window_seconds`; default: 3 s in 300 s, 1 %).
    pub clock_window: Duration,
    /// How often the storage forecast and the retention horizon are checked
    /// (`storage_check_seconds`): they read the index, so not every second.
    pub storage_check: Duration,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            no_frames: Duration::from_secs(10),
            reconnect_storm_count: 5,
            reconnect_window: Duration::from_secs(300),
            collapse_ratio: 0.5,
            max_clock_skew: Duration::from_secs(3),
            upload_failing_after: Duration::from_secs(30),
            spool_backlog_after: Duration::from_secs(300),
            rate_window: Duration::from_secs(10),
            baseline: Duration::from_secs(300),
            clock_window: Duration::from_secs(300),
            storage_check: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AlarmsConfig {
    /// Alarms are POSTed here as JSON, signed with `webhook_secret` (HMAC-SHA256).
    pub webhook_url: Option<Url>,
    pub webhook_secret: Option<String>,
    /// An active, unacknowledged alarm is sent again after this, then twice as long each
    /// time, up to `renotify_max`.
    pub renotify_initial: Duration,
    pub renotify_max: Duration,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            webhook_url: None,
            webhook_secret: None,
            renotify_initial: Duration::from_secs(300),
            renotify_max: Duration::from_secs(4 * 3600),
        }
    }
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    database: Option<RawDatabase>,
    storage: Option<RawStorage>,
    recording: Option<RawRecording>,
    spool: Option<RawSpool>,
    #[serde(default)]
    cameras: Vec<CameraFields>,
    demo: Option<RawDemo>,
    auth: Option<RawAuth>,
    retention: Option<RawRetention>,
    policy: Option<RawPolicy>,
    watchdog: Option<RawWatchdog>,
    alarms: Option<RawAlarms>,
    live: Option<crate::live::config::RawLive>,
    snapshots: Option<RawSnapshots>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSnapshots {
    interval_seconds: Option<u64>,
    tamper: Option<crate::snapshot::tamper::Thresholds>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    days: Option<i64>,
    sweep_minutes: Option<u64>,
    sweep_batch: Option<usize>,
    reconcile_minutes: Option<u64>,
    /// Seconds instead of minutes, for tests and small setups; overrides reconcile_minutes.
    reconcile_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    profile: Option<String>,
    floor_days: Option<i64>,
    parent_live_view: Option<bool>,
    classroom_consent: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWatchdog {
    no_frames_seconds: Option<u64>,
    reconnect_storm_count: Option<u32>,
    reconnect_window_seconds: Option<u64>,
    collapse_ratio: Option<f64>,
    max_clock_skew_ms: Option<u64>,
    upload_failing_seconds: Option<u64>,
    spool_backlog_seconds: Option<u64>,
    rate_window_seconds: Option<u64>,
    baseline_seconds: Option<u64>,
    clock_window_seconds: Option<u64>,
    storage_check_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlarms {
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    renotify_minutes: Option<u64>,
    renotify_max_minutes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    session_minutes: Option<u64>,
    idle_minutes: Option<u64>,
    max_failures_per_account: Option<u32>,
    max_failures_per_addr: Option<u32>,
    failure_window_minutes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<String>,
    public_url: Option<String>,
    language: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: String,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    #[serde(default)]
    allow_http: bool,
    #[serde(default)]
    object_lock: bool,
    capacity_gb: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecording {
    segment_seconds: Option<u64>,
    segment_max_mb: Option<u64>,
    max_drift_ms: Option<u64>,
    batch_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    dir: Option<String>,
    min_free_mb: Option<u64>,
    max_mb: Option<u64>,
}

/// A camera as written: a `[[cameras]]` table of the config file, or the JSON body of
/// `POST /api/v1/centre/cameras` (and a row of the `cameras` table).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraFields {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub sub_url: Option<String>,
    #[serde(default)]
    pub transport: Option<String>,
    /// Days to keep this camera's footage, above `[retention] days` (never below).
    #[serde(default)]
    pub retention_days: Option<i64>,
}

/// Where `${VAR}` references in a camera's fields may be expanded from the environment:
/// only in the config file. From the API it would let an admin send the server's
/// secrets (the S3 key, the database password) to a camera URL of their choosing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EnvRefs {
    Expand,
    Literal,
}

impl CameraFields {
    /// Checks every field; an error names the field (`id`, `url`, …) and the reason.
    pub fn validate(self, env: EnvRefs) -> Result<CameraConfig, (&'static str, String)> {
        let expand = |field: &'static str, v: String| match env {
            EnvRefs::Expand => expand_env(&v).map_err(|r| (field, r)),
            EnvRefs::Literal => Ok(v),
        };
        let id = CameraId::parse(&self.id).map_err(|r| ("id", r))?;
        let url = parse_rtsp(&expand("url", self.url)?).map_err(|r| ("url", r))?;
        let sub_url = self.sub_url.map(|u| parse_rtsp(&expand("sub_url", u)?).map_err(|r| ("sub_url", r))).transpose()?;
        let username = self.username.map(|v| expand("username", v)).transpose()?;
        let password = self.password.map(|v| expand("password", v)).transpose()?;
        if password.is_some() && username.is_none() {
            return Err(("username", "a password is set but no username".into()));
        }
        let transport = match self.transport.as_deref() {
            None | Some("tcp") => RtspTransport::Tcp,
            Some("udp") => RtspTransport::Udp,
            Some(other) => return Err(("transport", format!("{other:?}: use \"tcp\" or \"udp\""))),
        };
        let name = match self.name {
            Some(n) if n.trim().is_empty() => return Err(("name", "the name is empty".into())),
            Some(n) if n.chars().count() > 100 => return Err(("name", "the name is longer than 100 characters".into())),
            Some(n) => n.trim().to_owned(),
            None => id.to_string(),
        };
        let retention_days = match self.retention_days {
            None => None,
            Some(d) if d < i64::from(RETENTION_FLOOR_DAYS) => {
                return Err(("retention_days", below_floor(d, RETENTION_FLOOR_DAYS)));
            }
            Some(d) if d > 36_500 => return Err(("retention_days", format!("{d} days is more than 100 years"))),
            Some(d) => Some(d as u32),
        };
        Ok(CameraConfig { name, id, url, username, password, sub_url, transport, retention_days })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDemo {
    simulated_cameras: usize,
    camsim_listen: Option<String>,
}

/// Default segment length: one minute. Long enough that a camera makes only
/// ~130 000 objects in 90 days (cheap listing, few S3 requests, small index), short
/// enough that an evidence export or a playback seek touches little extra footage.
/// Crash safety does not depend on it: the spool fsyncs every fragment (one GOP).
pub const DEFAULT_SEGMENT_SECONDS: u64 = 60;

/// Default cap on a segment's size: 256 MiB, which a minute of footage reaches only above
/// ~35 Mbit/s, and an hour-long segment of a 4 Mbit/s camera after ~9 minutes. A segment
/// is one PUT, memory-mapped from the spool, whose time limit grows with its size (see
/// `storage::s3_put`); S3 refuses a single PUT above 5 GB.
pub const DEFAULT_SEGMENT_MAX_MB: u64 = 256;

/// Default capture batch: half a second, the shortest sleep of the capture thread (it
/// sleeps longer to wake just after a camera's next keyframe, see [`crate::capture`]).
/// The capture thread's cost is mostly per wake-up, not per byte (per-thread counters,
/// 60–90 s windows: one camera 6.6 CPU-s per hour at 250 ms, 5.5 at 500, 4.7 at 1000;
/// ten cameras 3.5, 3.2, 3.2 per camera). What a shorter sleep buys: with many cameras
/// (whose keyframes come at any moment) a crash loses less of what sits unread in the
/// socket, up to a batch besides the GOP being collected; and a camera whose tick
/// outgrows the socket's receive window (~64–128 KB at first, a quarter second of
/// 4 Mbit/s) is held back by TCP for fewer ticks of a session, until Linux has grown the
/// window to what the reader takes per read. Live view is unaffected: a viewer turns
/// batching off while it watches.
pub const DEFAULT_BATCH_MS: u64 = 500;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, reason: String| ConfigError { file: file.clone(), key: key.into(), reason };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = e
                .span()
                .map(|s| line_col(text, s.start))
                .unwrap_or((0, 0));
            err(&format!("line {line}, column {col}"), e.message().to_owned())
        })?;

        let listen_s = raw.server.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_s
            .parse()
            .map_err(|e| err("server.listen", format!("{listen_s:?} is not an address:port ({e})")))?;
        let data_dir = PathBuf::from(raw.server.data_dir.unwrap_or_else(|| "./data".into()));
        let public_url = raw
            .server
            .public_url
            .map(|u| match Url::parse(&u) {
                Ok(url) if url.scheme() == "http" || url.scheme() == "https" => Ok(url),
                Ok(_) => Err(err("server.public_url", format!("{u:?} must be an http:// or https:// URL"))),
                Err(e) => Err(err("server.public_url", format!("{u:?} is not a URL ({e})"))),
            })
            .transpose()?;
        let auth = parse_auth(raw.auth, &err)?;
        let language = match raw.server.language.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("zh" | "zh-cn" | "zh-hans") => Some(Language::Zh),
            Some("en" | "en-us" | "en-gb") => Some(Language::En),
            Some(_) => {
                let l = raw.server.language.unwrap_or_default();
                return Err(err("server.language", format!("{l:?}: use \"zh-CN\" (Chinese) or \"en\" (English)")));
            }
        };
        let snapshots = {
            let raw = raw.snapshots.unwrap_or_default();
            let interval = match raw.interval_seconds {
                None => SnapshotsConfig::default().interval,
                Some(s @ 1..=3600) => Duration::from_secs(s),
                Some(s) => return Err(err("snapshots.interval_seconds", format!("{s}: use 1 to 3600 seconds"))),
            };
            let tamper = raw.tamper.unwrap_or_default();
            tamper.validate().map_err(|r| err("snapshots.tamper", r))?;
            SnapshotsConfig { interval, tamper }
        };

        let database_url = match raw.database {
            Some(db) => expand_env(&db.url).map_err(|r| err("database.url", r))?,
            None => format!("sqlite://{}/cradle.db", data_dir.display()),
        };
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(err("database.url", "must start with sqlite:// or postgres://".into()));
        }

        let storage = match raw.storage {
            Some(s) => {
                let url = expand_env(&s.url).map_err(|r| err("storage.url", r))?;
                let opt = |v: Option<String>, key: &str| -> Result<Option<String>, ConfigError> {
                    v.map(|v| expand_env(&v).map_err(|r| err(key, r))).transpose()
                };
                let st = StorageConfig {
                    endpoint: opt(s.endpoint, "storage.endpoint")?,
                    region: opt(s.region, "storage.region")?,
                    access_key_id: opt(s.access_key_id, "storage.access_key_id")?,
                    secret_access_key: opt(s.secret_access_key, "storage.secret_access_key")?,
                    allow_http: s.allow_http,
                    object_lock: s.object_lock,
                    capacity_bytes: s.capacity_gb.map(|g| g << 30),
                    url,
                };
                if st.object_lock && !st.url.starts_with("s3://") {
                    return Err(err("storage.object_lock", "Object Lock is an S3 feature; a file:// store cannot lock objects".into()));
                }
                if let Some(bucket) = st.url.strip_prefix("s3://") {
                    if bucket.is_empty() || bucket.starts_with('/') {
                        return Err(err("storage.url", "s3:// URL needs a bucket name: s3://BUCKET[/prefix]".into()));
                    }
                } else if !st.url.starts_with("file://") {
                    return Err(err("storage.url", format!("{:?}: use file://DIR or s3://BUCKET", st.url)));
                }
                st
            }
            None => StorageConfig {
                url: format!("file://{}/footage", data_dir.display()),
                endpoint: None,
                region: None,
                access_key_id: None,
                secret_access_key: None,
                allow_http: false,
                object_lock: false,
                capacity_bytes: None,
            },
        };

        let rec = raw.recording.unwrap_or(RawRecording { segment_seconds: None, segment_max_mb: None, max_drift_ms: None, batch_ms: None });
        let segment_seconds = rec.segment_seconds.unwrap_or(DEFAULT_SEGMENT_SECONDS);
        if !(2..=3600).contains(&segment_seconds) {
            return Err(err("recording.segment_seconds", format!("{segment_seconds} is outside 2..=3600")));
        }
        let segment_max_mb = rec.segment_max_mb.unwrap_or(DEFAULT_SEGMENT_MAX_MB);
        if !(1..=4096).contains(&segment_max_mb) {
            return Err(err("recording.segment_max_mb", format!("{segment_max_mb} is outside 1..=4096")));
        }
        let max_drift_ms = rec.max_drift_ms.unwrap_or(2000);
        if !(100..=600_000).contains(&max_drift_ms) {
            return Err(err("recording.max_drift_ms", format!("{max_drift_ms} is outside 100..=600000")));
        }
        let batch_ms = rec.batch_ms.unwrap_or(DEFAULT_BATCH_MS);
        if batch_ms > 1000 {
            return Err(err("recording.batch_ms", format!("{batch_ms} is outside 0..=1000")));
        }
        let recording = RecordingConfig {
            segment_duration: Duration::from_secs(segment_seconds),
            segment_max_bytes: segment_max_mb << 20,
            max_drift: Duration::from_millis(max_drift_ms),
            batch: Duration::from_millis(batch_ms),
        };

        let sp = raw.spool.unwrap_or(RawSpool { dir: None, min_free_mb: None, max_mb: None });
        let spool = SpoolConfig {
            dir: sp.dir.map(PathBuf::from).unwrap_or_else(|| data_dir.join("spool")),
            min_free_bytes: sp.min_free_mb.unwrap_or(256) << 20,
            max_bytes: sp.max_mb.map(|m| m << 20),
        };

        let policy = parse_policy(raw.policy.unwrap_or_default(), &err)?;
        let retention = parse_retention(raw.retention.unwrap_or_default(), &policy, &err)?;
        let watchdog = parse_watchdog(raw.watchdog.unwrap_or_default(), &err)?;
        let alarms = parse_alarms(raw.alarms.unwrap_or_default(), &err)?;
        let live = crate::live::config::parse(raw.live.unwrap_or_default(), &err)?;

        let mut cameras = Vec::with_capacity(raw.cameras.len());
        let mut seen = HashSet::new();
        for (i, c) in raw.cameras.into_iter().enumerate() {
            let camera = c.validate(EnvRefs::Expand).map_err(|(k, r)| err(&format!("cameras[{i}].{k}"), r))?;
            if !seen.insert(camera.id.clone()) {
                return Err(err(&format!("cameras[{i}].id"), format!("duplicate camera id {:?}", camera.id.as_str())));
            }
            if let Some(d) = camera.retention_days {
                if d < retention.days {
                    return Err(err(
                        &format!("cameras[{i}].retention_days"),
                        format!("{d} is shorter than [retention] days = {}: a camera may keep footage longer, never shorter", retention.days),
                    ));
                }
            }
            cameras.push(camera);
        }

        let demo = raw
            .demo
            .map(|d| -> Result<DemoConfig, ConfigError> {
                let l = d.camsim_listen.unwrap_or_else(|| "127.0.0.1:8554".into());
                Ok(DemoConfig {
                    simulated_cameras: d.simulated_cameras,
                    camsim_listen: l.parse().map_err(|e| err("demo.camsim_listen", format!("{l:?}: {e}")))?,
                })
            })
            .transpose()?;

        Ok(Config {
            live,
            auth,
            retention,
            policy,
            watchdog,
            alarms,
            public_url,
            language,
            snapshots,
            path: path.to_owned(),
            listen,
            data_dir,
            database_url,
            storage,
            recording,
            spool,
            cameras,
            demo,
        })
    }
}

/// An `rtsp://` URL (variables already expanded).
fn parse_rtsp(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if url.scheme() != "rtsp" && url.scheme() != "rtsps" {
        return Err(format!("{s:?} must be an rtsp:// URL"));
    }
    if url.host_str().is_none() {
        return Err(format!("{s:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("put credentials in username/password (or ${ENV} references), not in the URL".into());
    }
    Ok(url)
}

fn parse_auth(raw: Option<RawAuth>, err: &dyn Fn(&str, String) -> ConfigError) -> Result<AuthConfig, ConfigError> {
    let d = AuthConfig::default();
    let Some(a) = raw else { return Ok(d) };
    let in_range = |key: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(err(key, format!("{v} is outside {lo}..={hi}")))
        }
    };
    let mut c = d;
    if let Some(m) = a.session_minutes {
        c.session_lifetime = Duration::from_secs(in_range("auth.session_minutes", m, 1, 30 * 24 * 60)? * 60);
    }
    if let Some(m) = a.idle_minutes {
        c.idle_timeout = Duration::from_secs(in_range("auth.idle_minutes", m, 1, 24 * 60)? * 60);
    }
    if let Some(n) = a.max_failures_per_account {
        c.max_failures_per_account = in_range("auth.max_failures_per_account", n.into(), 1, 1000)? as u32;
    }
    if let Some(n) = a.max_failures_per_addr {
        c.max_failures_per_addr = in_range("auth.max_failures_per_addr", n.into(), 1, 100_000)? as u32;
    }
    if let Some(m) = a.failure_window_minutes {
        c.failure_window = Duration::from_secs(in_range("auth.failure_window_minutes", m, 1, 24 * 60)? * 60);
    }
    Ok(c)
}

/// The message every path that tries to keep footage for less than the floor gets.
pub fn below_floor(days: i64, floor: u32) -> String {
    format!(
        "{days} days is below the {floor}-day retention floor: footage must be kept at least {floor} days \
         (the rules for childcare centres), and no setting can shorten that"
    )
}

fn parse_policy(p: RawPolicy, err: &dyn Fn(&str, String) -> ConfigError) -> Result<PolicyConfig, ConfigError> {
    let profile = match p.profile.as_deref() {
        None | Some("national") => Profile::National,
        Some("beijing") => Profile::Beijing,
        Some(other) => {
            return Err(err("policy.profile", format!("{other:?} is not a profile; use \"national\" or \"beijing\"")))
        }
    };
    let floor_days = match p.floor_days {
        None => profile.floor_days(),
        Some(d) if d < i64::from(profile.floor_days()) => {
            return Err(err(
                "policy.floor_days",
                format!(
                    "{}; profile {:?} sets {} days and a floor can only be raised",
                    below_floor(d, profile.floor_days()),
                    profile.name(),
                    profile.floor_days()
                ),
            ))
        }
        Some(d) if d > 36_500 => return Err(err("policy.floor_days", format!("{d} days is more than 100 years"))),
        Some(d) => d as u32,
    };
    let parent_live_view = match p.parent_live_view {
        Some(true) if !profile.parent_live_view() => {
            return Err(err(
                "policy.parent_live_view",
                format!("profile {:?} does not allow parents to watch live; a setting cannot allow it", profile.name()),
            ))
        }
        Some(v) => v,
        None => profile.parent_live_view(),
    };
    Ok(PolicyConfig { profile, floor_days, parent_live_view, classroom_consent: p.classroom_consent.unwrap_or(false) })
}

fn parse_retention(
    r: RawRetention,
    policy: &PolicyConfig,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<RetentionConfig, ConfigError> {
    let days = match r.days {
        None => policy.floor_days,
        Some(d) if d < i64::from(policy.floor_days) => {
            return Err(err("retention.days", below_floor(d, policy.floor_days)));
        }
        Some(d) if d > 36_500 => return Err(err("retention.days", format!("{d} days is more than 100 years"))),
        Some(d) => d as u32,
    };
    let minutes = |key: &str, v: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
        let m = v.unwrap_or(default);
        if !(1..=24 * 60).contains(&m) {
            return Err(err(key, format!("{m} is outside 1..=1440 minutes")));
        }
        Ok(Duration::from_secs(m * 60))
    };
    let sweep_batch = r.sweep_batch.unwrap_or(1000);
    if !(1..=1000).contains(&sweep_batch) {
        return Err(err("retention.sweep_batch", format!("{sweep_batch} is outside 1..=1000 (S3 deletes at most 1000 objects per request)")));
    }
    Ok(RetentionConfig {
        days,
        sweep_interval: minutes("retention.sweep_minutes", r.sweep_minutes, 60)?,
        sweep_batch,
        reconcile_interval: match r.reconcile_seconds {
            Some(s) if (1..=86_400).contains(&s) => Duration::from_secs(s),
            Some(s) => return Err(err("retention.reconcile_seconds", format!("{s} is outside 1..=86400 seconds"))),
            None => minutes("retention.reconcile_minutes", r.reconcile_minutes, 10)?,
        },
    })
}

fn parse_watchdog(w: RawWatchdog, err: &dyn Fn(&str, String) -> ConfigError) -> Result<WatchdogConfig, ConfigError> {
    let d = WatchdogConfig::default();
    let secs = |key: &str, v: Option<u64>, default: Duration, lo: u64, hi: u64| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if (lo..=hi).contains(&s) => Ok(Duration::from_secs(s)),
            Some(s) => Err(err(key, format!("{s} is outside {lo}..={hi} seconds"))),
        }
    };
    let collapse_ratio = w.collapse_ratio.unwrap_or(d.collapse_ratio);
    if !(0.05..=0.95).contains(&collapse_ratio) {
        return Err(err("watchdog.collapse_ratio", format!("{collapse_ratio} is outside 0.05..=0.95")));
    }
    let reconnect_storm_count = w.reconnect_storm_count.unwrap_or(d.reconnect_storm_count);
    if !(2..=1000).contains(&reconnect_storm_count) {
        return Err(err("watchdog.reconnect_storm_count", format!("{reconnect_storm_count} is outside 2..=1000")));
    }
    let rate_window = secs("watchdog.rate_window_seconds", w.rate_window_seconds, d.rate_window, 1, 600)?;
    let baseline = secs("watchdog.baseline_seconds", w.baseline_seconds, d.baseline, 4, 86_400)?;
    // The median needs several windows to be robust to one odd window.
    if baseline < rate_window * 4 {
        return Err(err(
            "watchdog.baseline_seconds",
            format!("{} s is less than 4 × rate_window_seconds ({} s)", baseline.as_secs(), rate_window.as_secs()),
        ));
    }
    let max_clock_skew = match w.max_clock_skew_ms {
        None => d.max_clock_skew,
        Some(ms) if (100..=3_600_000).contains(&ms) => Duration::from_millis(ms),
        Some(ms) => return Err(err("watchdog.max_clock_skew_ms", format!("{ms} is outside 100..=3600000"))),
    };
    Ok(WatchdogConfig {
        // "Within seconds": a camera silent for longer than a minute unnoticed is a hole.
        no_frames: secs("watchdog.no_frames_seconds", w.no_frames_seconds, d.no_frames, 2, 60)?,
        reconnect_storm_count,
        reconnect_window: secs("watchdog.reconnect_window_seconds", w.reconnect_window_seconds, d.reconnect_window, 10, 86_400)?,
        collapse_ratio,
        max_clock_skew,
        upload_failing_after: secs("watchdog.upload_failing_seconds", w.upload_failing_seconds, d.upload_failing_after, 1, 86_400)?,
        spool_backlog_after: secs("watchdog.spool_backlog_seconds", w.spool_backlog_seconds, d.spool_backlog_after, 1, 86_400)?,
        rate_window,
        baseline,
        clock_window: secs("watchdog.clock_window_seconds", w.clock_window_seconds, d.clock_window, 5, 86_400)?,
        storage_check: secs("watchdog.storage_check_seconds", w.storage_check_seconds, d.storage_check, 1, 86_400)?,
    })
}

fn parse_alarms(a: RawAlarms, err: &dyn Fn(&str, String) -> ConfigError) -> Result<AlarmsConfig, ConfigError> {
    let d = AlarmsConfig::default();
    let webhook_url = a
        .webhook_url
        .map(|u| {
            let u = expand_env(&u).map_err(|r| err("alarms.webhook_url", r))?;
            match Url::parse(&u) {
                Ok(url) if url.scheme() == "http" || url.scheme() == "https" => Ok(url),
                Ok(_) => Err(err("alarms.webhook_url", format!("{u:?} must be an http:// or https:// URL"))),
                Err(e) => Err(err("alarms.webhook_url", format!("{u:?} is not a URL ({e})"))),
            }
        })
        .transpose()?;
    let webhook_secret = a.webhook_secret.map(|s| expand_env(&s).map_err(|r| err("alarms.webhook_secret", r))).transpose()?;
    match (&webhook_url, &webhook_secret) {
        (Some(_), None) => {
            return Err(err("alarms.webhook_secret", "a webhook needs a secret to sign its requests (HMAC-SHA256)".into()))
        }
        (_, Some(s)) if s.len() < 16 => {
            return Err(err("alarms.webhook_secret", "use at least 16 characters".into()))
        }
        _ => {}
    }
    let minutes = |key: &str, v: Option<u64>, default: Duration| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(m) if (1..=7 * 24 * 60).contains(&m) => Ok(Duration::from_secs(m * 60)),
            Some(m) => Err(err(key, format!("{m} is outside 1..=10080 minutes"))),
        }
    };
    let renotify_initial = minutes("alarms.renotify_minutes", a.renotify_minutes, d.renotify_initial)?;
    let renotify_max = minutes("alarms.renotify_max_minutes", a.renotify_max_minutes, d.renotify_max)?.max(renotify_initial);
    Ok(AlarmsConfig { webhook_url, webhook_secret, renotify_initial, renotify_max })
}

/// Replaces every `${NAME}` with the environment variable NAME, so secrets can stay
/// out of the file. A missing variable is an error, never an empty string.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
        let name = &after[..end];
        let value = std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn minimal_config_gets_embedded_defaults() {
        let c = parse("[server]\ndata_dir = \"/tmp/x\"\n").unwrap();
        assert_eq!(c.database_url, "sqlite:///tmp/x/cradle.db");
        assert_eq!(c.storage.url, "file:///tmp/x/footage");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.recording.segment_duration, Duration::from_secs(60));
        assert_eq!(c.spool.dir, PathBuf::from("/tmp/x/spool"));
    }

    #[test]
    fn duplicate_camera_id_names_the_key() {
        let e = parse(
            "[server]\n[[cameras]]\nid=\"a\"\nurl=\"rtsp://h/1\"\n[[cameras]]\nid=\"a\"\nurl=\"rtsp://h/2\"\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "cameras[1].id");
        assert!(e.reason.contains("duplicate"), "{e}");
    }

    #[test]
    fn bad_camera_id_and_url_are_rejected() {
        let e = parse("[server]\n[[cameras]]\nid=\"Room 1\"\nurl=\"rtsp://h/1\"\n").unwrap_err();
        assert_eq!(e.key, "cameras[0].id");
        let e = parse("[server]\n[[cameras]]\nid=\"r1\"\nurl=\"http://h/1\"\n").unwrap_err();
        assert_eq!(e.key, "cameras[0].url");
        assert!(e.to_string().starts_with("test.toml: cameras[0].url: "), "{e}");
    }

    #[test]
    fn unknown_key_reports_line() {
        let e = parse("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(e.key.contains("line 3"), "{e}");
        assert!(e.reason.contains("bogus"), "{e}");
    }

    #[test]
    fn secrets_come_from_environment() {
        std::env::set_var("CRADLE_TEST_SECRET_X", "s3cr3t");
        let c = parse(
            "[server]\n[[cameras]]\nid=\"a\"\nurl=\"rtsp://h/1\"\nusername=\"u\"\npassword=\"${CRADLE_TEST_SECRET_X}\"\n",
        )
        .unwrap();
        assert_eq!(c.cameras[0].password.as_deref(), Some("s3cr3t"));
        let e = parse(
            "[server]\n[[cameras]]\nid=\"a\"\nurl=\"rtsp://h/1\"\nusername=\"u\"\npassword=\"${CRADLE_TEST_UNSET_Y}\"\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "cameras[0].password");
        assert!(e.reason.contains("CRADLE_TEST_UNSET_Y"));
    }

    #[test]
    fn retention_below_the_floor_is_refused_everywhere() {
        let c = parse("[server]\n").unwrap();
        assert_eq!(c.retention.days, 90);
        assert_eq!(c.policy.floor_days, 90);
        let e = parse("[server]\n[retention]\ndays = 30\n").unwrap_err();
        assert_eq!(e.key, "retention.days");
        assert!(e.reason.contains("90-day retention floor"), "{e}");
        let e = parse("[server]\n[policy]\nfloor_days = 60\n").unwrap_err();
        assert_eq!(e.key, "policy.floor_days");
        assert!(e.reason.contains("90-day"), "{e}");
        let e = parse("[server]\n[[cameras]]\nid=\"a\"\nurl=\"rtsp://h/1\"\nretention_days = 7\n").unwrap_err();
        assert_eq!(e.key, "cameras[0].retention_days");
        assert!(e.reason.contains("90-day"), "{e}");
        // Raising is fine, and a camera may keep longer than the centre.
        let c = parse("[server]\n[policy]\nfloor_days = 120\n[[cameras]]\nid=\"a\"\nurl=\"rtsp://h/1\"\nretention_days = 365\n")
            .unwrap();
        assert_eq!((c.policy.floor_days, c.retention.days, c.cameras[0].retention_days), (120, 120, Some(365)));
        let e = parse("[server]\n[policy]\nfloor_days = 120\n[retention]\ndays = 100\n").unwrap_err();
        assert!(e.reason.contains("120-day"), "{e}");
        let e = parse("[server]\n[retention]\ndays = 200\n[[cameras]]\nid=\"a\"\nurl=\"rtsp://h/1\"\nretention_days = 100\n")
            .unwrap_err();
        assert_eq!(e.key, "cameras[0].retention_days");
    }

    #[test]
    fn profiles_only_tighten() {
        let c = parse("[server]\n[policy]\nprofile = \"beijing\"\n").unwrap();
        assert!(!c.policy.parent_live_view);
        assert!(c.policy.floor_days >= RETENTION_FLOOR_DAYS);
        let e = parse("[server]\n[policy]\nprofile = \"beijing\"\nparent_live_view = true\n").unwrap_err();
        assert_eq!(e.key, "policy.parent_live_view");
        let c = parse("[server]\n[policy]\nparent_live_view = false\n").unwrap();
        assert!(!c.policy.parent_live_view);
        let e = parse("[server]\n[policy]\nprofile = \"mars\"\n").unwrap_err();
        assert_eq!(e.key, "policy.profile");
        for p in [Profile::National, Profile::Beijing] {
            assert!(p.floor_days() >= RETENTION_FLOOR_DAYS);
        }
    }

    #[test]
    fn webhook_needs_a_secret() {
        let e = parse("[server]\n[alarms]\nwebhook_url = \"http://h/x\"\n").unwrap_err();
        assert_eq!(e.key, "alarms.webhook_secret");
        let e = parse("[server]\n[storage]\nurl = \"file:///tmp/x\"\nobject_lock = true\n").unwrap_err();
        assert_eq!(e.key, "storage.object_lock");
    }

    #[test]
    fn watchdog_windows_are_checked() {
        let c = parse("[server]\n[watchdog]\nrate_window_seconds = 2\nbaseline_seconds = 20\nstorage_check_seconds = 1\n").unwrap();
        assert_eq!((c.watchdog.rate_window.as_secs(), c.watchdog.baseline.as_secs()), (2, 20));
        assert_eq!(c.watchdog.clock_window.as_secs(), 300);
        let e = parse("[server]\n[watchdog]\nrate_window_seconds = 10\nbaseline_seconds = 30\n").unwrap_err();
        assert_eq!(e.key, "watchdog.baseline_seconds");
        let e = parse("[server]\n[watchdog]\nclock_window_seconds = 1\n").unwrap_err();
        assert_eq!(e.key, "watchdog.clock_window_seconds");
    }

    #[test]
    fn segment_length_bounds() {
        let e = parse("[server]\n[recording]\nsegment_seconds = 1\n").unwrap_err();
        assert_eq!(e.key, "recording.segment_seconds");
        assert_eq!(parse("[server]\n").unwrap().recording.segment_max_bytes, 256 << 20);
        assert_eq!(parse("[server]\n[recording]\nsegment_max_mb = 64\n").unwrap().recording.segment_max_bytes, 64 << 20);
        let e = parse("[server]\n[recording]\nsegment_max_mb = 5000\n").unwrap_err();
        assert_eq!(e.key, "recording.segment_max_mb");
    }

    #[test]
    fn capture_batch_defaults_to_half_a_second_and_is_bounded() {
        let c = parse("[server]\n").unwrap();
        assert_eq!(c.recording.batch, Duration::from_millis(500));
        let c = parse("[server]\n[recording]\nbatch_ms = 0\n").unwrap();
        assert_eq!(c.recording.batch, Duration::ZERO);
        let e = parse("[server]\n[recording]\nbatch_ms = 5000\n").unwrap_err();
        assert_eq!(e.key, "recording.batch_ms");
        assert!(e.to_string().contains("outside 0..=1000"), "{e}");
    }
}
