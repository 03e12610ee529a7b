//! Cameras added by an admin, stored in the `cameras` table (see migration 0005). The
//! config file's cameras are not here; [`crate::fleet`] joins the two, config first.

use sqlx::any::AnyRow;
use sqlx::Row;
use tracing::warn;

use super::centre::taken;
use super::Db;
use crate::centre::{CentreError, Result, Stamp};
use crate::config::{below_floor, CameraConfig, CameraFields, CameraId, EnvRefs, RtspTransport, RETENTION_FLOOR_DAYS};

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
        retention_days: None,
    };
    let mut camera = fields.validate(EnvRefs::Literal).map_err(|(k, reason)| format!("{k}: {reason}"))?;
    // Checked where it entered (API, CLI). A row edited by hand below the floor must not
    // stop the camera recording: it keeps the centre's retention, with a warning.
    let days: Option<i64> = r.try_get("retention_days").map_err(|e| e.to_string())?;
    camera.retention_days = match days {
        Some(d) if d < i64::from(RETENTION_FLOOR_DAYS) || d > 36_500 => {
            warn!("cameras table: camera {}: retention_days {d} ignored: {}", camera.id, below_floor(d, RETENTION_FLOOR_DAYS));
            None
        }
        d => d.map(|d| d as u32),
    };
    Ok(camera)
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
                                  created_at_us, created_by, updated_at_us, updated_by, retention_days)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8, $9, $10)",
        )
        .bind(c.id.as_str());
        bind_settings(q, c)
        .bind(stamp.at_us)
        .bind(stamp.by)
        .bind(c.retention_days.map(i64::from))
        .execute(&self.pool)
        .await
        .map_err(|e| taken(e, || format!("camera {:?} already exists", c.id.as_str())))?;
        self.cameras_changed();
        Ok(())
    }

    /// Replaces an added camera's name and connection settings; 404 if it was not added
    /// here (config-file cameras are edited in the file). `retention_days` may be raised;
    /// left out, the stored value stays; lower than the stored value is refused (422):
    /// no one shortens retention (MISSION.md).
    pub async fn update_added_camera(&self, c: &CameraConfig, stamp: Stamp<'_>) -> Result<()> {
        if let Some(new) = c.retention_days {
            let old: Option<i64> = sqlx::query("SELECT retention_days FROM cameras WHERE id = $1")
                .bind(c.id.as_str())
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("retention_days"))
                .transpose()?
                .flatten();
            if let Some(old) = old.filter(|o| i64::from(new) < *o) {
                return Err(CentreError::Invalid(format!(
                    "retention_days: {new} is shorter than the {old} days camera {:?} keeps: retention can be raised, never shortened",
                    c.id.as_str()
                )));
            }
        }
        let q = sqlx::query(
            "UPDATE cameras SET name = $1, url = $2, sub_url = $3, username = $4, password = $5, transport = $6,
                                updated_at_us = $7, updated_by = $8, retention_days = COALESCE($10, retention_days)
             WHERE id = $9",
        );
        let n = bind_settings(q, c)
        .bind(stamp.at_us)
        .bind(stamp.by)
        .bind(c.id.as_str())
        .bind(c.retention_days.map(i64::from))
        .execute(&self.pool)
        .await?;
        if n.rows_affected() == 0 {
            return Err(CentreError::NotFound(format!("camera {:?} was not added through the API", c.id.as_str())));
        }
        self.cameras_changed();
        Ok(())
    }
}
