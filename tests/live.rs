//! Live view over WHEP with real parts: the `cradle` binary fed by camsim, a parent's
//! phone in headless Debian Chromium (tests/web/live_page.py), and aiortc as a second,
//! non-browser WHEP player (tests/web/whep_aiortc.py, in the test venv).
//!
//! What a parent may watch is decided by the access rules reading the database, so the
//! refusals run on SQLite and PostgreSQL; the playing tests run on SQLite. Nothing here
//! depends on the time of day: the demo centre is open all day, and privacy periods and
//! viewing hours are set relative to now in the centre's time zone.

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::*;
use tokio::process::Command;

on_both_databases!(live_view_is_refused_with_the_reason_the_rules_give);

const NOWHERE: &str = "rtsp://127.0.0.1:9/none";
const PASSWORD: &str = "a long enough password";
/// The demo centre's classroom camera whose room has no privacy period (the toddler
/// room naps on weekdays), so the playing tests hold at any hour.
const CAMERA: &str = "infant-room";
const INFANT_ROOM: &str = "小星星 Little Stars";
const RAINBOW_ROOM: &str = "彩虹 Rainbow";
const WANG_XIAOBAO: &str = "王小宝 Wang Xiaobao";
const LI_DUODUO: &str = "李朵朵 Li Duoduo";

/// A recvonly H.264 offer like a browser's, without candidates: enough for the server
/// to answer (and to apply every rule first); it never connects.
fn offer(codec_line: &str) -> String {
    let fingerprint = vec!["AB"; 32].join(":");
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS",
        "m=video 9 UDP/TLS/RTP/SAVPF 102",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:a1b2",
        "a=ice-pwd:0123456789abcdefghijklmn",
        "a=ice-options:trickle",
        &format!("a=fingerprint:sha-256 {fingerprint}"),
        "a=setup:actpass",
        "a=mid:0",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        codec_line,
        "a=rtcp-fb:102 nack",
        "a=rtcp-fb:102 nack pli",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "",
    ]
    .join("\r\n")
}

fn h264_offer() -> String {
    offer("a=rtpmap:102 H264/90000")
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A block of 20 UDP ports nobody holds now, for one server's `[live] udp_ports`, so
/// tests running at once never share a port.
fn udp_ports() -> (u16, u16) {
    loop {
        let lo = 40_000 + 20 * rand::random_range(0..1_000u16);
        let held: Vec<_> = (lo..lo + 20).map_while(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).ok()).collect();
        if held.len() == 20 {
            return (lo, lo + 19);
        }
    }
}

fn live_toml(ports: (u16, u16), extra: &str) -> String {
    format!("[live]\nudp_ports = \"{}-{}\"\nbind = [\"127.0.0.1\"]\n{extra}\n", ports.0, ports.1)
}

/// The demo centre (`serve --demo`): three classrooms, an entrance and a private
/// nappy room; parents `parent-infant` (王小宝, 小星星) and `parent-toddler`.
struct Demo {
    _dir: tempfile::TempDir,
    _camsim: Option<Proc>,
    spec: ServerSpec,
    server: Server,
    ports: (u16, u16),
    passwords: std::collections::HashMap<String, String>,
}

