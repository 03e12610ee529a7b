//! The audit log: who looked at which child's video, who changed what — append-only
//! and tamper-evident.
//!
//! Each entry is chained to the one before it: `hash = SHA-256(prev_hash ‖ canonical)`,
//! where `prev_hash` is the previous entry's hash as 64 lowercase hex characters (64
//! zeros for the first entry), both hashed as UTF-8 bytes, and `canonical` is the
//! entry as compact JSON (no whitespace) with keys sorted by byte order at every level:
//!
//! ```text
//! {"action":"login","actor":"ann","actor_role":"admin","addr":"192.0.2.7","at_us":1795405382123456,"detail":{"a":1,"b":[{"c":2}]},"seq":7,"target":null}
//! ```
//!
//! Absent values are `null`; strings are escaped as serde_json escapes them; `detail`
//! is a JSON value, stored in the row in exactly this canonical form and hashed as
//! those stored bytes. Editing a row breaks its hash; deleting a row leaves a gap in `seq` and breaks the next row's `prev_hash`;
//! reordering rows breaks `seq` order by storage id. Truncating the newest rows leaves a
//! valid shorter chain: that is detectable only against a head hash kept elsewhere, so
//! `cradle audit verify` prints the head for operators to record (and a later release
//! can anchor it externally).

use std::sync::OnceLock;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::db::audit::{AuditFilter, AuditRow, PendingAudit};
use crate::db::{Db, DbError};
use crate::time::{format_rfc3339, now_us};

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. The string forms are stored and must never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Login,
    LoginFailed,
    Logout,
    SessionRevoked,
    PasswordChanged,
    AccountCreated,
    AccountChanged,
    LiveViewStart,
    LiveViewStop,
    Playback,
    SnapshotViewed,
    ExportCreated,
    ExportDownloaded,
    EvidenceRequested,
    EvidenceApproved,
    EvidenceRejected,
    EvidenceClosed,
    LegalHold,
    LegalHoldReleased,
    ConfigChanged,
    CentreChanged,
    ConsentChanged,
    AlarmAcknowledged,
    RetentionDeleted,
    AuditRead,
    /// "Test connection": a camera's picture fetched before it was added or changed.
    CameraTested,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::LoginFailed => "login_failed",
            Action::Logout => "logout",
            Action::SessionRevoked => "session_revoked",
            Action::PasswordChanged => "password_changed",
            Action::AccountCreated => "account_created",
            Action::AccountChanged => "account_changed",
            Action::LiveViewStart => "live_view_start",
            Action::LiveViewStop => "live_view_stop",
            Action::Playback => "playback",
            Action::SnapshotViewed => "snapshot_viewed",
            Action::ExportCreated => "export_created",
            Action::ExportDownloaded => "export_downloaded",
            Action::EvidenceRequested => "evidence_requested",
            Action::EvidenceApproved => "evidence_approved",
            Action::EvidenceRejected => "evidence_rejected",
            Action::EvidenceClosed => "evidence_closed",
            Action::LegalHold => "legal_hold",
            Action::LegalHoldReleased => "legal_hold_released",
            Action::ConfigChanged => "config_changed",
            Action::CentreChanged => "centre_changed",
            Action::ConsentChanged => "consent_changed",
            Action::AlarmAcknowledged => "alarm_acknowledged",
            Action::RetentionDeleted => "retention_deleted",
            Action::AuditRead => "audit_read",
            Action::CameraTested => "camera_tested",
        }
    }
}

/// Entries about looking at video: what the parents' committee may read.
pub fn is_viewing(action: &str) -> bool {
    matches!(
        action,
        "live_view_start"
            | "live_view_stop"
            | "playback"
            | "export_created"
            | "export_downloaded"
            | "snapshot_viewed"
            | "camera_tested"
    )
}

/// An entry to append.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub actor: Option<String>,
    pub actor_role: Option<String>,
    pub action: Action,
    pub target: Option<String>,
    pub addr: Option<String>,
    pub detail: Value,
}

