//! Test harness: starts the real `cradle` binary against real parts — camsim or
//! Debian's GStreamer RTSP server as cameras, Garage as S3, SQLite or PostgreSQL —
//! and talks to it over HTTP like a user would.
//!
//! `scripts/test.sh` starts PostgreSQL and a shared Garage and exports their
//! addresses; tests that need to stop storage start their own Garage with
//! `scripts/garage.sh`. A missing variable is a hard failure: these tests must run.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs a scenario once per database back end: `NAME::sqlite` and `NAME::postgres`.
/// The test file needs `use support::*;` (for `Backend`).
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

pub const BIN: &str = env!("CARGO_BIN_EXE_cradle");

pub fn env_required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts Garage and PostgreSQL")
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The database back end a test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test.
pub async fn fresh_database(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}/cradle.db", dir.display()),
        Backend::Postgres => {
            use sqlx::Connection;
            let base = env_required("CRADLE_TEST_PG_URL");
            let name = format!("cradle_t{}_{}", std::process::id(), rand::random::<u32>());
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .expect("connect to test PostgreSQL");
            // `name` is made here from digits only, never from input.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            format!("{prefix}/{name}")
        }
    }
}

/// `[storage]` section for the shared test Garage, with a per-test prefix.
pub fn garage_storage_toml(prefix: &str) -> String {
    format!(
        "[storage]\nurl = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\n",
        env_required("CRADLE_TEST_S3_BUCKET"),
        env_required("CRADLE_TEST_S3_ENDPOINT"),
        env_required("CRADLE_TEST_S3_REGION"),
        env_required("CRADLE_TEST_S3_ACCESS_KEY_ID"),
        env_required("CRADLE_TEST_S3_SECRET_ACCESS_KEY"),
    )
}