impl Demo {
    /// With `live_cameras`, the three classroom cameras are camsim streams and record;
    /// otherwise every camera points nowhere (the rules still apply; 503 once they pass).
    async fn start(backend: Backend, live_cameras: bool, live_extra: &str) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ServerSpec::new(backend, dir.path()).await;
        let camsim = if live_cameras {
            let port = free_port();
            let sim = camsim(port, 3).await;
            for (i, id) in ["infant-room", "toddler-room", "preschool-room"].iter().enumerate() {
                spec.cameras.push(CameraSpec::new(id, &format!("rtsp://127.0.0.1:{port}/cam{}", i + 1)));
            }
            Some(sim)
        } else {
            for id in ["infant-room", "toddler-room", "preschool-room"] {
                spec.cameras.push(CameraSpec::new(id, NOWHERE));
            }
            None
        };
        for id in ["entrance", "nappy-room"] {
            spec.cameras.push(CameraSpec::new(id, NOWHERE));
        }
        let ports = udp_ports();
        spec.extra_toml = live_toml(ports, live_extra);
        let server = spec.start_with(&["--demo"]).await;
        let accounts: Vec<Value> =
            serde_json::from_slice(&std::fs::read(spec.dir.join("data").join("demo-accounts.json")).unwrap()).unwrap();
        let passwords = accounts
            .iter()
            .map(|a| (a["username"].as_str().unwrap().to_owned(), a["password"].as_str().unwrap().to_owned()))
            .collect();
        if live_cameras {
            server.wait_recording(CAMERA, Duration::from_secs(30)).await;
        }
        Demo { _dir: dir, _camsim: camsim, spec, server, ports, passwords }
    }

    /// Restarts the server with other `[live]`/`[policy]` settings, same database.
    async fn restart(&mut self, live_extra: &str) {
        self.server.terminate();
        self.spec.extra_toml = live_toml(self.ports, live_extra);
        self.server = self.spec.start_with(&["--demo"]).await;
    }

    async fn login(&self, user: &str) -> String {
        let pw = self.passwords.get(user).map(String::as_str).unwrap_or(PASSWORD);
        self.server.login(user, pw).await
    }

    /// As the admin: the request must succeed; answers its body.
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.server.call(method.clone(), path, Some(&self.server.token), body).await;
        assert!(status.is_success(), "{method} {path} → {status} {v}");
        v
    }

    async fn classroom(&self, name: &str) -> i64 {
        let v = self.admin(Method::GET, "/api/v1/classrooms", None).await;
        v["classrooms"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name}: {v}"))["id"]
            .as_i64()
            .unwrap()
    }

    async fn child(&self, name: &str) -> i64 {
        let v = self.admin(Method::GET, "/api/v1/children", None).await;
        v["children"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name}: {v}"))["id"]
            .as_i64()
            .unwrap()
    }

    async fn guardian(&self, username: &str) -> i64 {
        let v = self.admin(Method::GET, "/api/v1/guardians", None).await;
        v["guardians"].as_array().unwrap().iter().find(|g| g["username"] == username).unwrap_or_else(|| panic!("no {username}: {v}"))
            ["id"]
            .as_i64()
            .unwrap()
    }

    /// A new parent account, guardian of `child` with consent `given` or not asked.
    async fn add_parent(&self, username: &str, display_name: &str, child: i64, consent: bool) -> i64 {
        let user = json!({ "username": username, "display_name": display_name, "role": "parent", "password": PASSWORD });
        self.admin(Method::POST, "/api/v1/users", Some(user)).await;
        let g = self.admin(Method::POST, "/api/v1/guardians", Some(json!({ "username": username, "display_name": display_name }))).await;
        let g = g["id"].as_i64().unwrap();
        let link = json!({ "child_id": child, "relationship": "father" });
        self.admin(Method::POST, &format!("/api/v1/guardians/{g}/children"), Some(link)).await;
        if consent {
            self.consent(g, child, "given").await;
        }
        g
    }

    async fn consent(&self, guardian: i64, child: i64, state: &str) {
        let path = format!("/api/v1/guardians/{guardian}/children/{child}/consent");
        self.admin(Method::POST, &path, Some(json!({ "state": state, "note": "test" }))).await;
    }

    /// A privacy period covering every minute of every day (so: now), named `name`.
    async fn privacy_now(&self, classroom: i64, name: &str) -> i64 {
        let all = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let p = json!({ "name": name, "weekdays": all, "start": "00:00", "end": "24:00" });
        let v = self.admin(Method::POST, &format!("/api/v1/classrooms/{classroom}/privacy-periods"), Some(p)).await;
        v["id"].as_i64().unwrap()
    }

    async fn live_sessions(&self) -> Vec<Value> {
        self.admin(Method::GET, "/api/v1/live/sessions", None).await["sessions"].as_array().unwrap().clone()
    }

    /// A session as its viewer or an admin sees it (`location` absolute or a path).
    async fn session(&self, location: &str) -> Value {
        let path = location.strip_prefix(&self.server.base).unwrap_or(location);
        self.admin(Method::GET, path, None).await
    }

    /// The audit entries of one live session (`action` live_view_start / _stop).
    async fn audit_of(&self, action: &str, session_id: &str) -> Vec<Value> {
        let v = self.admin(Method::GET, &format!("/api/v1/audit?action={action}&limit=500"), None).await;
        v["entries"].as_array().unwrap().iter().filter(|e| e["detail"]["session"] == session_id).cloned().collect()
    }

    async fn live_cameras(&self, token: &str) -> Value {
        let (status, v) = self.server.call(Method::GET, "/api/v1/live/cameras", Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }
}

