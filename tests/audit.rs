//! The audit log's contract beyond the basic tamper cases of `audit_chain.rs`, on
//! SQLite and PostgreSQL: the hash is exactly the documented one (a chain built here,
//! independently of Cradle's code, verifies, and Cradle continues it); the verifier's
//! paging does not hide tampering at or after a page boundary; a removed first entry,
//! a detail rewritten with the same meaning and `cradle audit verify`'s message name
//! the right entry; truncating the tail is caught only against a recorded head; and
//! listing filters and pages as the API needs.

#[macro_use]
mod support;

use std::process::Command;

use cradle::audit::{self, Action, AuditQuery, NewEntry, Verdict};
use cradle::db::Db;
use serde_json::json;
use sha2::{Digest, Sha256};
use support::*;

on_both_databases!(
    a_chain_hashed_as_documented_verifies_and_cradle_continues_it,
    tampering_after_the_first_page_is_named,
    a_removed_first_entry_is_named,
    a_detail_rewritten_with_the_same_meaning_is_named,
    truncating_the_tail_is_caught_only_by_the_recorded_head,
    listing_filters_and_pages_newest_first,
);

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One row of a chain built by the test itself.
struct Built {
    seq: i64,
    at_us: i64,
    actor: Option<String>,
    action: &'static str,
    addr: Option<String>,
    detail: String,
    prev_hash: String,
    hash: String,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn json_opt(s: &Option<String>) -> String {
    s.as_deref().map(json_str).unwrap_or_else(|| "null".into())
}

/// A chain of `n` entries hashed by the format in `src/audit.rs`'s module docs, written
/// out by hand here so that a change to the format (field names, key order, spacing,
/// null handling) fails this test instead of silently orphaning every stored chain:
/// `hash = hex(SHA-256(prev_hash_hex ‖ canonical))`, canonical = compact JSON with keys
/// sorted at every level, absent values `null`.
fn build_chain(n: i64) -> Vec<Built> {
    let mut prev = GENESIS.to_owned();
    let mut rows = Vec::new();
    for seq in 1..=n {
        let at_us = 1_700_000_000_000_000 + seq * 1_000;
        let actor = (seq % 5 != 0).then(|| format!("staff-{}", seq % 3));
        let action = if seq % 2 == 0 { "playback" } else { "login" };
        let addr = (seq % 2 == 0).then(|| "192.0.2.9".to_owned());
        // Keys already sorted at both levels; a string that needs escaping.
        let detail = format!(
            r#"{{"camera":"room-{}","range":{{"end":{seq},"start":0}},"why":"a \"check\" 看"}}"#,
            seq % 4
        );
        let canonical = format!(
            r#"{{"action":{},"actor":{},"actor_role":{},"addr":{},"at_us":{at_us},"detail":{detail},"seq":{seq},"target":{}}}"#,
            json_str(action),
            json_opt(&actor),
            json_opt(&actor.as_ref().map(|_| "operator".to_owned())),
            json_opt(&addr),
            json_str("room-1"),
        );
        let mut h = Sha256::new();
        h.update(prev.as_bytes());
        h.update(canonical.as_bytes());
        let hash = hex::encode(h.finalize());
        rows.push(Built {
            seq,
            at_us,
            actor,
            action,
            addr,
            detail,
            prev_hash: prev,
            hash: hash.clone(),
        });
        prev = hash;
    }
    rows
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sql_opt(s: &Option<String>) -> String {
    s.as_deref().map(sql_text).unwrap_or_else(|| "NULL".into())
}

/// Runs `sql` (one or more statements) on the test database, bypassing Cradle: this is
/// what someone with database access would do.
async fn raw(url: &str, sql: &str) {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
    }
}

/// A fresh database holding `rows`, inserted in one transaction with raw SQL.
async fn database_with(backend: Backend, dir: &std::path::Path, rows: &[Built]) -> (Db, String) {
    let url = fresh_database(backend, dir).await;
    let db = Db::connect(&url).await.unwrap();
    let mut sql = String::from("BEGIN;\n");
    for chunk in rows.chunks(200) {
        sql.push_str(
            "INSERT INTO audit_log (seq, at_us, actor, actor_role, action, target, addr, detail, prev_hash, hash) VALUES\n",
        );
        let values: Vec<String> = chunk
            .iter()
            .map(|r| {
                format!(
                    "({}, {}, {}, {}, {}, 'room-1', {}, {}, {}, {})",
                    r.seq,
                    r.at_us,
                    sql_opt(&r.actor),
                    sql_opt(&r.actor.as_ref().map(|_| "operator".to_owned())),
                    sql_text(r.action),
                    sql_opt(&r.addr),
                    sql_text(&r.detail),
                    sql_text(&r.prev_hash),
                    sql_text(&r.hash),
                )
            })
            .collect();
        sql.push_str(&values.join(",\n"));
        sql.push_str(";\n");
    }
    sql.push_str("COMMIT;\n");
    raw(&url, &sql).await;
    (db, url)
}

async fn row_id(db: &Db, seq: i64) -> i64 {
    let mut after = 0;
    loop {
        let page = db.audit_page(after, 1000).await.unwrap();
        assert!(!page.is_empty(), "no row with seq {seq}");
        if let Some(r) = page.iter().find(|r| r.seq == seq) {
            return r.id;
        }
        after = page.last().unwrap().id;
    }
}

fn broken(v: Verdict) -> (i64, i64, String) {
    match v {
        Verdict::Broken { seq, id, reason } => (seq, id, reason),
        v => panic!("tampering not detected: {v:?}"),
    }
}

/// `cradle audit verify` on a config that names only the database.
fn cli_verify(dir: &std::path::Path, url: &str) -> (i32, String, String) {
    let config = dir.join("audit-verify.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\n[database]\nurl = \"{url}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn a_chain_hashed_as_documented_verifies_and_cradle_continues_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let rows = build_chain(2_345);
    let (db, url) = database_with(backend, dir.path(), &rows).await;
    let head = rows.last().unwrap().hash.clone();
    assert_eq!(
        audit::verify(&db).await.unwrap(),
        Verdict::Intact {
            entries: 2_345,
            head: head.clone()
        }
    );

    // Cradle appends after the head it finds, with a hash computed the same way.
    let e = audit::append(
        &db,
        NewEntry {
            actor: Some("admin-1".into()),
            actor_role: Some("admin".into()),
            action: Action::ConsentChanged,
            target: Some("child-7".into()),
            addr: None,
            // Unsorted and nested: stored and hashed in canonical form.
            detail: json!({ "z": [ { "b": 1, "a": 2 } ], "given": true }),
        },
    )
    .await
    .unwrap();
    assert_eq!(e.seq, 2_346);
    let at_us = cradle::time::parse_rfc3339(&e.at).unwrap();
    let canonical = format!(
        r#"{{"action":"consent_changed","actor":"admin-1","actor_role":"admin","addr":null,"at_us":{at_us},"detail":{{"given":true,"z":[{{"a":2,"b":1}}]}},"seq":2346,"target":"child-7"}}"#
    );
    let mut h = Sha256::new();
    h.update(head.as_bytes());
    h.update(canonical.as_bytes());
    assert_eq!(
        e.hash,
        hex::encode(h.finalize()),
        "the stored hash is not the documented one"
    );
    let stored = db
        .audit_page(row_id(&db, 2_346).await - 1, 1)
        .await
        .unwrap();
    assert_eq!(stored[0].detail, r#"{"given":true,"z":[{"a":2,"b":1}]}"#);
    assert_eq!(stored[0].prev_hash, head);

    assert_eq!(
        audit::verify(&db).await.unwrap(),
        Verdict::Intact {
            entries: 2_346,
            head: e.hash.clone()
        }
    );
    let (code, stdout, stderr) = cli_verify(dir.path(), &url);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("audit log intact: 2346 entries, head {}", e.hash)),
        "{stdout}"
    );
}

async fn tampering_after_the_first_page_is_named(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let rows = build_chain(2_345);
    let (db, url) = database_with(backend, dir.path(), &rows).await;

    // An edit in the third page.
    raw(
        &url,
        "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2100",
    )
    .await;
    let (seq, id, reason) = broken(audit::verify(&db).await.unwrap());
    assert_eq!((seq, id), (2_100, row_id(&db, 2_100).await));
    assert!(reason.contains("edited"), "{reason}");

    // A deletion exactly at the first page boundary is found before the edit.
    raw(&url, "DELETE FROM audit_log WHERE seq = 1000").await;
    let (seq, id, reason) = broken(audit::verify(&db).await.unwrap());
    assert_eq!((seq, id), (1_001, row_id(&db, 1_001).await));
    assert!(
        reason.contains("entries 1000..1000 were removed"),
        "{reason}"
    );

    let (code, stdout, stderr) = cli_verify(dir.path(), &url);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("audit log BROKEN at entry seq 1001 (id {id}): "))
            && stderr.contains("removed"),
        "{stderr}"
    );
}