/// An entry as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    pub actor: Option<String>,
    pub actor_role: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub addr: Option<String>,
    pub detail: Value,
    pub hash: String,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            seq: r.seq,
            at: format_rfc3339(r.at_us),
            actor: r.actor,
            actor_role: r.actor_role,
            action: r.action,
            target: r.target,
            addr: r.addr,
            detail: serde_json::from_str(&r.detail).unwrap_or(Value::String(r.detail)),
            hash: r.hash,
        }
    }
}

// ---- canonical form and hashing --------------------------------------------------------------

/// Compact JSON with object keys sorted at every level (independent of how serde_json
/// orders maps in this build).
pub fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn canonical_str(v: &Value) -> String {
    let mut s = String::new();
    canonical_json(v, &mut s);
    s
}

/// The canonical bytes of an entry (see the module docs): the entry's fields as one
/// JSON object with sorted keys, `detail` spliced in as the exact text stored in the
/// row (which `append` made with [`canonical_json`]).
///
/// Splicing the stored text, rather than re-serialising a parsed value, keeps the
/// hash byte-exact: any change to the stored detail — even one with the same meaning,
/// such as reordered keys — breaks it, and the hash never depends on how a float
/// survives a parse (serde_json's default parser may be one ULP off).
#[allow(clippy::too_many_arguments)]
fn canonical_entry(
    seq: i64,
    at_us: i64,
    actor: Option<&str>,
    actor_role: Option<&str>,
    action: &str,
    target: Option<&str>,
    addr: Option<&str>,
    detail_json: &str,
) -> String {
    let text = |v: Option<&str>| Value::from(v).to_string();
    // Keys in byte order, as canonical_json would sort them.
    format!(
        r#"{{"action":{},"actor":{},"actor_role":{},"addr":{},"at_us":{at_us},"detail":{detail_json},"seq":{seq},"target":{}}}"#,
        text(Some(action)),
        text(actor),
        text(actor_role),
        text(addr),
        text(target),
    )
}

fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// The hash a stored row should have, recomputed from its columns as stored.
fn expected_hash(r: &AuditRow) -> String {
    let c = canonical_entry(
        r.seq,
        r.at_us,
        r.actor.as_deref(),
        r.actor_role.as_deref(),
        &r.action,
        r.target.as_deref(),
        r.addr.as_deref(),
        &r.detail,
    );
    chain_hash(&r.prev_hash, &c)
}

// ---- append, verify, list --------------------------------------------------------------------

