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
}

#[derive(Clone, Debug)]
pub struct RecordingConfig {
    /// Target segment length; segments are cut at the first keyframe at or after it.
    pub segment_duration: Duration,
    /// Camera-clock drift from the server clock beyond which a recording run is re-anchored.
    pub max_drift: Duration,
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
    /// The address users reach Cradle at (behind a TLS proxy: `https://…`). Session
    /// cookies are marked `Secure` when it is https.
    pub public_url: Option<Url>,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecording {
    segment_seconds: Option<u64>,
    max_drift_ms: Option<u64>,
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
        Ok(CameraConfig { name, id, url, username, password, sub_url, transport })
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
                    url,
                };
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
            },
        };

        let rec = raw.recording.unwrap_or(RawRecording { segment_seconds: None, max_drift_ms: None });
        let segment_seconds = rec.segment_seconds.unwrap_or(DEFAULT_SEGMENT_SECONDS);
        if !(2..=3600).contains(&segment_seconds) {
            return Err(err("recording.segment_seconds", format!("{segment_seconds} is outside 2..=3600")));
        }
        let max_drift_ms = rec.max_drift_ms.unwrap_or(2000);
        if !(100..=600_000).contains(&max_drift_ms) {
            return Err(err("recording.max_drift_ms", format!("{max_drift_ms} is outside 100..=600000")));
        }
        let recording = RecordingConfig {
            segment_duration: Duration::from_secs(segment_seconds),
            max_drift: Duration::from_millis(max_drift_ms),
        };

        let sp = raw.spool.unwrap_or(RawSpool { dir: None, min_free_mb: None, max_mb: None });
        let spool = SpoolConfig {
            dir: sp.dir.map(PathBuf::from).unwrap_or_else(|| data_dir.join("spool")),
            min_free_bytes: sp.min_free_mb.unwrap_or(256) << 20,
            max_bytes: sp.max_mb.map(|m| m << 20),
        };

        let mut cameras = Vec::with_capacity(raw.cameras.len());
        let mut seen = HashSet::new();
        for (i, c) in raw.cameras.into_iter().enumerate() {
            let camera = c.validate(EnvRefs::Expand).map_err(|(k, r)| err(&format!("cameras[{i}].{k}"), r))?;
            if !seen.insert(camera.id.clone()) {
                return Err(err(&format!("cameras[{i}].id"), format!("duplicate camera id {:?}", camera.id.as_str())));
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
            auth,
            public_url,
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
    fn segment_length_bounds() {
        let e = parse("[server]\n[recording]\nsegment_seconds = 1\n").unwrap_err();
        assert_eq!(e.key, "recording.segment_seconds");
    }
}
