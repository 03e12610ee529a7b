//! The audit log's hash chain on SQLite and PostgreSQL: intact chains verify, and an
//! edited, a deleted and a swapped row are each detected and named — by the library and
//! by `cradle audit verify`. Also: concurrent appenders never fork the chain, and the
//! HTTP API's sign-ins land in the log.

#[macro_use]
mod support;

use std::process::Command;

use cradle::audit::{self, Action, NewEntry, Verdict};
use cradle::db::Db;
use serde_json::json;
use support::*;

on_both_databases!(
    tampering_is_detected_and_named,
    concurrent_appenders_keep_one_chain,
    sign_ins_are_audited_and_the_committee_sees_viewing_only,
);

fn entry(i: usize) -> NewEntry {
    NewEntry {
        actor: Some(format!("user-{}", i % 3)),
        actor_role: Some("operator".into()),
        action: if i.is_multiple_of(2) { Action::LiveViewStart } else { Action::Login },
        target: Some(format!("camera-{i}")),
        addr: Some("192.0.2.7".into()),
        detail: json!({ "i": i, "note": "有中文" }),
    }
}

/// A fresh database with `n` entries, and a config file pointing at it.
async fn chain(backend: Backend, dir: &std::path::Path, n: usize) -> (Db, std::path::PathBuf, String) {
    let url = fresh_database(backend, dir).await;
    let db = Db::connect(&url).await.unwrap();
    for i in 0..n {
        audit::append(&db, entry(i)).await.unwrap();
    }
    let config = dir.join("audit.toml");
    std::fs::write(
        &config,
        format!("[server]\ndata_dir = \"{}\"\n[database]\nurl = \"{url}\"\n", dir.join("data").display()),
    )
    .unwrap();
    (db, config, url)
}

fn cli_verify(config: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN).args(["audit", "verify", "--config"]).arg(config).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

async fn raw(url: &str, sql: &str) {
    use sqlx::{Connection, Executor};
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        c.execute(sqlx::AssertSqlSafe(sql.to_owned())).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        c.execute(sqlx::AssertSqlSafe(sql.to_owned())).await.unwrap();
    }
}

async fn tampering_is_detected_and_named(backend: Backend) {
    // Intact.
    let dir = tempfile::tempdir().unwrap();
    let (db, config, _) = chain(backend, dir.path(), 12).await;
    match audit::verify(&db).await.unwrap() {
        Verdict::Intact { entries, head } => {
            assert_eq!(entries, 12);
            assert_eq!(head.len(), 64);
        }
        v => panic!("fresh chain reported {v:?}"),
    }
    let (code, text) = cli_verify(&config);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("intact: 12 entries"), "{text}");

    // One edited row: a changed detail, everything else untouched.
    let dir = tempfile::tempdir().unwrap();
    let (db, config, url) = chain(backend, dir.path(), 12).await;
    raw(&url, "UPDATE audit_log SET detail = '{\"i\":5,\"note\":\"nothing to see\"}' WHERE seq = 6").await;
    assert!(matches!(audit::verify(&db).await.unwrap(), Verdict::Broken { seq: 6, ref reason, .. } if reason.contains("edited")));
    let (code, text) = cli_verify(&config);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("seq 6") && text.contains("edited"), "{text}");

    // One deleted row in the middle.
    let dir = tempfile::tempdir().unwrap();
    let (db, config, url) = chain(backend, dir.path(), 12).await;
    raw(&url, "DELETE FROM audit_log WHERE seq = 4").await;
    match audit::verify(&db).await.unwrap() {
        Verdict::Broken { seq, reason, .. } => {
            assert_eq!(seq, 5, "the first bad entry is the one after the hole");
            assert!(reason.contains("4..4 were removed"), "{reason}");
        }
        v => panic!("deletion not detected: {v:?}"),
    }
    let (code, text) = cli_verify(&config);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("seq 5") && text.contains("removed"), "{text}");

    // Two rows swapped: their whole contents (seq and hashes too) exchanged, ids kept.
    let dir = tempfile::tempdir().unwrap();
    let (db, config, url) = chain(backend, dir.path(), 12).await;
    let rows = db.audit_page(0, 100).await.unwrap();
    let (r7, r8) = (rows.iter().find(|r| r.seq == 7).unwrap(), rows.iter().find(|r| r.seq == 8).unwrap());
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let set = |to: &cradle::db::audit::AuditRow, seq: i64, id: i64| {
        format!(
            "UPDATE audit_log SET seq = {seq}, at_us = {}, actor = {}, action = {}, target = {}, detail = {}, \
             prev_hash = {}, hash = {} WHERE id = {id}",
            to.at_us,
            q(to.actor.as_deref().unwrap()),
            q(&to.action),
            q(to.target.as_deref().unwrap()),
            q(&to.detail),
            q(&to.prev_hash),
            q(&to.hash)
        )
    };
    raw(&url, &format!("UPDATE audit_log SET seq = -1 WHERE id = {}", r7.id)).await;
    raw(&url, &set(r7, 7, r8.id)).await;
    raw(&url, &set(r8, 8, r7.id)).await;
    // Rows with ids of old seq 7 and 8 now claim seq 8 and 7, in storage order 8, 7.
    match audit::verify(&db).await.unwrap() {
        Verdict::Broken { seq, reason, .. } => {
            assert_eq!(seq, 8, "{reason}");
            assert!(reason.contains("expected seq 7"), "{reason}");
        }
        v => panic!("swap not detected: {v:?}"),
    }
    let (code, text) = cli_verify(&config);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("BROKEN at entry seq 8"), "{text}");

    // Swapping only the contents but keeping seq in place breaks the hashes instead.
    let dir = tempfile::tempdir().unwrap();
    let (db, _, url) = chain(backend, dir.path(), 12).await;
    raw(&url, "UPDATE audit_log SET target = CASE seq WHEN 2 THEN 'camera-3' ELSE 'camera-2' END WHERE seq IN (2, 3)").await;
    assert!(matches!(audit::verify(&db).await.unwrap(), Verdict::Broken { seq: 2, .. }));
}