/// Appends an entry and returns it.
///
/// Across processes the database serialises appenders (an advisory lock on
/// PostgreSQL, `BEGIN IMMEDIATE` on SQLite; see `Db::append_audit`). Within this
/// process they also queue on a mutex first, so a burst of appends waits here rather
/// than each holding one of the pool's few connections while it waits for the
/// database lock (which would starve the API's readers). A lost race (UNIQUE(seq)) or
/// a busy database is retried with a short backoff.
pub async fn append(db: &Db, e: NewEntry) -> Result<AuditEntry, DbError> {
    static LOCK: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    let _guard = LOCK
        .get_or_init(|| tokio::sync::Mutex::new(()))
        .lock()
        .await;
    let detail = if e.detail.is_null() {
        Value::Object(Default::default())
    } else {
        e.detail
    };
    let detail_text = canonical_str(&detail);
    let at_us = now_us();
    let pending = PendingAudit {
        at_us,
        actor: e.actor.as_deref(),
        actor_role: e.actor_role.as_deref(),
        action: e.action.as_str(),
        target: e.target.as_deref(),
        addr: e.addr.as_deref(),
        detail: &detail_text,
    };
    let hash_of = |seq: i64, prev: &str| {
        let c = canonical_entry(
            seq,
            at_us,
            pending.actor,
            pending.actor_role,
            pending.action,
            pending.target,
            pending.addr,
            pending.detail,
        );
        chain_hash(prev, &c)
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match db.append_audit(&pending, hash_of).await {
            Ok(Some(row)) => return Ok(row.into()),
            // Another process appended the same seq first: read the new head and retry.
            Ok(None) if attempt < 20 => {}
            Err(DbError::Sqlx(sqlx::Error::Database(d)))
                if attempt < 20
                    && (d.message().contains("locked") || d.message().contains("busy")) => {}
            Ok(None) => {
                return Err(DbError::Sqlx(sqlx::Error::Protocol(
                    "audit append lost 20 races in a row".into(),
                )));
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
    }
}

/// The result of walking the whole chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry checks out. `head` is the newest entry's hash (64 zeros for an
    /// empty log): record it elsewhere to detect a later truncation of the tail.
    Intact { entries: u64, head: String },
    /// The first bad entry in storage order: its claimed `seq`, its row `id`, and why
    /// (edited, entries removed before it, or reordered).
    Broken { seq: i64, id: i64, reason: String },
}

/// Walks every row in storage order and checks the chain: contiguous `seq` from 1,
/// each `prev_hash` equal to the previous row's hash, each hash matching the row's
/// content. Reports the first bad entry.
///
/// Rows are read a page of 1000 at a time, so memory stays flat however long the log.
///
/// What this cannot see: removing the newest entries (the tail) leaves a shorter
/// chain that is intact, and so does rewriting an entry and recomputing every hash
/// after it. Both are detectable only against a head hash kept outside the database —
/// which is why the verdict carries the head, and `cradle audit verify` prints it for
/// operators to record.
pub async fn verify(db: &Db) -> Result<Verdict, DbError> {
    const PAGE: i64 = 1000;
    let (mut after_id, mut expect_seq, mut prev) = (0i64, 1i64, GENESIS.to_owned());
    let mut entries = 0u64;
    loop {
        let page = db.audit_page(after_id, PAGE).await?;
        if page.is_empty() {
            return Ok(Verdict::Intact {
                entries,
                head: prev,
            });
        }
        for r in &page {
            let broken = |reason: String| Verdict::Broken {
                seq: r.seq,
                id: r.id,
                reason,
            };
            if r.seq != expect_seq {
                let why = if r.seq > expect_seq {
                    format!(
                        "expected seq {expect_seq} here: entries {expect_seq}..{} were removed",
                        r.seq - 1
                    )
                } else {
                    format!("expected seq {expect_seq} here: rows were reordered or duplicated")
                };
                return Ok(broken(why));
            }
            if r.prev_hash != prev {
                return Ok(broken("its prev_hash does not match the previous entry: an entry was removed or reordered".into()));
            }
            if expected_hash(r) != r.hash {
                return Ok(broken(
                    "its content does not match its hash: the entry was edited".into(),
                ));
            }
            prev = r.hash.clone();
            expect_seq += 1;
            entries += 1;
            after_id = r.id;
        }
    }
}

/// A listing request. Results are newest first; `None` means "any".
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Entries at or after this time (UTC µs).
    pub from_us: Option<i64>,
    /// Entries before this time (UTC µs, exclusive).
    pub to_us: Option<i64>,
    /// Exact username.
    pub actor: Option<String>,
    /// Exact action string (see [`Action::as_str`]).
    pub action: Option<String>,
    /// Paging: entries older than this seq (pass the last seq of the previous page).
    pub before_seq: Option<i64>,
    /// Page size: 100 by default, clamped to 1..=1000.
    pub limit: Option<i64>,
    /// Viewing entries only (see [`is_viewing`]): what the parents' committee sees.
    pub viewing_only: bool,
}

