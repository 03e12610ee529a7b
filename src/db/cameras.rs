//! Cameras added by an admin, stored in the `cameras` table (see migration 0005). The
//! config file's cameras are not here; [`crate::fleet`] joins the two, config first.

use sqlx::any::AnyRow;
use sqlx::Row;
use tracing::warn;

use super::centre::taken;
use super::Db;
use crate::centre::{CentreError, Result, Stamp};
use crate::config::{CameraConfig, CameraFields, CameraId, EnvRefs, RtspTransport};

fn transport_str(t: RtspTransport) -> &'static str {
    match t {
        RtspTransport::Tcp => "tcp",
        RtspTransport::Udp => "udp",
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds name, url, sub_url, username, password, transport, in that order.
fn bind_settings<'q>(q: Query<'q>, c: &CameraConfig) -> Query<'q> {
    q.bind(c.name.clone())
        .bind(c.url.as_str().to_owned())
        .bind(c.sub_url.as_ref().map(|u| u.as_str().to_owned()))
        .bind(c.username.clone())
        .bind(c.password.clone())
        .bind(transport_str(c.transport))
}

fn camera_from(r: &AnyRow) -> std::result::Result<CameraConfig, String> {
    let fields = CameraFields {
        id: r.try_get("id").map_err(|e| e.to_string())?,
        name: r.try_get("name").map_err(|e| e.to_string())?,
        url: r.try_get("url").map_err(|e| e.to_string())?,
        username: r.try_get("username").map_err(|e| e.to_string())?,
        password: r.try_get("password").map_err(|e| e.to_string())?,
        sub_url: r.try_get("sub_url").map_err(|e| e.to_string())?,
        transport: r.try_get("transport").map_err(|e| e.to_string())?,
        // Added cameras keep the centre's retention (no column yet).
        retention_days: None,
    };
    fields.validate(EnvRefs::Literal).map_err(|(k, reason)| format!("{k}: {reason}"))
}

impl Db {
    /// Every camera an admin added, in id order. A row that no longer validates (edited
    /// by hand) is skipped with a warning rather than stopping the other cameras.
    pub async fn added_cameras(&self) -> Result<Vec<CameraConfig>> {
        let rows = sqlx::query("SELECT * FROM cameras ORDER BY id").fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            match camera_from(r) {
                Ok(c) => out.push(c),
                Err(e) => warn!("cameras table: row {:?} is not usable: {e}", r.try_get::<String, _>("id").unwrap_or_default()),
            }
        }
        Ok(out)
    }

    pub async fn added_camera(&self, id: &CameraId) -> Result<Option<CameraConfig>> {
        let r = sqlx::query("SELECT * FROM cameras WHERE id = $1").bind(id.as_str()).fetch_optional(&self.pool).await?;
        r.map(|r| camera_from(&r).map_err(CentreError::Invalid)).transpose()
    }

    /// Stores a new camera; 409 if the id is taken.
    pub async fn add_camera(&self, c: &CameraConfig, stamp: Stamp<'_>) -> Result<()> {
        let q = sqlx::query(
            "INSERT INTO cameras (id, name, url, sub_url, username, password, transport,
                                  created_at_us, created_by, updated_at_us, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8, $9)",
        )
        .bind(c.id.as_str());
        bind_settings(q, c)
        .bind(stamp.at_us)
        .bind(stamp.by)
        .execute(&self.pool)
        .await
        .map_err(|e| taken(e, || format!("camera {:?} already exists", c.id.as_str())))?;
        Ok(())
    }

    /// Replaces an added camera's name and connection settings; 404 if it was not added
    /// here (config-file cameras are edited in the file).
    pub async fn update_added_camera(&self, c: &CameraConfig, stamp: Stamp<'_>) -> Result<()> {
        let q = sqlx::query(
            "UPDATE cameras SET name = $1, url = $2, sub_url = $3, username = $4, password = $5, transport = $6,
                                updated_at_us = $7, updated_by = $8
             WHERE id = $9",
        );
        let n = bind_settings(q, c)
        .bind(stamp.at_us)
        .bind(stamp.by)
        .bind(c.id.as_str())
        .execute(&self.pool)
        .await?;
        if n.rows_affected() == 0 {
            return Err(CentreError::NotFound(format!("camera {:?} was not added through the API", c.id.as_str())));
        }
        Ok(())
    }
}
