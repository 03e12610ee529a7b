//! Retention and legal holds over HTTP. The rules are in [`crate::retention`]; this
//! module parses, authorises and answers.
//!
//! - `GET /api/v1/retention`: the floor, the centre's days, each camera's days (staff
//!   and the regulator).
//! - `POST /api/v1/retention/sweep` `{"dry_run":false,"older_than_days":N}` (both
//!   optional; send `{}`): a sweep now, admin only. `older_than_days` can only keep
//!   more: below the floor (or `[retention] days`) it is refused with 422.
//! - `GET /api/v1/holds[?active=true]`, `GET /api/v1/holds/{id}`: admins, operators,
//!   the regulator and investigators read holds.
//! - `POST /api/v1/holds` `{camera_id, start, end, case_ref, reason}` → 201, and
//!   `POST /api/v1/holds/{id}/release` `{reason}`: admins only; audited.
//!
//! There is no route that deletes footage by hand: `DELETE` on recordings answers 405.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{AdminOnly, Auth, Policy, StatusReaders};
use super::{ApiError, AppState, Body, Result};
use crate::auth::Role;
use crate::config::CameraId;
use crate::retention::holds::{self, HoldError, HoldRequest};
use crate::retention::{Actor, SweepError, SweepOptions};
use crate::time::now_us;

/// Who may read legal holds: staff, the regulator, and investigators (whose cases they are).
pub struct HoldReaders;

impl Policy for HoldReaders {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Operator, Role::Regulator, Role::Investigator];
    const WHAT: &'static str = "legal holds";
}

impl From<HoldError> for ApiError {
    fn from(e: HoldError) -> Self {
        match e {
            HoldError::Invalid(m) => ApiError::Unprocessable(m),
            HoldError::NotFound(m) => ApiError::NotFound(m),
            HoldError::Conflict(m) => ApiError::Conflict(m),
            HoldError::Db(e) => e.into(),
        }
    }
}

impl From<SweepError> for ApiError {
    fn from(e: SweepError) -> Self {
        match e {
            SweepError::Refused(m) => ApiError::Unprocessable(m),
            other => ApiError::Internal(other.into()),
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/retention", get(policy))
        .route("/api/v1/retention/sweep", post(sweep))
        .route("/api/v1/holds", get(list_holds).post(place_hold))
        .route("/api/v1/holds/{id}", get(get_hold))
        .route("/api/v1/holds/{id}/release", post(release_hold))
}

async fn policy(State(app): State<AppState>, _: Auth<StatusReaders>) -> Result<Json<Value>> {
    let p = app.retention.policy().await?;
    let mut ids: Vec<String> = app.fleet.hubs().iter().map(|h| h.id().to_string()).collect();
    for id in app.db.indexed_camera_ids().await? {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let cameras: Vec<Value> = ids.iter().map(|id| json!({ "id": id, "retention_days": p.days_for(id) })).collect();
    let c = app.retention.config();
    Ok(Json(json!({
        "profile": c.policy.profile.name(),
        "floor_days": p.floor_days,
        "days": p.days,
        "sweep_minutes": c.retention.sweep_interval.as_secs() / 60,
        "sweep_batch": c.retention.sweep_batch,
        "cameras": cameras,
        "active_holds": app.db.list_holds(true).await?.len(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepRequest {
    #[serde(default)]
    dry_run: bool,
    older_than_days: Option<i64>,
}

/// A sweep now, as the admin. The report says what was (or would be) deleted.
async fn sweep(State(app): State<AppState>, Auth(p, _): Auth<AdminOnly>, Body(req): Body<SweepRequest>) -> Result<Json<Value>> {
    let floor = app.retention.config().policy.floor_days;
    let older_than_days = match req.older_than_days {
        None => None,
        // Checked here only for the sign; the floor is checked by the sweeper itself.
        Some(d) if d < 0 || d > i64::from(u32::MAX) => {
            return Err(ApiError::Unprocessable(crate::config::below_floor(d, floor)));
        }
        Some(d) => Some(d as u32),
    };
    let opts = SweepOptions { dry_run: req.dry_run, older_than_days, ..Default::default() };
    let report = app
        .retention
        .try_sweep(now_us(), &opts, &Actor::user(&p))
        .await
        .ok_or_else(|| ApiError::Conflict("a sweep is already running; try again when it is done".into()))??;
    Ok(Json(serde_json::to_value(report).expect("report serialises")))
}

#[derive(Deserialize)]
struct HoldsQuery {
    active: Option<bool>,
}

async fn list_holds(State(app): State<AppState>, _: Auth<HoldReaders>, Query(q): Query<HoldsQuery>) -> Result<Json<Value>> {
    Ok(Json(json!({ "holds": holds::list_holds(&app.db, q.active.unwrap_or(false)).await? })))
}

async fn get_hold(State(app): State<AppState>, _: Auth<HoldReaders>, Path(id): Path<i64>) -> Result<Json<Value>> {
    let h = app.db.hold(id).await?.ok_or_else(|| ApiError::NotFound(format!("no legal hold {id}")))?;
    Ok(Json(serde_json::to_value(holds::Hold::from(h)).expect("hold serialises")))
}

async fn place_hold(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Body(req): Body<HoldRequest>,
) -> Result<(StatusCode, Json<Value>)> {
    let new = req.parse()?;
    if !known(&app, &new.camera_id).await? {
        return Err(ApiError::NotFound(format!(
            "no camera {:?}: it is not configured, was not added and has no footage",
            new.camera_id.as_str()
        )));
    }
    let placed = holds::place_hold(&app.db, new, &Actor::user(&p), now_us()).await?;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(placed).expect("hold serialises"))))
}

async fn known(app: &AppState, id: &CameraId) -> Result<bool> {
    Ok(app.fleet.hub(id).is_some() || holds::known_camera(&app.db, app.retention.config(), id).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    #[serde(default)]
    reason: String,
}

async fn release_hold(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(id): Path<i64>,
    Body(req): Body<ReleaseRequest>,
) -> Result<Json<Value>> {
    let hold = holds::release_hold(&app.db, id, &req.reason, &Actor::user(&p), now_us()).await?;
    Ok(Json(serde_json::to_value(hold).expect("hold serialises")))
}