pub struct CameraSpec {
    pub id: String,
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl CameraSpec {
    pub fn new(id: &str, url: &str) -> Self {
        CameraSpec {
            id: id.into(),
            url: url.into(),
            username: None,
            password: None,
        }
    }
    pub fn creds(mut self, u: &str, p: &str) -> Self {
        self.username = Some(u.into());
        self.password = Some(p.into());
        self
    }
}

pub struct ServerSpec {
    pub dir: PathBuf,
    pub port: u16,
    pub database_url: String,
    pub storage_toml: String,
    pub segment_seconds: u32,
    pub extra_toml: String,
    pub cameras: Vec<CameraSpec>,
}

impl ServerSpec {
    pub async fn new(backend: Backend, dir: &Path) -> ServerSpec {
        ServerSpec {
            dir: dir.to_owned(),
            port: free_port(),
            database_url: fresh_database(backend, dir).await,
            storage_toml: format!("[storage]\nurl = \"file://{}/footage\"\n", dir.display()),
            segment_seconds: 60,
            extra_toml: String::new(),
            cameras: Vec::new(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("cradle.toml")
    }

    pub fn write_config(&self) -> PathBuf {
        let mut s = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n[database]\nurl = \"{}\"\n{}\n[recording]\nsegment_seconds = {}\n{}\n",
            self.port,
            self.dir.join("data").display(),
            self.database_url,
            self.storage_toml,
            self.segment_seconds,
            self.extra_toml
        );
        for c in &self.cameras {
            s += &format!("[[cameras]]\nid = \"{}\"\nurl = \"{}\"\n", c.id, c.url);
            if let Some(u) = &c.username {
                s += &format!("username = \"{u}\"\n");
            }
            if let Some(p) = &c.password {
                s += &format!("password = \"{p}\"\n");
            }
        }
        let path = self.config_path();
        std::fs::write(&path, s).unwrap();
        path
    }

    /// Creates an account through `cradle user add` (the password on standard input).
    pub fn add_user(&self, username: &str, role: &str, password: &str) -> std::process::Output {
        use std::io::Write;
        let config = self.write_config();
        let mut child = Command::new(BIN)
            .args(["user", "add", "--config"])
            .arg(&config)
            .args(["--username", username, "--role", role])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cradle user add");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub async fn start(&self) -> Server {
        self.start_with(&[]).await
    }

    /// Starts `cradle serve --config FILE ARGS…` and signs in as the test admin.
    pub async fn start_with(&self, args: &[&str]) -> Server {
        let config = self.write_config();
        // The tests read the API as an admin; make the account unless this database
        // already has it (a restart, or a test that swapped the database).
        let out = self.add_user(TEST_ADMIN, "admin", TEST_ADMIN_PASSWORD);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("is taken"),
            "cradle user add failed: {err}"
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("cradle.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .args(args)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start cradle");
        let mut server = Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{}", self.port),
            dir: self.dir.clone(),
            token: String::new(),
        };
        let client = reqwest::Client::new();
        let url = format!("{}/healthz", server.base);
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("cradle did not answer /healthz; log:\n{}", server.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.token = server.login(TEST_ADMIN, TEST_ADMIN_PASSWORD).await;
        server
    }
}

pub const TEST_ADMIN: &str = "test-admin";
pub const TEST_ADMIN_PASSWORD: &str = "test-admin-password";

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub dir: PathBuf,
    /// The test admin's session token, sent as Bearer by `get`.
    pub token: String,
}

impl Server {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("cradle.log")).unwrap_or_default()
    }

    /// Signs in and returns the session token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/login", self.base))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("POST /api/v1/login");
        assert!(
            r.status().is_success(),
            "login as {username}: {}",
            r.status()
        );
        let v: Value = r.json().await.unwrap();
        v["token"]
            .as_str()
            .expect("token in login answer")
            .to_owned()
    }

    /// Any request, with `token` as Bearer (none: anonymous) and an optional JSON body;
    /// answers the status and the JSON body (`Null` when there is none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (reqwest::StatusCode, Value) {
        let mut req = reqwest::Client::new().request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("HTTP request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn get_text(&self, path: &str) -> String {
        reqwest::get(format!("{}{path}", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn camera(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/cameras/{id}")).await
    }

    pub async fn wait_recording(&self, id: &str, timeout: Duration) {
        wait_until(&format!("camera {id} recording"), timeout, || async {
            // 404 until a camera added at run time has started.
            let (status, v) = self.call(reqwest::Method::GET, &format!("/api/v1/cameras/{id}"), Some(&self.token), None).await;
            status.is_success() && v["state"] == "recording"
        })
        .await
    }

    /// Recordings of a camera from `start` (RFC 3339) to now.
    pub async fn recordings(&self, id: &str, start: &str, end: &str) -> Value {
        self.get(&format!(
            "/api/v1/cameras/{id}/recordings?start={start}&end={end}"
        ))
        .await
    }

    pub async fn status(&self) -> Value {
        self.get("/api/v1/status").await
    }

    /// SIGTERM and wait; returns how long the exit took.
    pub fn terminate(&mut self) -> Duration {
        let mut child = self.child.take().expect("server running");
        let start = Instant::now();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "cradle exited with {status}; log:\n{}",
                    self.log()
                );
                return start.elapsed();
            }
            if start.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("cradle did not exit within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child process killed on drop (camsim, GStreamer camera).
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_port(port: u16, what: &str) {
    wait_until(what, Duration::from_secs(20), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}

/// `cradle camsim` on `port` with `streams` cameras (as a separate process, so a test
/// can kill the "camera" without touching the recorder).
pub async fn camsim(port: u16, streams: usize) -> Proc {
    let child = Command::new(BIN)
        .args([
            "camsim",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--streams",
            &streams.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start camsim");
    let p = Proc(Some(child));
    wait_port(port, "camsim").await;
    p
}

/// Debian's GStreamer RTSP server (tests/support/gst_camera.py) with digest auth.
pub async fn gst_camera(port: u16, user: &str, password: &str, extra: &[&str]) -> Proc {
    let script = env_required("CRADLE_TEST_GST_CAMERA");
    let child = Command::new("/usr/bin/python3")
        .arg(script)
        .args([
            "--port",
            &port.to_string(),
            "--mount",
            "/cam",
            "--user",
            user,
            "--password",
            password,
        ])
        .args(["--auth", "digest"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the GStreamer camera");
    let p = Proc(Some(child));
    wait_port(port, "GStreamer camera").await;
    p
}

/// A Garage of the test's own (so it can be stopped), via scripts/garage.sh.
pub struct OwnGarage {
    pub dir: PathBuf,
    pub ports: (u16, u16, u16),
    pub env: std::collections::HashMap<String, String>,
}

impl OwnGarage {
    pub fn start(dir: &Path, ports: Option<(u16, u16, u16)>) -> OwnGarage {
        let ports = ports.unwrap_or_else(|| (free_port(), free_port(), free_port()));
        let script = env_required("CRADLE_TEST_GARAGE_SH");
        let out = Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(dir)
            .args([
                ports.0.to_string(),
                ports.1.to_string(),
                ports.2.to_string(),
            ])
            .output()
            .expect("run garage.sh");
        assert!(
            out.status.success(),
            "garage.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut env = std::collections::HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(kv) = line.strip_prefix("export ") {
                if let Some((k, v)) = kv.split_once('=') {
                    env.insert(
                        k.to_owned(),
                        v.trim_matches(|c| c == '"' || c == '\'').to_owned(),
                    );
                }
            }
        }
        OwnGarage {
            dir: dir.to_owned(),
            ports,
            env,
        }
    }

    pub fn stop(&self) {
        let script = env_required("CRADLE_TEST_GARAGE_SH");
        let st = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn storage_toml(&self) -> String {
        format!(
            "[storage]\nurl = \"s3://{}\"\nendpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\n",
            self.env["CRADLE_TEST_S3_BUCKET"],
            self.env["CRADLE_TEST_S3_ENDPOINT"],
            self.env["CRADLE_TEST_S3_REGION"],
            self.env["CRADLE_TEST_S3_ACCESS_KEY_ID"],
            self.env["CRADLE_TEST_S3_SECRET_ACCESS_KEY"],
        )
    }
}

impl Drop for OwnGarage {
    fn drop(&mut self) {
        if let Ok(script) = std::env::var("CRADLE_TEST_GARAGE_SH") {
            let _ = Command::new("bash")
                .arg(script)
                .arg("stop")
                .arg(&self.dir)
                .output();
        }
    }
}

/// The storage a server was configured with, opened through Cradle's own Storage type
/// (the test checks objects the way `reindex` would see them).
/// The SHA-256 of the file at `path`, in hex: what `Storage::put_file` wants with it.
pub fn file_sha256(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read file to hash")))
}

pub fn open_storage(spec: &ServerSpec) -> cradle::storage::Storage {
    let cfg = cradle::config::Config::load(&spec.config_path()).expect("config");
    cradle::storage::Storage::from_config(&cfg.storage).expect("storage")
}

/// ffprobe's view of an MP4 file: (codec_name, frames, duration seconds).
pub fn ffprobe(path: &Path) -> (String, u64, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (install ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    (
        s["codec_name"].as_str().unwrap_or("").to_owned(),
        s["nb_read_frames"].as_str().unwrap_or("0").parse().unwrap(),
        v["format"]["duration"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap(),
    )
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    let us = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    cradle::time::format_rfc3339(us)
}

pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub fn secs(v: &Value) -> f64 {
    cradle::time::parse_rfc3339(v.as_str().unwrap()).unwrap() as f64 / 1e6
}

/// `cradle camsim` on `port` with one built-in camera and `clips` served at `/NAME`
/// (`--clip NAME=PATH`). Waits for the port, and fails with camsim's error if it refused
/// a clip (it reads and checks them all before serving).
pub async fn camsim_with_clips(port: u16, clips: &[(&str, &Path)]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["camsim", "--listen", &format!("127.0.0.1:{port}"), "--streams", "1"]);
    for (name, path) in clips {
        cmd.arg("--clip").arg(format!("{name}={}", path.display()));
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start camsim");
    let stderr = child.stderr.take().unwrap();
    // Keep draining camsim's log so it never blocks on a full pipe; keep it for errors.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            if s.len() < 64 * 1024 {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    let mut p = Proc(Some(child));
    let start = Instant::now();
    loop {
        if let Some(status) = p.0.as_mut().unwrap().try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            panic!("camsim exited ({status}):\n{}", log.lock().unwrap());
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return p;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "camsim did not listen on {port}:\n{}", log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A helper process (a page driven in Chromium, a WebRTC client) that prints one JSON
/// event per line: `{"event": "…", …}`.
pub struct Events {
    what: &'static str,
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    pub seen: Vec<Value>,
}

impl Events {
    pub fn spawn(what: &'static str, mut cmd: tokio::process::Command) -> Events {
        use tokio::io::AsyncBufReadExt;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Events { what, child, lines, seen: Vec::new() }
    }

    /// The next event named `name` (earlier other events are kept in `seen`); the
    /// process's failure message if it ends first.
    pub async fn event(&mut self, name: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(l))) => l,
                Ok(_) => panic!("{}", self.failure(&format!("ended before its {name:?} event")).await),
                Err(_) => panic!("{}", self.failure(&format!("no {name:?} event within {timeout:?}")).await),
            };
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{}: not JSON: {line}", self.what));
            println!("{}: {v}", self.what);
            self.seen.push(v.clone());
            if v["event"] == name {
                return v;
            }
        }
    }

    /// Stops the process; says what it printed.
    pub async fn failure(&mut self, why: &str) -> String {
        use tokio::io::AsyncReadExt;
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr).await;
        }
        format!("{}: {why}; events {:?}; stderr:\n{stderr}", self.what, self.seen)
    }

    /// Waits for the exit, which must be a success.
    pub async fn finish(mut self) {
        while let Ok(Some(l)) = self.lines.next_line().await {
            self.seen.push(serde_json::from_str(&l).unwrap_or(Value::String(l)));
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        if !matches!(status, Ok(Ok(s)) if s.success()) {
            panic!("{}", self.failure(&format!("exited with {status:?}")).await);
        }
    }
}