async fn a_removed_first_entry_is_named(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = database_with(backend, dir.path(), &build_chain(5)).await;
    raw(&url, "DELETE FROM audit_log WHERE seq = 1").await;
    let (seq, _, reason) = broken(audit::verify(&db).await.unwrap());
    assert_eq!(seq, 2);
    assert!(reason.contains("entries 1..1 were removed"), "{reason}");

    // Renumbering the rest to hide the hole breaks the new first entry's prev_hash.
    raw(&url, "UPDATE audit_log SET seq = seq - 1").await;
    let (seq, _, reason) = broken(audit::verify(&db).await.unwrap());
    assert_eq!(seq, 1);
    assert!(reason.contains("prev_hash"), "{reason}");
}

async fn a_detail_rewritten_with_the_same_meaning_is_named(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = database_with(backend, dir.path(), &build_chain(5)).await;
    // Same JSON value, keys reordered and spaced: not what was hashed.
    raw(
        &url,
        r#"UPDATE audit_log SET detail = '{"why": "a \"check\" 看", "range": {"start": 0, "end": 3}, "camera": "room-3"}' WHERE seq = 3"#,
    )
    .await;
    let (seq, _, reason) = broken(audit::verify(&db).await.unwrap());
    assert_eq!(seq, 3);
    assert!(reason.contains("edited"), "{reason}");

    // Not even JSON.
    raw(&url, "UPDATE audit_log SET detail = 'gone' WHERE seq = 2").await;
    let (seq, _, reason) = broken(audit::verify(&db).await.unwrap());
    assert_eq!(seq, 2);
    assert!(reason.contains("edited"), "{reason}");
}