/// Entries matching `q`, newest first.
pub async fn list(db: &Db, q: &AuditQuery) -> Result<Vec<AuditEntry>, DbError> {
    let f = AuditFilter {
        from_us: q.from_us.unwrap_or(i64::MIN),
        to_us: q.to_us.unwrap_or(i64::MAX),
        actor: q.actor.clone().unwrap_or_default(),
        action: q.action.clone().unwrap_or_default(),
        before_seq: q.before_seq.unwrap_or(i64::MAX),
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
        viewing_only: q.viewing_only,
    };
    Ok(db
        .list_audit(&f)
        .await?
        .into_iter()
        .map(AuditEntry::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_is_compact() {
        let a = json!({ "b": 1, "a": { "y": [1, { "d": 2, "c": "x" }], "x": null } });
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[1,{"c":"x","d":2}]},"b":1}"#).unwrap();
        let (ca, cb) = (canonical_str(&a), canonical_str(&b));
        assert_eq!(ca, cb);
        assert_eq!(ca, r#"{"a":{"x":null,"y":[1,{"c":"x","d":2}]},"b":1}"#);
        assert_eq!(
            canonical_str(&json!({ "k": "引号\"" })),
            r#"{"k":"引号\""}"#
        );
    }

    #[test]
    fn the_entry_is_the_canonical_json_of_its_fields() {
        let detail = json!({ "z": { "b": [2.5, -0.0, 1e300], "a": u64::MAX }, "y": "é\n\"" });
        let detail_text = canonical_str(&detail);
        for (actor, target, addr) in [
            (Some("ann"), None, Some("192.0.2.7")),
            (None, Some("room-1"), None),
            (Some("引号\""), Some(""), Some("::1")),
        ] {
            let by_definition = canonical_str(&json!({
                "seq": 7, "at_us": -3, "actor": actor, "actor_role": actor.map(|_| "admin"),
                "action": "login", "target": target, "addr": addr, "detail": detail,
            }));
            let spliced = canonical_entry(
                7,
                -3,
                actor,
                actor.map(|_| "admin"),
                "login",
                target,
                addr,
                &detail_text,
            );
            assert_eq!(spliced, by_definition);
        }
        // The example in the module docs.
        assert_eq!(
            canonical_entry(
                7,
                1795405382123456,
                Some("ann"),
                Some("admin"),
                "login",
                None,
                Some("192.0.2.7"),
                &canonical_str(&json!({ "b": [{ "c": 2 }], "a": 1 })),
            ),
            r#"{"action":"login","actor":"ann","actor_role":"admin","addr":"192.0.2.7","at_us":1795405382123456,"detail":{"a":1,"b":[{"c":2}]},"seq":7,"target":null}"#
        );
    }

    #[test]
    fn the_hash_covers_every_field_and_the_previous_hash() {
        let base = canonical_entry(
            1,
            5,
            Some("a"),
            Some("admin"),
            "login",
            None,
            Some("1.2.3.4"),
            "{}",
        );
        let h = chain_hash(GENESIS, &base);
        assert_eq!(h.len(), 64);
        assert_ne!(h, chain_hash(&"1".repeat(64), &base));
        for other in [
            canonical_entry(
                2,
                5,
                Some("a"),
                Some("admin"),
                "login",
                None,
                Some("1.2.3.4"),
                "{}",
            ),
            canonical_entry(
                1,
                6,
                Some("a"),
                Some("admin"),
                "login",
                None,
                Some("1.2.3.4"),
                "{}",
            ),
            canonical_entry(
                1,
                5,
                Some("b"),
                Some("admin"),
                "login",
                None,
                Some("1.2.3.4"),
                "{}",
            ),
            canonical_entry(
                1,
                5,
                Some("a"),
                Some("admin"),
                "logout",
                None,
                Some("1.2.3.4"),
                "{}",
            ),
            canonical_entry(
                1,
                5,
                Some("a"),
                Some("admin"),
                "login",
                Some("t"),
                Some("1.2.3.4"),
                "{}",
            ),
            canonical_entry(1, 5, Some("a"), Some("admin"), "login", None, None, "{}"),
            canonical_entry(
                1,
                5,
                Some("a"),
                Some("admin"),
                "login",
                None,
                Some("1.2.3.4"),
                r#"{"x":1}"#,
            ),
        ] {
            assert_ne!(chain_hash(GENESIS, &other), h, "{other}");
        }
    }

    #[test]
    fn viewing_actions_agree_with_the_sql_list() {
        let sql = crate::db::audit::VIEWING_ACTIONS_SQL;
        let listed: Vec<&str> = sql
            .trim_matches(|c| c == '(' || c == ')')
            .split(", ")
            .map(|s| s.trim_matches('\''))
            .collect();
        for a in &listed {
            assert!(is_viewing(a), "{a}");
        }
        for a in [
            Action::Login,
            Action::ConsentChanged,
            Action::AuditRead,
            Action::LiveViewStart,
            Action::Playback,
        ] {
            assert_eq!(
                is_viewing(a.as_str()),
                listed.contains(&a.as_str()),
                "{a:?}"
            );
        }
    }
}
