//! Accounts, sessions and authorisation against the real binary: accounts made with
//! `cradle user add`, requests over HTTP with Bearer tokens and cookies, on SQLite and
//! PostgreSQL.

#[macro_use]
mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::*;

on_both_databases!(every_role_meets_exactly_its_routes);

const ROLES: [&str; 6] = ["admin", "operator", "parent", "investigator", "regulator", "committee"];
const PASSWORD: &str = "a long enough password";

/// A server with one camera (unreachable: routes need only its id) and one account
/// per role, each signed in.
async fn server_with_roles(backend: Backend, extra_toml: &str) -> (tempfile::TempDir, Server, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::new(backend, dir.path()).await;
    spec.cameras.push(CameraSpec::new("room-1", "rtsp://127.0.0.1:9/none"));
    spec.extra_toml = extra_toml.to_owned();
    for role in ROLES {
        let out = spec.add_user(&format!("{role}-user"), role, PASSWORD);
        assert!(out.status.success(), "user add {role}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let server = spec.start().await;
    let mut tokens = Vec::new();
    for role in ROLES {
        tokens.push((role.to_owned(), server.login(&format!("{role}-user"), PASSWORD).await));
    }
    (dir, server, tokens)
}

async fn call(server: &Server, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    server.call(method, path, token, body).await
}

async fn every_role_meets_exactly_its_routes(backend: Backend) {
    let (_dir, server, tokens) = server_with_roles(backend, "").await;
    let now = now_rfc3339();
    let recordings = format!("/api/v1/cameras/room-1/recordings?end={now}");
    let day_ago = rfc3339(std::time::SystemTime::now() - std::time::Duration::from_secs(86_400));
    let coverage = format!("/api/v1/coverage?from={day_ago}&to={now}");
    // (method, path, body, roles allowed). A parent sees the camera list (filtered to
    // their children's classrooms) but no other camera's details.
    let table: Vec<(Method, &str, Option<Value>, &[&str])> = vec![
        (Method::GET, "/api/v1/me", None, &ROLES),
        (Method::GET, "/api/v1/status", None, &["admin", "operator", "regulator"]),
        (Method::GET, "/api/v1/cameras", None, &["admin", "operator", "parent", "investigator", "regulator"]),
        (Method::GET, "/api/v1/cameras/room-1", None, &["admin", "operator", "investigator", "regulator"]),
        (Method::GET, &recordings, None, &["admin", "operator", "regulator"]),
        (Method::GET, "/api/v1/users", None, &["admin"]),
        (
            Method::POST,
            "/api/v1/users",
            Some(json!({ "username": "new-user", "role": "operator", "password": PASSWORD })),
            &["admin"],
        ),
        (Method::PATCH, "/api/v1/users/operator-user", Some(json!({ "display_name": "Op" })), &["admin"]),
        (Method::GET, "/api/v1/centre", None, &["admin", "operator", "regulator"]),
        (Method::GET, "/api/v1/classrooms", None, &["admin", "operator", "regulator"]),
        (Method::GET, "/api/v1/areas", None, &["admin", "operator", "regulator"]),
        (Method::GET, "/api/v1/centre/cameras", None, &["admin", "operator", "regulator"]),
        (Method::POST, "/api/v1/areas", Some(json!({ "name": "Hall" })), &["admin"]),
        (Method::PATCH, "/api/v1/centre/cameras/room-1", Some(json!({ "parent_viewable": false })), &["admin"]),
        (Method::GET, "/api/v1/children", None, &["admin"]),
        (Method::GET, "/api/v1/guardians", None, &["admin"]),
        (Method::GET, "/api/v1/me/children", None, &["parent"]),
        (Method::GET, "/api/v1/alarms", None, &["admin", "operator", "regulator"]),
        (Method::GET, &coverage, None, &["admin", "operator", "regulator"]),
        (Method::GET, "/api/v1/armed", None, &["admin", "operator", "regulator"]),
        (Method::GET, "/api/v1/retention", None, &["admin", "operator", "regulator"]),
        (Method::GET, "/api/v1/holds", None, &["admin", "operator", "regulator", "investigator"]),
    ];
    for (method, path, body, allowed) in &table {
        let (status, v) = call(&server, method.clone(), path, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without credentials: {v}");
        let (status, _) = call(&server, method.clone(), path, Some("0".repeat(64).as_str()), body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with a made-up token");
        for (role, token) in &tokens {
            let (status, v) = call(&server, method.clone(), path, Some(token), body.clone()).await;
            if allowed.contains(&role.as_str()) {
                assert!(status.is_success(), "{role}: {method} {path} → {status} {v}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {method} {path} → {v}");
                assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "403 without a reason: {v}");
            }
        }
    }
    // Open to everyone, by design.
    for path in ["/healthz", "/metrics", "/login", "/admin", "/admin.js"] {
        let r = reqwest::get(format!("{}{path}", server.base)).await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
    // A parent with no child enrolled sees no camera at all.
    let parent = &tokens.iter().find(|(r, _)| r == "parent").unwrap().1;
    let (_, v) = call(&server, Method::GET, "/api/v1/cameras", Some(parent), None).await;
    assert_eq!(v["cameras"], json!([]), "{v}");
    // /me names the account and role.
    let (_, me) = call(&server, Method::GET, "/api/v1/me", Some(parent), None).await;
    assert_eq!((me["username"].as_str(), me["role"].as_str()), (Some("parent-user"), Some("parent")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_account_and_per_address() {
    let extra = "[auth]\nmax_failures_per_account = 3\nmax_failures_per_addr = 6\n";
    let (_dir, server, _) = server_with_roles(Backend::Sqlite, extra).await;
    let login = |user: &'static str, pw: &'static str| {
        let base = server.base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/login"))
                .json(&json!({ "username": user, "password": pw }))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(login("operator-user", "wrong password!").await.status(), StatusCode::UNAUTHORIZED);
    }
    // Blocked now, even with the right password.
    let r = login("operator-user", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Other accounts still work from this address …
    assert_eq!(login("admin-user", PASSWORD).await.status(), StatusCode::OK);
    // … until the address has failed too often (3 above + 3 on unknown names).
    for _ in 0..3 {
        assert_eq!(login("nobody-here", "wrong password!").await.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login("admin-user", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "per-address limit");
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_at_logout_on_password_change_and_on_expiry() {
    let (_dir, server, tokens) = server_with_roles(Backend::Sqlite, "[auth]\nsession_minutes = 1\n").await;
    let token = |role: &str| tokens.iter().find(|(r, _)| r == role).unwrap().1.clone();

    // Logout ends exactly that session.
    let op = token("operator");
    let (s, _) = call(&server, Method::POST, "/api/v1/logout", Some(&op), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = call(&server, Method::GET, "/api/v1/me", Some(&op), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");

    // Changing a password ends the account's other sessions, not the current one.
    let first = token("regulator");
    let second = server.login("regulator-user", PASSWORD).await;
    let body = json!({ "current_password": PASSWORD, "new_password": "another long password" });
    let (s, v) = call(&server, Method::POST, "/api/v1/me/password", Some(&second), Some(body)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(call(&server, Method::GET, "/api/v1/me", Some(&first), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&server, Method::GET, "/api/v1/me", Some(&second), None).await.0, StatusCode::OK);
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/login", server.base))
        .json(&json!({ "username": "regulator-user", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the old password no longer works");

    // An admin disabling an account ends its sessions.
    let committee = token("committee");
    let (s, v) = call(&server, Method::PATCH, "/api/v1/users/committee-user", Some(&token("admin")), Some(json!({ "disabled": true }))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(call(&server, Method::GET, "/api/v1/me", Some(&committee), None).await.0, StatusCode::UNAUTHORIZED);

    // Sessions expire (session_minutes = 1), even when in use.
    let admin = token("admin");
    assert_eq!(call(&server, Method::GET, "/api/v1/me", Some(&admin), None).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(62)).await;
    let (s, v) = call(&server, Method::GET, "/api/v1/me", Some(&admin), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_need_the_csrf_token_for_changes() {
    let (_dir, server, _) = server_with_roles(Backend::Sqlite, "").await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/v1/login", server.base))
        .json(&json!({ "username": "admin-user", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let login: Value = r.json().await.unwrap();
    let csrf = login["csrf_token"].as_str().unwrap();
    assert!(login["expires_at"].as_str().is_some() && login["role"] == "admin");

    // Reads work with the cookie alone.
    let r = client.get(format!("{}/api/v1/me", server.base)).header("cookie", &pair).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A change without the CSRF header is refused; with it, it goes through.
    let body = json!({ "username": "csrf-made", "role": "operator", "password": PASSWORD });
    let url = format!("{}/api/v1/users", server.base);
    let r = client.post(&url).header("cookie", &pair).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client.post(&url).header("cookie", &pair).header("x-csrf-token", "0".repeat(64)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "wrong token");
    let r = client.post(&url).header("cookie", &pair).header("x-csrf-token", csrf).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Logout through the cookie clears it.
    let r = client.post(format!("{}/api/v1/logout", server.base)).header("cookie", &pair).header("x-csrf-token", csrf).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let r = client.get(format!("{}/api/v1/me", server.base)).header("cookie", &pair).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_rejects_bad_input_and_never_stores_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new(Backend::Sqlite, dir.path()).await;
    let out = spec.add_user("ms.wang", "parent", "short");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 10 characters"));
    let out = spec.add_user("ms.wang", "superuser", PASSWORD);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
    assert!(spec.add_user("ms.wang", "parent", PASSWORD).status.success());
    let out = spec.add_user("ms.wang", "parent", PASSWORD);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"));
    // The database holds an argon2id hash, not the password.
    let db = cradle::db::Db::connect(&spec.database_url).await.unwrap();
    let u = db.user_by_name("ms.wang").await.unwrap().unwrap();
    assert!(u.password_hash.starts_with("$argon2id$"), "{}", u.password_hash);
    assert!(!u.password_hash.contains(PASSWORD));
}