async fn truncating_the_tail_is_caught_only_by_the_recorded_head(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let rows = build_chain(10);
    let (db, url) = database_with(backend, dir.path(), &rows).await;
    let recorded = match audit::verify(&db).await.unwrap() {
        Verdict::Intact { head, .. } => head,
        v => panic!("{v:?}"),
    };
    raw(&url, "DELETE FROM audit_log WHERE seq > 8").await;
    // The shorter chain is internally consistent (documented limit of a hash chain)…
    match audit::verify(&db).await.unwrap() {
        Verdict::Intact { entries, head } => {
            assert_eq!(entries, 8);
            // …but its head is no longer the one the operator recorded.
            assert_ne!(head, recorded);
            assert_eq!(head, rows[7].hash);
        }
        v => panic!("{v:?}"),
    }
}

async fn listing_filters_and_pages_newest_first(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(backend, dir.path()).await;
    let db = Db::connect(&url).await.unwrap();
    let actions = [
        Action::Login,
        Action::LiveViewStart,
        Action::Playback,
        Action::ConfigChanged,
        Action::ExportDownloaded,
    ];
    for i in 0..130usize {
        audit::append(
            &db,
            NewEntry {
                actor: Some(format!("user-{}", i % 3)),
                actor_role: Some("operator".into()),
                action: actions[i % actions.len()],
                target: Some(format!("room-{}", i % 4)),
                addr: Some("198.51.100.4".into()),
                detail: json!({ "i": i }),
            },
        )
        .await
        .unwrap();
    }
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery::default();
        f(&mut q);
        q
    };
    let seqs = |v: &[audit::AuditEntry]| v.iter().map(|e| e.seq).collect::<Vec<_>>();

    // Default page: the newest 100; the limit is clamped to 1..=1000.
    let page = audit::list(&db, &AuditQuery::default()).await.unwrap();
    assert_eq!(seqs(&page), (31..=130).rev().collect::<Vec<_>>());
    assert_eq!(
        audit::list(&db, &q(|q| q.limit = Some(0)))
            .await
            .unwrap()
            .len(),
        1
    );
    let all = audit::list(&db, &q(|q| q.limit = Some(50_000)))
        .await
        .unwrap();
    assert_eq!(seqs(&all), (1..=130).rev().collect::<Vec<_>>());

    // Paging with before_seq visits every entry once, newest first.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = audit::list(
            &db,
            &AuditQuery {
                limit: Some(7),
                before_seq: before,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.seq);
        seen.extend(seqs(&page));
    }
    assert_eq!(seen, seqs(&all));

    let by_actor = audit::list(&db, &q(|q| q.actor = Some("user-1".into())))
        .await
        .unwrap();
    assert_eq!(
        by_actor.len(),
        all.iter()
            .filter(|e| e.actor.as_deref() == Some("user-1"))
            .count()
    );
    assert!(by_actor
        .iter()
        .all(|e| e.actor.as_deref() == Some("user-1")));

    let by_action = audit::list(&db, &q(|q| q.action = Some("playback".into())))
        .await
        .unwrap();
    assert_eq!(by_action.len(), 26);
    assert!(by_action.iter().all(|e| e.action == "playback"));

    // The committee's view: viewing entries only, other filters still apply.
    let viewing = audit::list(&db, &q(|q| q.viewing_only = true))
        .await
        .unwrap();
    assert_eq!(
        viewing.len(),
        78,
        "live_view_start, playback and export_downloaded"
    );
    assert!(viewing.iter().all(|e| audit::is_viewing(&e.action)));
    let viewing_logins = audit::list(
        &db,
        &AuditQuery {
            viewing_only: true,
            action: Some("login".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        viewing_logins.is_empty(),
        "a filter cannot widen the committee's view"
    );

    // Time window: [from, to).
    let at = |seq: i64| {
        cradle::time::parse_rfc3339(&all.iter().find(|e| e.seq == seq).unwrap().at).unwrap()
    };
    let (from, to) = (at(40), at(90));
    let window = audit::list(
        &db,
        &AuditQuery {
            from_us: Some(from),
            to_us: Some(to),
            limit: Some(1000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let expected: Vec<i64> = all
        .iter()
        .filter(|e| {
            let t = cradle::time::parse_rfc3339(&e.at).unwrap();
            t >= from && t < to
        })
        .map(|e| e.seq)
        .collect();
    assert!(expected.contains(&40) && !expected.contains(&90));
    assert_eq!(seqs(&window), expected);

    // What the API serialises.
    let v = serde_json::to_value(&all[0]).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "action",
            "actor",
            "actor_role",
            "addr",
            "at",
            "detail",
            "hash",
            "seq",
            "target"
        ]
    );
    assert_eq!(v["detail"], json!({ "i": 129 }));
    assert_eq!(v["seq"], 130);
}
