//! The centre's administration over HTTP, as an admin builds a centre and as each other
//! role tries to read or change it: the classroom and centre limits, private areas,
//! consent, moves, decommissioning, and what a parent can reach by guessing ids. Real
//! binary, on SQLite and PostgreSQL.

#[macro_use]
mod support;

use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::*;

on_both_databases!(
    an_admin_builds_a_centre_and_parents_see_exactly_their_classroom,
    cameras_added_by_an_admin_record_at_once_and_after_a_restart,
);

const PASSWORD: &str = "a long enough password";
const NOWHERE: &str = "rtsp://127.0.0.1:9/none";

struct Centre {
    _dir: tempfile::TempDir,
    server: Server,
}

impl Centre {
    /// As the admin: the request must succeed; answers its body.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.server.call(method.clone(), path, Some(&self.server.token), body).await;
        assert!(status.is_success(), "{method} {path} → {status} {v}");
        v
    }

    /// As `token`: the request must fail with `want` and say why.
    async fn refused(&self, token: &str, method: Method, path: &str, body: Option<Value>, want: StatusCode) -> String {
        let (status, v) = self.server.call(method.clone(), path, Some(token), body).await;
        assert_eq!(status, want, "{method} {path} → {v}");
        let reason = v["error"].as_str().unwrap_or_default().to_owned();
        assert!(!reason.is_empty(), "{method} {path}: {want} without a reason: {v}");
        reason
    }

    async fn camera_ids(&self, token: &str) -> Vec<String> {
        let (status, v) = self.server.call(Method::GET, "/api/v1/cameras", Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let mut ids: Vec<String> = v["cameras"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    }
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

async fn an_admin_builds_a_centre_and_parents_see_exactly_their_classroom(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(backend, dir.path()).await;
    for cam in ["room-a", "room-b", "nappy", "hall"] {
        spec.cameras.push(CameraSpec::new(cam, NOWHERE));
    }
    let roles = [
        ("operator-user", "operator"),
        ("regulator-user", "regulator"),
        ("committee-user", "committee"),
        ("investigator-user", "investigator"),
        ("parent-a", "parent"),
        ("parent-b", "parent"),
    ];
    for (user, role) in roles {
        let out = spec.add_user(user, role, PASSWORD);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let server = spec.start().await;
    let mut tokens = std::collections::HashMap::new();
    for (user, _) in roles {
        tokens.insert(user, server.login(user, PASSWORD).await);
    }
    let c = Centre { _dir: dir, server };
    let (operator, regulator, committee) = (&tokens["operator-user"], &tokens["regulator-user"], &tokens["committee-user"]);
    let (parent_a, parent_b) = (&tokens["parent-a"], &tokens["parent-b"]);

    // The centre: Asia/Shanghai by default, 150 places at most.
    let centre = c.ok(Method::GET, "/api/v1/centre", None).await;
    assert_eq!(centre["centre"]["time_zone"], "Asia/Shanghai", "{centre}");
    assert_eq!(centre["places"]["limit"], 150, "{centre}");
    let all_day = json!({ "mon": { "start": "00:00", "end": "24:00" }, "sun": { "start": "08:00", "end": "12:00" } });
    let body = json!({ "name": "阳光托育园 Sunshine", "time_zone": "Asia/Shanghai", "viewing_hours": all_day });
    let updated = c.ok(Method::PATCH, "/api/v1/centre", Some(body)).await;
    assert_eq!(updated["viewing_hours"]["sun"]["end"], "12:00", "{updated}");
    let bad_tz = json!({ "name": "x", "time_zone": "Mars/Olympus", "viewing_hours": {} });
    let why = c.refused(&c.server.token, Method::PATCH, "/api/v1/centre", Some(bad_tz), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(why.contains("Mars/Olympus"), "{why}");

    // Classrooms of a kind, each with its legal maximum; 150 places in all.
    let infant = c.ok(Method::POST, "/api/v1/classrooms", Some(json!({ "name": "小星星 Stars", "kind": "infant" }))).await;
    assert_eq!(infant["capacity"], 10, "{infant}");
    let why = c
        .refused(
            &c.server.token,
            Method::POST,
            "/api/v1/classrooms",
            Some(json!({ "name": "Too big", "kind": "infant", "capacity": 11 })),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(why.contains("10"), "{why}");
    let toddler = c.ok(Method::POST, "/api/v1/classrooms", Some(json!({ "name": "向日葵 Sunflowers", "kind": "toddler" }))).await;
    assert_eq!(toddler["capacity"], 15, "{toddler}");
    for i in 0..6 {
        c.ok(Method::POST, "/api/v1/classrooms", Some(json!({ "name": format!("大班 {i}"), "kind": "preschool" }))).await;
    }
    // 10 + 15 + 6 × 20 = 145: a 15-place room would pass 150; a 5-place one fits.
    let why = c
        .refused(
            &c.server.token,
            Method::POST,
            "/api/v1/classrooms",
            Some(json!({ "name": "One too many", "kind": "toddler" })),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(why.contains("150"), "{why}");
    c.ok(Method::POST, "/api/v1/classrooms", Some(json!({ "name": "Small", "kind": "toddler", "capacity": 5 }))).await;
    let places = c.ok(Method::GET, "/api/v1/centre", None).await;
    assert_eq!(places["places"]["capacity"], 150, "{places}");
    let (room_a, room_b) = (id(&infant), id(&toddler));

    // A nap-time privacy period, listed with its classroom; another room cannot delete it.
    let nap = json!({ "name": "午睡 Nap", "weekdays": ["mon", "tue", "wed", "thu", "fri"], "start": "12:00", "end": "14:30" });
    let period = c.ok(Method::POST, &format!("/api/v1/classrooms/{room_b}/privacy-periods"), Some(nap)).await;
    let rooms = c.ok(Method::GET, "/api/v1/classrooms", None).await;
    let b = rooms["classrooms"].as_array().unwrap().iter().find(|r| r["id"] == room_b).unwrap();
    assert_eq!(b["privacy_periods"][0]["name"], "午睡 Nap", "{b}");
    let wrong_room = format!("/api/v1/classrooms/{room_a}/privacy-periods/{}", id(&period));
    c.refused(&c.server.token, Method::DELETE, &wrong_room, None, StatusCode::NOT_FOUND).await;

    // Areas; a camera in a private area can never be opened to parents.
    let nappy = c.ok(Method::POST, "/api/v1/areas", Some(json!({ "name": "换尿布间 Nappy room", "private": true }))).await;
    let hall = c.ok(Method::POST, "/api/v1/areas", Some(json!({ "name": "大厅 Hall" }))).await;
    let place = |kind: &str, key: &str, v: i64| json!({ "placement": { "kind": kind, key: v }, "parent_viewable": true });
    c.ok(Method::PATCH, "/api/v1/centre/cameras/room-a", Some(place("classroom", "classroom_id", room_a))).await;
    c.ok(Method::PATCH, "/api/v1/centre/cameras/room-b", Some(place("classroom", "classroom_id", room_b))).await;
    let why = c
        .refused(
            &c.server.token,
            Method::PATCH,
            "/api/v1/centre/cameras/nappy",
            Some(place("area", "area_id", id(&nappy))),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(why.to_lowercase().contains("private"), "{why}");
    c.ok(Method::PATCH, "/api/v1/centre/cameras/nappy", Some(json!({ "placement": { "kind": "area", "area_id": id(&nappy) } })))
        .await;
    c.ok(Method::PATCH, "/api/v1/centre/cameras/hall", Some(place("area", "area_id", id(&hall)))).await;
    // Cameras are added in the config file, not here.
    let why = c
        .refused(&c.server.token, Method::PATCH, "/api/v1/centre/cameras/ghost", Some(json!({})), StatusCode::NOT_FOUND)
        .await;
    assert!(why.contains("ghost"), "{why}");
    // Making the hall private switches its camera's parent viewing off, and says so.
    let v = c.ok(Method::PATCH, &format!("/api/v1/areas/{}", id(&hall)), Some(json!({ "name": "大厅 Hall", "private": true }))).await;
    assert_eq!(v["cameras_no_longer_viewable"], json!(["hall"]), "{v}");

    // Children and the classroom limit: the toddler room holds 15.
    let child_a = c.ok(Method::POST, "/api/v1/children", Some(json!({ "name": "王小宝", "classroom_id": room_a, "birth_date": "2025-07-12" }))).await;
    let child_b = c.ok(Method::POST, "/api/v1/children", Some(json!({ "name": "李小花", "classroom_id": room_b }))).await;
    for i in 1..15 {
        c.ok(Method::POST, "/api/v1/children", Some(json!({ "name": format!("Toddler {i}"), "classroom_id": room_b }))).await;
    }
    let why = c
        .refused(
            &c.server.token,
            Method::POST,
            "/api/v1/children",
            Some(json!({ "name": "Sixteenth", "classroom_id": room_b })),
            StatusCode::CONFLICT,
        )
        .await;
    assert!(why.contains("15"), "{why}");
    let why = c
        .refused(
            &c.server.token,
            Method::POST,
            "/api/v1/children",
            Some(json!({ "name": "Nowhere", "classroom_id": 99999 })),
            StatusCode::NOT_FOUND,
        )
        .await;
    assert!(why.contains("99999"), "{why}");

    // Guardians, links and consent.
    let ga = c.ok(Method::POST, "/api/v1/guardians", Some(json!({ "username": "parent-a", "display_name": "王妈妈" }))).await;
    let gb = c.ok(Method::POST, "/api/v1/guardians", Some(json!({ "username": "parent-b", "display_name": "李爸爸" }))).await;
    let link = |child: &Value, rel: &str| json!({ "child_id": id(child), "relationship": rel });
    c.ok(Method::POST, &format!("/api/v1/guardians/{}/children", id(&ga)), Some(link(&child_a, "mother"))).await;
    c.ok(Method::POST, &format!("/api/v1/guardians/{}/children", id(&gb)), Some(link(&child_b, "father"))).await;
    // Linked but never asked: consent not given, so nothing to watch yet.
    assert!(c.camera_ids(parent_a).await.is_empty());
    let consent_a = format!("/api/v1/guardians/{}/children/{}/consent", id(&ga), id(&child_a));
    let consent_b = format!("/api/v1/guardians/{}/children/{}/consent", id(&gb), id(&child_b));
    let given = json!({ "state": "given", "note": "signed form" });
    let r = c.ok(Method::POST, &consent_a, Some(given.clone())).await;
    assert_eq!((r["state"].as_str(), r["by"].as_str()), (Some("given"), Some(TEST_ADMIN)), "{r}");
    c.ok(Method::POST, &consent_b, Some(given)).await;

    // Each parent sees exactly their child's classroom camera, never the nappy room.
    assert_eq!(c.camera_ids(parent_a).await, ["room-a"]);
    assert_eq!(c.camera_ids(parent_b).await, ["room-b"]);
    let mine = c.server.call(Method::GET, "/api/v1/me/children", Some(parent_a), None).await.1;
    assert_eq!(mine["children"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["children"][0]["child"]["name"], "王小宝", "{mine}");

    // Id-guessing: another classroom's camera, another family's child or guardian,
    // the centre's structure — all 403 for a parent, whatever the id.
    let guesses = [
        (Method::GET, "/api/v1/cameras/room-b".to_owned()),
        (Method::GET, "/api/v1/cameras/nappy".to_owned()),
        (Method::GET, format!("/api/v1/children/{}", id(&child_b))),
        (Method::GET, format!("/api/v1/children/{}", id(&child_a))),
        (Method::GET, format!("/api/v1/guardians/{}", id(&gb))),
        (Method::GET, consent_b.clone()),
        (Method::GET, "/api/v1/children".to_owned()),
        (Method::GET, "/api/v1/classrooms".to_owned()),
        (Method::GET, "/api/v1/centre/cameras".to_owned()),
    ];
    for (method, path) in &guesses {
        c.refused(parent_a, method.clone(), path, None, StatusCode::FORBIDDEN).await;
    }
    let withdraw = json!({ "state": "withdrawn" });
    c.refused(parent_a, Method::POST, &consent_b, Some(withdraw.clone()), StatusCode::FORBIDDEN).await;
    let open_nappy = json!({ "parent_viewable": true });
    c.refused(parent_a, Method::PATCH, "/api/v1/centre/cameras/nappy", Some(open_nappy), StatusCode::FORBIDDEN).await;

    // Staff: operators and regulators read the structure, never children; only admins change it.
    for token in [operator, regulator] {
        for path in ["/api/v1/centre", "/api/v1/classrooms", "/api/v1/areas", "/api/v1/centre/cameras"] {
            let (status, v) = c.server.call(Method::GET, path, Some(token), None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {v}");
        }
        c.refused(token, Method::GET, "/api/v1/children", None, StatusCode::FORBIDDEN).await;
        c.refused(token, Method::GET, "/api/v1/guardians", None, StatusCode::FORBIDDEN).await;
        let room = json!({ "name": "Sneaky", "kind": "infant" });
        c.refused(token, Method::POST, "/api/v1/classrooms", Some(room), StatusCode::FORBIDDEN).await;
    }
    c.refused(committee, Method::GET, "/api/v1/centre", None, StatusCode::FORBIDDEN).await;

    // Withdrawn consent ends viewing at once; a move follows the child.
    c.ok(Method::POST, &consent_a, Some(withdraw)).await;
    assert!(c.camera_ids(parent_a).await.is_empty());
    let history = c.ok(Method::GET, &consent_a, None).await;
    let states: Vec<&str> = history["history"].as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert!(states.contains(&"given") && states.contains(&"withdrawn"), "{history}");
    c.ok(Method::POST, &format!("/api/v1/children/{}/move", id(&child_b)), Some(json!({ "classroom_id": room_a }))).await;
    assert_eq!(c.camera_ids(parent_b).await, ["room-a"]);
    let child = c.ok(Method::GET, &format!("/api/v1/children/{}", id(&child_b)), None).await;
    assert_eq!(child["moves"].as_array().unwrap().len(), 2, "enrolment and the move: {child}");

    // Decommissioning records why; it never stops recording (the camera stays listed).
    let d = c.ok(Method::POST, "/api/v1/centre/cameras/room-b/decommission", Some(json!({ "reason": "moved to storage" }))).await;
    assert_eq!(d["decommissioned"]["reason"], "moved to storage", "{d}");
    let cams = c.ok(Method::GET, "/api/v1/centre/cameras", None).await;
    let b = cams["cameras"].as_array().unwrap().iter().find(|x| x["id"] == "room-b").unwrap();
    assert_eq!(b["placement"]["decommissioned"]["by"], TEST_ADMIN, "{b}");
    assert!(c.server.get("/api/v1/cameras").await["cameras"].as_array().unwrap().iter().any(|x| x["id"] == "room-b"));

    // A broken request says what is wrong, as JSON.
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/classrooms", c.server.base))
        .bearer_auth(&c.server.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    let why = c
        .refused(
            &c.server.token,
            Method::POST,
            "/api/v1/classrooms",
            Some(json!({ "name": "x", "kind": "giant" })),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(why.contains("giant") || why.contains("kind"), "{why}");

    // Every change is in the audit log under the admin's name.
    let audit = c.ok(Method::GET, "/api/v1/audit?action=consent_changed", None).await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "given, given, withdrawn: {audit}");
    assert!(entries.iter().all(|e| e["actor"] == TEST_ADMIN), "{audit}");
    let audit = c.ok(Method::GET, "/api/v1/audit?action=centre_changed&limit=200", None).await;
    let targets: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["target"].as_str()).collect();
    for t in ["camera room-b", &format!("area {}", id(&hall)), &format!("child {}", id(&child_b)), &format!("classroom {room_b}")] {
        assert!(targets.contains(&t), "no centre_changed entry for {t}: {targets:?}");
    }
}

/// Cameras added through the API (or `cradle centre camera-add`) record at once, keep
/// recording across a restart, reconnect when their settings change, and never show
/// their password; the config file's cameras are edited only in the file.
async fn cameras_added_by_an_admin_record_at_once_and_after_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cam_port = free_port();
    let _camsim = camsim(cam_port, 2).await;
    let stream = |n: u32| format!("rtsp://127.0.0.1:{cam_port}/cam{n}");
    let mut spec = ServerSpec::new(backend, dir.path()).await;
    spec.segment_seconds = 2;
    spec.cameras.push(CameraSpec::new("fixed", &stream(1)));
    let t_start = SystemTime::now();
    let mut server = spec.start().await;
    let admin = server.token.clone();
    let call = |m: Method, path: &str, body: Option<Value>| {
        let (server, admin, path) = (&server, admin.clone(), path.to_owned());
        async move { server.call(m, &path, Some(&admin), body).await }
    };

    let secret = "cam-secret-123";
    let added = json!({ "id": "added", "name": "新教室 New room", "url": stream(2), "username": "viewer", "password": secret });
    let (status, v) = call(Method::POST, "/api/v1/centre/cameras", Some(added.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["connection"]["has_password"], true, "{v}");
    server.wait_recording("added", Duration::from_secs(20)).await;

    // Refusals: a taken id, the config file's id, a bad URL, an unknown field.
    let (status, v) = call(Method::POST, "/api/v1/centre/cameras", Some(added)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let (status, v) = call(Method::POST, "/api/v1/centre/cameras", Some(json!({ "id": "fixed", "url": stream(2) }))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("config file"), "{v}");
    let (status, v) = call(Method::POST, "/api/v1/centre/cameras", Some(json!({ "id": "web", "url": "http://127.0.0.1/x" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("url: "), "{v}");
    let (status, v) = call(Method::POST, "/api/v1/centre/cameras", Some(json!({ "id": "x", "url": stream(1), "colour": "red" }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (status, v) = call(Method::PUT, "/api/v1/centre/cameras/fixed/connection", Some(json!({ "url": stream(2) }))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");

    // Listed with where its settings come from, never with the password.
    let (_, cams) = call(Method::GET, "/api/v1/centre/cameras", None).await;
    let source = |id: &str| cams["cameras"].as_array().unwrap().iter().find(|c| c["id"] == id).map(|c| c["source"].clone());
    assert_eq!((source("fixed"), source("added")), (Some(json!("config")), Some(json!("database"))), "{cams}");
    assert!(!cams.to_string().contains(secret), "{cams}");

    // New settings: the camera reconnects with them; the stored password is kept.
    let (status, v) = call(
        Method::PUT,
        "/api/v1/centre/cameras/added/connection",
        Some(json!({ "name": "改名 Renamed", "url": stream(1), "username": "viewer" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["connection"]["has_password"], true, "{v}");
    wait_until("the renamed camera recording", Duration::from_secs(20), || async {
        let c = server.camera("added").await;
        c["name"] == "改名 Renamed" && c["state"] == "recording"
    })
    .await;

    // The command line adds one to the running server.
    let cli = json!({ "id": "from-cli", "url": stream(2) }).to_string();
    let out = std::process::Command::new(BIN)
        .args(["centre", "--config"])
        .arg(spec.config_path())
        .args(["camera-add", "--json", &cli])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server.wait_recording("from-cli", Duration::from_secs(20)).await;

    let (_, audit) = call(Method::GET, "/api/v1/audit?action=centre_changed", None).await;
    let targets: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["target"].as_str()).collect();
    assert!(targets.iter().filter(|t| **t == "camera added").count() >= 2, "add and edit: {targets:?}");
    assert!(targets.contains(&"camera from-cli"), "{targets:?}");
    assert!(!audit.to_string().contains(secret), "the audit log holds the camera password: {audit}");

    // After a restart the added cameras record again, and their footage is indexed.
    server.terminate();
    let server = spec.start().await;
    server.wait_recording("added", Duration::from_secs(20)).await;
    server.wait_recording("from-cli", Duration::from_secs(20)).await;
    let rec = server.recordings("added", &rfc3339(t_start), &now_rfc3339()).await;
    assert!(!rec["segments"].as_array().unwrap().is_empty(), "{rec}");
}