struct Whep {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Whep {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// A 403 with `code` and a message; answers the body.
    fn refused(&self, code: &str) -> Value {
        let v = self.json();
        assert_eq!((self.status, v["code"].as_str()), (StatusCode::FORBIDDEN, Some(code)), "{}", self.body);
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        v
    }
}

async fn whep_request(server: &Server, method: Method, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: &str) -> Whep {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", server.base)).body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("WHEP request");
    Whep { status: r.status(), headers: r.headers().clone(), body: r.text().await.unwrap() }
}

/// `POST /api/v1/cameras/{camera}/whep` with an SDP offer.
async fn whep_post(server: &Server, camera: &str, token: Option<&str>, offer: &str) -> Whep {
    let path = format!("/api/v1/cameras/{camera}/whep");
    whep_request(server, Method::POST, &path, token, &[("content-type", "application/sdp")], offer).await
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The test venv's python (scripts/install-test-deps.sh puts aiortc there).
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("CRADLE_TEST_VENV").map(PathBuf::from).unwrap_or_else(|| {
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").expect("HOME")).join(".local/share"));
        data.join("cradle/test-venv")
    });
    let python = venv.join("bin/python");
    assert!(python.exists(), "no {}: run scripts/install-test-deps.sh (it installs aiortc there)", python.display());
    python
}

/// The players: a parent's phone (Chromium) and a WHEP client (aiortc).
struct Player;

impl Player {
    /// Parent's phone: tests/web/live_page.py signs in on /live and taps `camera`.
    fn chromium(base: &str, user: &str, password: &str, camera: &str, args: &[&str]) -> Events {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(repo("tests/web/live_page.py")).args([base, user, password, camera]).args(args);
        Events::spawn("live_page.py (chromium)", cmd)
    }

    /// aiortc plays `camera` for `seconds` at most, with `token` as Bearer.
    fn aiortc(base: &str, camera: &str, token: &str, seconds: f64) -> Events {
        let mut cmd = Command::new(venv_python());
        cmd.arg(repo("tests/web/whep_aiortc.py")).arg(format!("{base}/api/v1/cameras/{camera}/whep")).arg(token).arg(seconds.to_string());
        Events::spawn("whep_aiortc.py", cmd)
    }
}

/// A session that ended because of a change made at `t0`: it ended for `reason`,
/// within 2 s of it, and is `ended` for its viewer too.
async fn assert_ended_within_2s(c: &Demo, location: &str, reason: &str, t0: f64) -> Value {
    let path = location.strip_prefix(&c.server.base).unwrap_or(location).to_owned();
    wait_until(&format!("session {path} ended"), Duration::from_secs(5), || async {
        c.session(&path).await["state"] == "ended"
    })
    .await;
    let s = c.session(&path).await;
    assert_eq!(s["end_reason"], reason, "{s}");
    assert!(s["message"].as_str().is_some_and(|m| !m.is_empty()), "{s}");
    let ended = secs(&s["ended"]);
    assert!(ended >= t0 && ended - t0 <= 2.0, "ended {:.3} s after the change (at most 2 s): {s}", ended - t0);
    assert!(s["bytes_sent"].as_u64().unwrap() > 0 && s["frames_sent"].as_u64().unwrap() > 0, "it had played: {s}");
    s
}

/// A parent's phone and aiortc watch the same camera at once; the family's stream limit
/// holds for the other guardian; withdrawing consent stops the phone's picture within
/// 2 s; every session is audited with what it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_in_chromium_and_an_aiortc_client_watch_one_camera_until_consent_is_withdrawn() {
    let c = Demo::start(Backend::Sqlite, true, "max_streams_per_family = 1").await;
    let xiaobao = c.child(WANG_XIAOBAO).await;
    let mum = c.guardian("parent-infant").await;
    c.add_parent("parent-infant-dad", "王爸爸 Mr Wang", xiaobao, true).await;
    let dad = c.login("parent-infant-dad").await;
    let operator = c.login("operator").await;