async fn concurrent_appenders_keep_one_chain(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (db, config, url) = chain(backend, dir.path(), 0).await;
    // Two connection pools: as close to two processes as one test gets (the in-process
    // lock is per process, so the database must serialise the two).
    let other = Db::connect(&url).await.unwrap();
    let a = tokio::spawn({
        let db = db.clone();
        async move {
            for i in 0..50 {
                audit::append(&db, entry(i)).await.unwrap();
            }
        }
    });
    let b = tokio::spawn(async move {
        for i in 0..50 {
            audit::append(&other, entry(100 + i)).await.unwrap();
        }
    });
    a.await.unwrap();
    b.await.unwrap();
    assert!(matches!(audit::verify(&db).await.unwrap(), Verdict::Intact { entries: 100, .. }));
    let (code, text) = cli_verify(&config);
    assert_eq!(code, 0, "{text}");
}

async fn sign_ins_are_audited_and_the_committee_sees_viewing_only(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec::new(backend, dir.path()).await;
    for (name, role) in [("committee-1", "committee"), ("regulator-1", "regulator"), ("parent-1", "parent")] {
        assert!(spec.add_user(name, role, "a long enough password").status.success());
    }
    let server = spec.start().await;
    // A failed sign-in and a good one.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/v1/login", server.base))
        .json(&json!({ "username": "parent-1", "password": "not the password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let parent = server.login("parent-1", "a long enough password").await;
    // A viewing entry, as live view will write it.
    let db = Db::connect(&spec.database_url).await.unwrap();
    audit::append(
        &db,
        NewEntry {
            actor: Some("parent-1".into()),
            actor_role: Some("parent".into()),
            action: Action::LiveViewStart,
            target: Some("room-1".into()),
            addr: None,
            detail: json!({}),
        },
    )
    .await
    .unwrap();

    let regulator = server.login("regulator-1", "a long enough password").await;
    let get = |token: String, q: &'static str| {
        let url = format!("{}/api/v1/audit{q}", server.base);
        async move { reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap() }
    };
    let all: serde_json::Value = get(regulator.clone(), "").await.json().await.unwrap();
    let actions: Vec<&str> = all["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for want in ["account_created", "login_failed", "login", "live_view_start"] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let failed = all["entries"].as_array().unwrap().iter().find(|e| e["action"] == "login_failed").unwrap();
    assert_eq!(failed["target"], "parent-1");
    assert_eq!(failed["detail"]["reason"], "wrong password");

    let committee = server.login("committee-1", "a long enough password").await;
    let seen: serde_json::Value = get(committee, "").await.json().await.unwrap();
    let actions: Vec<&str> = seen["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["live_view_start"], "the committee sees viewing entries only");
    assert_eq!(get(parent, "").await.status(), 403);
    let filtered: serde_json::Value = get(regulator, "?action=login_failed").await.json().await.unwrap();
    assert_eq!(filtered["entries"].as_array().unwrap().len(), 1);

    // Everything the server wrote verifies.
    assert!(matches!(audit::verify(&db).await.unwrap(), Verdict::Intact { .. }));
}
