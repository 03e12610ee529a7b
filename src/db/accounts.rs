//! Accounts and sessions in the index database. The rules (roles, hashing, expiry)
//! live in [`crate::auth`]; this module only stores and fetches.

use sqlx::Row;

use super::{Db, Result};
use crate::time::WallUs;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub password_hash: String,
    pub created_at_us: WallUs,
    pub password_changed_at_us: WallUs,
    pub disabled_at_us: Option<WallUs>,
}

/// A live session joined with its user, as the authenticator needs it.
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub token_sha256: String,
    pub csrf_token: String,
    pub created_at_us: WallUs,
    pub last_seen_at_us: WallUs,
    pub expires_at_us: WallUs,
    pub revoked_at_us: Option<WallUs>,
    pub user: UserRow,
}

pub struct NewSession<'a> {
    pub token_sha256: &'a str,
    pub user_id: i64,
    pub csrf_token: &'a str,
    pub now_us: WallUs,
    pub expires_at_us: WallUs,
    pub addr: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// The user columns, as a macro so queries stay `&'static str` (sqlx refuses
/// run-time-built SQL unless told it is safe).
macro_rules! user_cols {
    () => {
        "u.id, u.username, u.display_name, u.role, u.password_hash, u.created_at_us, u.password_changed_at_us, u.disabled_at_us"
    };
}

fn user_from(r: &sqlx::any::AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        display_name: r.try_get("display_name")?,
        role: r.try_get("role")?,
        password_hash: r.try_get("password_hash")?,
        created_at_us: r.try_get("created_at_us")?,
        password_changed_at_us: r.try_get("password_changed_at_us")?,
        disabled_at_us: r.try_get("disabled_at_us")?,
    })
}

impl Db {
    /// Inserts an account; `Ok(None)` when the username is taken.
    pub async fn insert_user(
        &self,
        username: &str,
        display_name: &str,
        role: &str,
        password_hash: &str,
        now: WallUs,
    ) -> Result<Option<UserRow>> {
        if self.user_by_name(username).await?.is_some() {
            return Ok(None);
        }
        let inserted = sqlx::query(
            "INSERT INTO users (username, display_name, role, password_hash, created_at_us, password_changed_at_us) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(username)
        .bind(display_name)
        .bind(role)
        .bind(password_hash)
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => self.user_by_name(username).await,
            // Lost a race with another insert of the same name.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>> {
        let q = concat!("SELECT ", user_cols!(), " FROM users u WHERE u.username = $1");
        let row = sqlx::query(q).bind(username).fetch_optional(&self.pool).await?;
        row.as_ref().map(user_from).transpose()
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>> {
        let q = concat!("SELECT ", user_cols!(), " FROM users u ORDER BY u.username");
        let rows = sqlx::query(q).fetch_all(&self.pool).await?;
        rows.iter().map(user_from).collect()
    }

    /// Sets a new password hash and revokes every session of the account except `keep`
    /// (the session that changed it, if any).
    pub async fn set_password(&self, user_id: i64, hash: &str, now: WallUs, keep: Option<&str>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1, password_changed_at_us = $2 WHERE id = $3")
            .bind(hash)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at_us = $1 \
             WHERE user_id = $2 AND revoked_at_us IS NULL AND token_sha256 <> $3",
        )
        .bind(now)
        .bind(user_id)
        .bind(keep.unwrap_or(""))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(revoked)
    }

    /// Changes an account's role or disabled state; disabling revokes its sessions.
    pub async fn update_user(
        &self,
        user_id: i64,
        display_name: &str,
        role: &str,
        disabled_at_us: Option<WallUs>,
        now: WallUs,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET display_name = $1, role = $2, disabled_at_us = $3 WHERE id = $4")
            .bind(display_name)
            .bind(role)
            .bind(disabled_at_us)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if disabled_at_us.is_some() {
            sqlx::query("UPDATE sessions SET revoked_at_us = $1 WHERE user_id = $2 AND revoked_at_us IS NULL")
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_session(&self, s: &NewSession<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (token_sha256, user_id, csrf_token, created_at_us, last_seen_at_us, expires_at_us, addr, user_agent) \
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
        )
        .bind(s.token_sha256)
        .bind(s.user_id)
        .bind(s.csrf_token)
        .bind(s.now_us)
        .bind(s.expires_at_us)
        .bind(s.addr)
        .bind(s.user_agent)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn session(&self, token_sha256: &str) -> Result<Option<SessionRow>> {
        let q = concat!(
            "SELECT s.token_sha256, s.csrf_token, s.created_at_us, s.last_seen_at_us, s.expires_at_us, s.revoked_at_us, ",
            user_cols!(),
            " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_sha256 = $1"
        );
        let Some(r) = sqlx::query(q).bind(token_sha256).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        Ok(Some(SessionRow {
            token_sha256: r.try_get("token_sha256")?,
            csrf_token: r.try_get("csrf_token")?,
            created_at_us: r.try_get("created_at_us")?,
            last_seen_at_us: r.try_get("last_seen_at_us")?,
            expires_at_us: r.try_get("expires_at_us")?,
            revoked_at_us: r.try_get("revoked_at_us")?,
            user: user_from(&r)?,
        }))
    }

    pub async fn touch_session(&self, token_sha256: &str, now: WallUs) -> Result<()> {
        sqlx::query("UPDATE sessions SET last_seen_at_us = $1 WHERE token_sha256 = $2")
            .bind(now)
            .bind(token_sha256)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes one session; false if it was already revoked or unknown.
    pub async fn revoke_session(&self, token_sha256: &str, now: WallUs) -> Result<bool> {
        let n = sqlx::query("UPDATE sessions SET revoked_at_us = $1 WHERE token_sha256 = $2 AND revoked_at_us IS NULL")
            .bind(now)
            .bind(token_sha256)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Revokes every session of an account (admin action); returns how many.
    pub async fn revoke_user_sessions(&self, user_id: i64, now: WallUs) -> Result<u64> {
        Ok(sqlx::query("UPDATE sessions SET revoked_at_us = $1 WHERE user_id = $2 AND revoked_at_us IS NULL")
            .bind(now)
            .bind(user_id)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Deletes sessions that ended (expired or revoked) more than `keep_us` ago.
    pub async fn purge_sessions(&self, now: WallUs, keep_us: i64) -> Result<u64> {
        let before = now - keep_us;
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at_us < $1 OR revoked_at_us < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