    // The phone: sign in on /live, tap the infant room, see video.
    let artifacts = repo("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("live-parent-phone.png");
    let _ = std::fs::remove_file(&shot);
    let mut phone = Player::chromium(
        &c.server.base,
        "parent-infant",
        &c.passwords["parent-infant"],
        CAMERA,
        &["--until-ended", "30", "--screenshot", shot.to_str().unwrap()],
    );
    let playing = phone.event("playing", Duration::from_secs(60)).await;
    println!("chromium: {playing}");
    assert_eq!(playing["codec"], "video/H264", "{playing}");
    assert!(playing["frames_decoded"].as_u64().unwrap() > 0, "{playing}");
    let overlay = playing["overlay"].as_str().unwrap();
    assert!(overlay.contains("王妈妈 Mrs Wang"), "the picture names its viewer: {overlay:?}");
    assert!(playing["width"].as_u64().unwrap() <= 390, "no sideways scrolling on a phone: {playing}");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot {} bytes", png.len());
    let phone_location = playing["location"].as_str().unwrap().to_owned();

    // aiortc, as the operator, at the same time: the server lists both.
    let mut desk = Player::aiortc(&c.server.base, CAMERA, &operator, 4.0);
    desk.event("playing", Duration::from_secs(30)).await;
    let sessions = c.live_sessions().await;
    let mut who: Vec<&str> = sessions.iter().map(|s| s["username"].as_str().unwrap()).collect();
    who.sort();
    assert_eq!(who, ["operator", "parent-infant"], "{sessions:?}");
    let sending = |s: &Value| s["camera_id"] == CAMERA && s["state"] == "active" && s["frames_sent"].as_u64() > Some(0);
    assert!(sessions.iter().all(sending), "{sessions:?}");
    let (status, _) = c.server.call(Method::GET, "/api/v1/live/sessions", Some(&dad), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "parents do not see who watches");
    let (status, _) = c.server.call(Method::GET, &phone_location, Some(&operator), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another viewer's session is not the operator's to read");

    // The other guardian of the same child: the family already has its one stream.
    whep_post(&c.server, CAMERA, Some(&dad), &h264_offer()).await.refused("family_limit");
    let list = c.live_cameras(&dad).await;
    assert_eq!(list["sessions"], json!({ "active": 1, "max": 1 }), "{list}");
    let cam = &list["cameras"].as_array().unwrap()[0];
    assert_eq!(
        (cam["id"].as_str(), cam["available"].as_bool(), cam["reason"]["code"].as_str()),
        (Some(CAMERA), Some(false), Some("family_limit")),
        "{list}"
    );

    let done = desk.event("done", Duration::from_secs(30)).await;
    println!("aiortc: {done}");
    let picture = (done["codec"].as_str(), done["width"].as_u64(), done["height"].as_u64());
    assert_eq!(picture, (Some("video/H264"), Some(1920), Some(1080)), "camsim's 1080p decoded: {done}");
    assert!(done["frames"].as_u64().unwrap() >= 50, "4 s of 25 fps decoded: {done}");
    assert_eq!((done["stopped_by"].as_str(), done["delete_status"].as_u64()), (Some("time"), Some(204)), "{done}");
    let desk_location = done["location"].as_str().unwrap().to_owned();
    desk.finish().await;
    let desk_session = c.session(&desk_location).await;
    let end = (desk_session["state"].as_str(), desk_session["end_reason"].as_str());
    assert_eq!(end, (Some("ended"), Some("ended_by_viewer")), "{desk_session}");

    // Consent withdrawn: the phone's picture stops within 2 s and the page says why.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = unix_now();
    c.consent(mum, xiaobao, "withdrawn").await;
    let ended = phone.event("ended", Duration::from_secs(30)).await;
    println!("chromium after the withdrawal at {t0:.3}: {ended}");
    assert_eq!(ended["ended"], true, "{ended}");
    let last = ended["last_frame_wall"].as_f64().unwrap();
    assert!(last - t0 <= 2.5, "the phone decoded frames {:.3} s after the withdrawal", last - t0);
    // A lost packet may hold the decoder until the next keyframe (camsim: every 2 s).
    assert!(last >= t0 - 2.0, "the phone was still playing just before the withdrawal ({:.3} s)", last - t0);
    let message = ended["message"].as_str().unwrap().to_lowercase();
    assert!(message.contains("consent") || message.contains("同意"), "the page says why: {ended}");
    phone.finish().await;
    let phone_session = assert_ended_within_2s(&c, &phone_location, "consent", t0).await;

    // The family's stream is free again: the other guardian may watch now.
    let r = whep_post(&c.server, CAMERA, Some(&dad), &h264_offer()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = whep_request(&c.server, Method::DELETE, r.header("location"), Some(&dad), &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // Both played sessions are audited: who, which camera, how long, how much, why it ended.
    for (s, user, reason) in [(&phone_session, "parent-infant", "consent"), (&desk_session, "operator", "ended_by_viewer")] {
        let id = s["id"].as_str().unwrap();
        wait_until("the live_view_stop entry", Duration::from_secs(5), || async {
            !c.audit_of("live_view_stop", id).await.is_empty()
        })
        .await;
        let stop = c.audit_of("live_view_stop", id).await;
        let start = c.audit_of("live_view_start", id).await;
        assert_eq!((start.len(), stop.len()), (1, 1), "{start:?} {stop:?}");
        for e in [&start[0], &stop[0]] {
            assert_eq!((e["actor"].as_str(), e["target"].as_str()), (Some(user), Some("camera:infant-room")), "{e}");
        }
        let d = &stop[0]["detail"];
        assert_eq!(d["reason"], reason, "{d}");
        assert!(d["bytes_sent"].as_u64().unwrap() > 100_000, "a played session sent video: {d}");
        assert_eq!((&d["started"], &d["ended"]), (&s["started"], &s["ended"]), "{d} vs {s}");
    }
}

/// Starts aiortc as `token` on the infant room, makes `change` once it plays, and checks
/// the session ends for `reason` within 2 s and no frame is decoded 2.5 s after.
async fn ends_within_2s(c: &Demo, token: &str, change: impl std::future::Future<Output = ()>, reason: &str) -> Value {
    let mut player = Player::aiortc(&c.server.base, CAMERA, token, 20.0);
    let playing = player.event("playing", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = unix_now();
    change.await;
    let done = player.event("done", Duration::from_secs(15)).await;
    println!("{reason}: change at {t0:.3}: {done}");
    assert_ne!(done["stopped_by"], "time", "the server ended it: {done}");
    let last = done["last_frame_wall"].as_f64().unwrap();
    assert!(last - t0 <= 2.5 && last >= t0 - 2.0, "last frame {:.3} s after the change: {done}", last - t0);
    player.finish().await;
    assert_ended_within_2s(c, playing["location"].as_str().unwrap(), reason, t0).await
}

/// Each kind of change that takes the right away ends a running session within 2 s,
/// for its own reason: a privacy period starting, the child moving to another classroom,
/// the account being disabled. Each is audited with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_sessions_end_within_2s_when_privacy_starts_the_child_moves_or_the_account_is_disabled() {
    let c = Demo::start(Backend::Sqlite, true, "").await;
    let parent = c.login("parent-infant").await;
    let infant_room = c.classroom(INFANT_ROOM).await;
    let rainbow = c.classroom(RAINBOW_ROOM).await;
    let xiaobao = c.child(WANG_XIAOBAO).await;
    let mut ended = Vec::new();

    let nap = c.privacy_now(infant_room, "午睡 Test nap");
    let s = ends_within_2s(&c, &parent, async { nap.await; }, "privacy").await;
    ended.push(s);
    let periods = c.admin(Method::GET, "/api/v1/classrooms", None).await;
    for room in periods["classrooms"].as_array().unwrap().iter().filter(|r| r["id"] == infant_room) {
        for p in room["privacy_periods"].as_array().unwrap() {
            c.admin(Method::DELETE, &format!("/api/v1/classrooms/{infant_room}/privacy-periods/{}", p["id"]), None).await;
        }
    }

    let move_path = format!("/api/v1/children/{xiaobao}/move");
    let moved = c.admin(Method::POST, &move_path, Some(json!({ "classroom_id": rainbow })));
    ended.push(ends_within_2s(&c, &parent, async { moved.await; }, "moved").await);
    c.admin(Method::POST, &move_path, Some(json!({ "classroom_id": infant_room }))).await;

    let disabled = c.admin(Method::PATCH, "/api/v1/users/parent-infant", Some(json!({ "disabled": true })));
    ended.push(ends_within_2s(&c, &parent, async { disabled.await; }, "account").await);

    for s in &ended {
        let stop = c.audit_of("live_view_stop", s["id"].as_str().unwrap()).await;
        assert_eq!(stop.len(), 1, "{s}");
        assert_eq!(stop[0]["detail"]["reason"], s["end_reason"], "{stop:?}");
        assert!(stop[0]["detail"]["bytes_sent"].as_u64().unwrap() > 0, "{stop:?}");
    }
}

/// WHEP's HTTP side (draft-ietf-wish-whep §4): the 201 and its headers, trickle ICE by
/// PATCH with the ETag, no ICE restarts, DELETE, CORS preflights, ICE servers as Link
/// headers; offers that are not SDP or share no codec are refused as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_sessions_follow_the_protocol() {
    let turn = "turn_servers = [\"turn:127.0.0.1:3478?transport=udp\"]\nturn_secret = \"0123456789abcdef-test\"\nturn_ttl_minutes = 10";
    let c = Demo::start(Backend::Sqlite, true, turn).await;
    let operator = c.login("operator").await;
    let parent = c.login("parent-infant").await;

    let before = unix_now() as i64;
    let r = whep_post(&c.server, CAMERA, Some(&operator), &h264_offer()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.header("content-type"), "application/sdp");
    assert_eq!(r.header("accept-patch"), "application/trickle-ice-sdpfrag");
    assert_eq!(r.header("access-control-allow-origin"), "*");
    let location = r.header("location").to_owned();
    assert!(location.starts_with("/api/v1/live/sessions/"), "{location}");
    let etag = r.header("etag").to_owned();
    assert!(etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'), "a quoted ETag: {etag}");
    // The answer: send-only H.264 from a host candidate in [live] udp_ports on the bound address.
    assert!(r.body.starts_with("v=0") && r.body.contains("a=sendonly") && r.body.contains("H264/90000"), "{}", r.body);
    let ports: Vec<u16> = r
        .body
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f[4], "127.0.0.1", "candidates only on [live] bind: {l}");
            f[5].parse().unwrap()
        })
        .collect();
    assert!(!ports.is_empty() && ports.iter().all(|p| (c.ports.0..=c.ports.1).contains(p)), "{ports:?} outside {:?}", c.ports);
    // TURN with credentials that expire after turn_ttl_minutes (coturn's REST scheme).
    let link = r.header("link");
    let prefix = "<turn:127.0.0.1:3478?transport=udp>; rel=\"ice-server\"; username=\"";
    assert!(link.starts_with(prefix) && link.contains("credential=\"") && link.contains("credential-type=\"password\""), "{link}");
    let expiry: i64 = link[prefix.len()..].split(':').next().unwrap().parse().unwrap();
    assert!((before + 600..=unix_now() as i64 + 600).contains(&expiry), "expiry {expiry}, now {before}");
    assert!(link[prefix.len()..].starts_with(&format!("{expiry}:operator\"")), "{link}");

    // Trickle ICE: an RFC 8840 fragment with the session's ETag.
    let frag = concat!(
        "a=ice-ufrag:a1b2\r\na=ice-pwd:0123456789abcdefghijklmn\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
    );
    let sdpfrag = "application/trickle-ice-sdpfrag";
    let patch = |headers: Vec<(&'static str, String)>, body: &'static str| {
        let (server, operator, location) = (&c.server, operator.clone(), location.clone());
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            whep_request(server, Method::PATCH, &location, Some(&operator), &h, body).await.status
        }
    };
    let ct = |v: &str| ("content-type", v.to_owned());
    let im = |v: &str| ("if-match", v.to_owned());
    assert_eq!(patch(vec![ct(sdpfrag)], frag).await, StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(patch(vec![ct(sdpfrag), im("\"not-the-etag\"")], frag).await, StatusCode::PRECONDITION_FAILED);
    assert_eq!(patch(vec![ct(sdpfrag), im("*")], frag).await, StatusCode::UNPROCESSABLE_ENTITY, "If-Match: * is an ICE restart");
    let restart = "a=ice-ufrag:new1\r\na=ice-pwd:anotherpasswordof24chars\r\n";
    assert_eq!(patch(vec![ct(sdpfrag), im(&etag)], restart).await, StatusCode::UNPROCESSABLE_ENTITY, "new credentials: a restart");
    assert_eq!(patch(vec![ct("application/sdp"), im(&etag)], frag).await, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(patch(vec![ct(sdpfrag), im(&etag)], frag).await, StatusCode::NO_CONTENT);

    // Only its viewer (or an admin) reads or ends it.
    let (status, s) = c.server.call(Method::GET, &location, Some(&operator), None).await;
    let seen = (status, s["state"].as_str(), s["username"].as_str(), s["camera_id"].as_str());
    assert_eq!(seen, (StatusCode::OK, Some("active"), Some("operator"), Some(CAMERA)), "{s}");
    let r = whep_request(&c.server, Method::DELETE, &location, Some(&parent), &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a parent cannot end the operator's session");
    assert_eq!(c.session(&location).await["state"], "active");

    let r = whep_request(&c.server, Method::DELETE, &location, Some(&operator), &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let s = c.session(&location).await;
    assert_eq!((s["state"].as_str(), s["end_reason"].as_str()), (Some("ended"), Some("ended_by_viewer")), "{s}");
    assert_eq!(patch(vec![ct(sdpfrag), im(&etag)], frag).await, StatusCode::NOT_FOUND, "no trickling into an ended session");
    wait_until("the session leaves the list", Duration::from_secs(5), || async { c.live_sessions().await.is_empty() }).await;

    // CORS preflights: a WHEP player on another origin may POST, PATCH and DELETE.
    let r = whep_request(&c.server, Method::OPTIONS, &format!("/api/v1/cameras/{CAMERA}/whep"), None, &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.header("access-control-allow-methods").contains("POST"), "{:?}", r.headers);
    assert_eq!((r.header("accept-post"), r.header("access-control-allow-origin")), ("application/sdp", "*"));
    assert!(r.header("access-control-allow-headers").to_lowercase().contains("authorization"), "{:?}", r.headers);
    let r = whep_request(&c.server, Method::OPTIONS, &location, None, &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let allowed = r.header("access-control-allow-methods");
    assert!(allowed.contains("PATCH") && allowed.contains("DELETE"), "{allowed}");
    assert!(r.header("access-control-allow-headers").to_lowercase().contains("if-match"), "{:?}", r.headers);

    // Not an offer, or no codec in common (the server never transcodes).
    let r = whep_post(&c.server, CAMERA, Some(&operator), "hello").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let vp8 = offer("a=rtpmap:102 VP8/90000");
    let r = whep_post(&c.server, CAMERA, Some(&operator), &vp8).await;
    assert_eq!((r.status, r.json()["code"].as_str()), (StatusCode::NOT_ACCEPTABLE, Some("codec")), "{}", r.body);
    assert!(c.live_sessions().await.is_empty(), "refused offers leave no session");
}

/// Every rule that keeps a viewer out answers 403 with its code, and the camera list
/// says the same; with the rule lifted the request gets through them (503: these
/// cameras point nowhere, so "offline" is the answer once every rule passed).
async fn live_view_is_refused_with_the_reason_the_rules_give(backend: Backend) {
    let mut c = Demo::start(backend, false, "").await;
    let parent = c.login("parent-infant").await;
    let toddler_parent = c.login("parent-toddler").await;
    let offer = h264_offer();
    let through = |r: Whep| {
        assert_eq!((r.status, r.json()["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("offline")), "{}", r.body);
    };
    through(whep_post(&c.server, CAMERA, Some(&parent), &offer).await);

    // Who may ask at all, and for what.
    let r = whep_post(&c.server, CAMERA, None, &offer).await;
    assert_eq!((r.status, r.header("access-control-allow-origin")), (StatusCode::UNAUTHORIZED, "*"), "{}", r.body);
    let r = whep_post(&c.server, CAMERA, Some("not-a-token"), &offer).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let r = whep_post(&c.server, "no-such-camera", Some(&parent), &offer).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let path = format!("/api/v1/cameras/{CAMERA}/whep");
    let r = whep_request(&c.server, Method::POST, &path, Some(&parent), &[("content-type", "application/json")], &offer).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.body);
    for role in ["investigator", "regulator", "committee"] {
        let token = c.login(role).await;
        whep_post(&c.server, CAMERA, Some(&token), &offer).await.refused("role");
    }

    // Not theirs: another classroom, the private nappy room, the entrance (not viewable).
    whep_post(&c.server, CAMERA, Some(&toddler_parent), &offer).await.refused("not_yours");
    whep_post(&c.server, "nappy-room", Some(&parent), &offer).await.refused("not_yours");
    whep_post(&c.server, "entrance", Some(&parent), &offer).await.refused("not_yours");
    let list = c.live_cameras(&parent).await;
    let ids: Vec<&str> = list["cameras"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [CAMERA], "a parent's list holds their child's classroom only: {list}");

    // A privacy period now: refused with its name and end, and listed so.
    let infant_room = c.classroom(INFANT_ROOM).await;
    let period = c.privacy_now(infant_room, "午睡 Test nap").await;
    let v = whep_post(&c.server, CAMERA, Some(&parent), &offer).await.refused("privacy");
    assert_eq!(v["period"], "午睡 Test nap", "{v}");
    let until = secs(&v["until"]);
    assert!(until > unix_now() && until <= unix_now() + 86_400.0, "privacy lasts to the end of today: {v}");
    let list = c.live_cameras(&parent).await;
    let cam = &list["cameras"][0];
    assert_eq!((cam["available"].as_bool(), cam["reason"]["code"].as_str()), (Some(false), Some("privacy")), "{list}");
    assert_eq!((&cam["reason"]["period"], &cam["reason"]["until"]), (&v["period"], &v["until"]), "{list}");
    c.admin(Method::DELETE, &format!("/api/v1/classrooms/{infant_room}/privacy-periods/{period}"), None).await;
    through(whep_post(&c.server, CAMERA, Some(&parent), &offer).await);

    // Outside viewing hours: open only on the day after tomorrow (centre time).
    let centre = c.admin(Method::GET, "/api/v1/centre", None).await["centre"].clone();
    let tz = centre["time_zone"].as_str().unwrap();
    let open_day = jiff::Timestamp::now().in_tz(tz).unwrap().date().checked_add(jiff::Span::new().days(2)).unwrap();
    let weekday = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][open_day.weekday().to_monday_zero_offset() as usize];
    let hours = json!({ weekday: { "start": "08:00", "end": "18:00" } });
    let patch = |hours: Value| json!({ "name": centre["name"], "time_zone": tz, "viewing_hours": hours });
    c.admin(Method::PATCH, "/api/v1/centre", Some(patch(hours))).await;
    let v = whep_post(&c.server, CAMERA, Some(&parent), &offer).await.refused("closed");
    let opens = format!("{open_day}T08:00:00");
    assert!(v["until"].as_str().is_some_and(|u| u.starts_with(&opens)), "opens at {opens}: {v}");
    let list = c.live_cameras(&parent).await;
    assert_eq!(list["cameras"][0]["reason"]["code"], "closed", "{list}");
    c.admin(Method::PATCH, "/api/v1/centre", Some(patch(centre["viewing_hours"].clone()))).await;
    through(whep_post(&c.server, CAMERA, Some(&parent), &offer).await);

    // The parent's own consent withdrawn.
    let xiaobao = c.child(WANG_XIAOBAO).await;
    let mum = c.guardian("parent-infant").await;
    c.consent(mum, xiaobao, "withdrawn").await;
    whep_post(&c.server, CAMERA, Some(&parent), &offer).await.refused("consent");
    assert_eq!(c.live_cameras(&parent).await["cameras"][0]["reason"]["code"], "consent");
    c.consent(mum, xiaobao, "given").await;
    through(whep_post(&c.server, CAMERA, Some(&parent), &offer).await);

    // [policy] classroom_consent: 李朵朵's family has not consented, so nobody watches
    // her classroom until they do.
    c.restart("[policy]\nclassroom_consent = true").await;
    let parent = c.login("parent-infant").await;
    whep_post(&c.server, CAMERA, Some(&parent), &offer).await.refused("classroom_consent");
    assert_eq!(c.live_cameras(&parent).await["cameras"][0]["reason"]["code"], "classroom_consent");
    let duoduo = c.child(LI_DUODUO).await;
    let li = c.add_parent("parent-duoduo", "李妈妈 Mrs Li", duoduo, false).await;
    whep_post(&c.server, CAMERA, Some(&parent), &offer).await.refused("classroom_consent");
    c.consent(li, duoduo, "given").await;
    through(whep_post(&c.server, CAMERA, Some(&parent), &offer).await);

    // [policy] parent_live_view = false: no parent watches; staff still do.
    c.restart("[policy]\nparent_live_view = false").await;
    let parent = c.login("parent-infant").await;
    whep_post(&c.server, CAMERA, Some(&parent), &offer).await.refused("policy");
    let list = c.live_cameras(&parent).await;
    let seen = (list["parent_live_view"].as_bool(), list["cameras"][0]["reason"]["code"].as_str());
    assert_eq!(seen, (Some(false), Some("policy")), "{list}");
    let operator = c.login("operator").await;
    through(whep_post(&c.server, CAMERA, Some(&operator), &offer).await);
}

/// Snapshots (`GET /api/v1/cameras/{id}/snapshot.jpg`) follow the live-view rules: staff
/// see any camera, a parent only a camera they may watch now; the picture is the camera's
/// latest keyframe as a JPEG that decodes; every view is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_jpegs_under_the_live_view_rules() {
    let c = Demo::start(Backend::Sqlite, true, "").await;
    let get = |token: String, camera: &'static str| {
        let url = format!("{}/api/v1/cameras/{camera}/snapshot.jpg", c.server.base);
        async move { reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap() }
    };
    let operator = c.login("operator").await;
    let r = get(operator.clone(), CAMERA).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert!(r.headers().contains_key("x-cradle-taken"));
    let jpeg = r.bytes().await.unwrap();
    assert_eq!(&jpeg[..2], &[0xff, 0xd8], "a JPEG");
    let path = c.spec.dir.join("snapshot.jpg");
    std::fs::write(&path, &jpeg).unwrap();
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "mjpeg,1280,720", "camsim's 1080p keyframe, scaled to 1280 wide");

    // A parent of that classroom may; a parent of another classroom and an investigator may not.
    let parent = c.login("parent-infant").await;
    assert_eq!(get(parent, CAMERA).await.status(), StatusCode::OK);
    let other = get(c.login("parent-toddler").await, CAMERA).await;
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    assert!(other.text().await.unwrap().contains("error"));
    assert_eq!(get(c.login("investigator").await, CAMERA).await.status(), StatusCode::FORBIDDEN);
    // A camera that has sent nothing yet answers 503; an unknown one 404.
    assert_eq!(get(operator.clone(), "entrance").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(operator, "no-such-camera").await.status(), StatusCode::NOT_FOUND);

    let audit = c.admin(Method::GET, "/api/v1/audit?action=snapshot_viewed&limit=50", None).await;
    let actors: Vec<&str> = audit["entries"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert!(actors.contains(&"operator") && actors.contains(&"parent-infant"), "{actors:?}");
    assert_eq!(actors.len(), 2, "refused requests view nothing: {actors:?}");
}
