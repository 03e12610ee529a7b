//! Storage of the audit log. The chaining rules are in [`crate::audit`]; this module
//! reads and appends rows.

use sqlx::Row;

use super::{Backend, Db, Result};

/// One stored row, exactly as in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub seq: i64,
    pub at_us: i64,
    pub actor: Option<String>,
    pub actor_role: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub addr: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Filters for listing, newest first. Empty strings and the extreme values mean "any".
#[derive(Clone, Debug)]
pub struct AuditFilter {
    pub from_us: i64,
    pub to_us: i64,
    pub actor: String,
    pub action: String,
    pub before_seq: i64,
    pub limit: i64,
    pub viewing_only: bool,
}

macro_rules! cols {
    () => {
        "id, seq, at_us, actor, actor_role, action, target, addr, detail, prev_hash, hash"
    };
}

/// The actions the parents' committee may read (who watched what). Kept in SQL as a
/// constant list so the query stays static; `audit::is_viewing` agrees with it (tested).
macro_rules! viewing_actions {
    () => {
        "('live_view_start', 'live_view_stop', 'playback', 'export_created', 'export_downloaded', 'snapshot_viewed')"
    };
}
#[allow(dead_code)] // read by the unit test that keeps it in step with audit::is_viewing
pub(crate) const VIEWING_ACTIONS_SQL: &str = viewing_actions!();

fn row_from(r: &sqlx::any::AnyRow) -> Result<AuditRow> {
    Ok(AuditRow {
        id: r.try_get("id")?,
        seq: r.try_get("seq")?,
        at_us: r.try_get("at_us")?,
        actor: r.try_get("actor")?,
        actor_role: r.try_get("actor_role")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        addr: r.try_get("addr")?,
        detail: r.try_get("detail")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// The PostgreSQL advisory-lock key that stands for "the head of the audit chain".
/// Arbitrary, but fixed: every Cradle process on one database must use the same key.
const AUDIT_HEAD_LOCK: i64 = 7_243_000_001;

/// A row about to be appended; `seq`, `prev_hash` and `hash` are computed by `make`
/// from the current head inside the appending transaction.
pub struct PendingAudit<'a> {
    pub at_us: i64,
    pub actor: Option<&'a str>,
    pub actor_role: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub addr: Option<&'a str>,
    pub detail: &'a str,
}

impl Db {
    /// Appends one row after the current head, in one transaction. `hash_of(seq,
    /// prev_hash)` computes the new row's hash.
    ///
    /// The head must not move between reading it and inserting after it, or two
    /// appenders would both chain onto the same entry (a fork). So the transaction
    /// takes the chain's write lock before it reads the head:
    /// - PostgreSQL: a transaction-scoped advisory lock, which serialises appenders
    ///   across connections, processes and nodes and is released by COMMIT/ROLLBACK
    ///   (a crashed appender cannot leave it held).
    /// - SQLite: `BEGIN IMMEDIATE`, which takes the database's write lock at once
    ///   (waiting up to the busy timeout) instead of at the first write; a plain
    ///   deferred `BEGIN` in WAL mode would read a snapshot and then fail to upgrade
    ///   with SQLITE_BUSY when another process appended meanwhile.
    ///
    /// The UNIQUE(seq) constraint is the backstop: should two appenders ever read the
    /// same head, the second insert fails and this returns `Ok(None)`; the caller
    /// re-reads the head and retries.
    pub async fn append_audit(
        &self,
        p: &PendingAudit<'_>,
        hash_of: impl Fn(i64, &str) -> String,
    ) -> Result<Option<AuditRow>> {
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(AUDIT_HEAD_LOCK)
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        };
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (seq, prev) = match head {
            Some(r) => (
                r.try_get::<i64, _>("seq")? + 1,
                r.try_get::<String, _>("hash")?,
            ),
            None => (1, crate::audit::GENESIS.to_owned()),
        };
        let hash = hash_of(seq, &prev);
        let inserted = sqlx::query(
            "INSERT INTO audit_log (seq, at_us, actor, actor_role, action, target, addr, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(seq)
        .bind(p.at_us)
        .bind(p.actor)
        .bind(p.actor_role)
        .bind(p.action)
        .bind(p.target)
        .bind(p.addr)
        .bind(p.detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            cols!(),
            " FROM audit_log WHERE seq = $1"
        ))
        .bind(seq)
        .fetch_one(&mut *tx)
        .await?;
        let row = row_from(&row)?;
        match tx.commit().await {
            Ok(()) => Ok(Some(row)),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Rows in storage order (by id) after `after_id`, at most `limit`: the verifier
    /// walks the table in the order rows were written, not in the order they claim.
    pub async fn audit_page(&self, after_id: i64, limit: i64) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            cols!(),
            " FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_from).collect()
    }

    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRow>> {
        const ALL: &str = concat!(
            "SELECT ",
            cols!(),
            " FROM audit_log WHERE at_us >= $1 AND at_us < $2 AND ($3 = '' OR actor = $3) \
             AND ($4 = '' OR action = $4) AND seq < $5 ORDER BY seq DESC LIMIT $6"
        );
        const VIEWING: &str = concat!(
            "SELECT ",
            cols!(),
            " FROM audit_log WHERE at_us >= $1 AND at_us < $2 AND ($3 = '' OR actor = $3) \
             AND ($4 = '' OR action = $4) AND seq < $5 AND action IN ",
            viewing_actions!(),
            " ORDER BY seq DESC LIMIT $6"
        );
        let rows = sqlx::query(if f.viewing_only { VIEWING } else { ALL })
            .bind(f.from_us)
            .bind(f.to_us)
            .bind(&f.actor)
            .bind(&f.action)
            .bind(f.before_seq)
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_from).collect()
    }
}
