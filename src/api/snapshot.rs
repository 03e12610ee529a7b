//! Snapshots and tamper settings over HTTP.
//!
//! - `GET /api/v1/cameras/{id}/snapshot.jpg`: the camera's newest decoded keyframe
//!   (the snapshot task decodes one every `[snapshots] interval_seconds`; before its
//!   first, the hub's latest keyframe is decoded once on demand). Admins and operators
//!   see any camera; a parent only a camera they may watch live now, under the same
//!   rules (403 with the reason); investigators none. Audited (`snapshot_viewed`) at
//!   the first look of a viewer at a camera and then once per 10 minutes, so a console
//!   that refreshes every few seconds leaves one entry, not thousands.
//!   `X-Cradle-Taken` is when the keyframe arrived.
//! - `GET /api/v1/alarms/{id}/snapshot.jpg`: the picture a tamper alarm was raised on.
//! - `POST /api/v1/cameras/{id}/reference`: an operator confirms the camera's view.
//! - `GET|PUT|DELETE /api/v1/cameras/{id}/tamper`: the camera's thresholds.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::{Auth, Operators, StatusReaders, Viewers};
use super::{ApiError, AppState, Body, Result};
use crate::audit::{self, Action, NewEntry};
use crate::snapshot::service::SnapshotError;
use crate::time::{format_rfc3339, now_us, WallUs};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/cameras/{id}/snapshot.jpg", get(snapshot))
        .route("/api/v1/alarms/{id}/snapshot.jpg", get(alarm_snapshot))
        .route("/api/v1/cameras/{id}/reference", post(confirm_reference))
        .route("/api/v1/cameras/{id}/tamper", get(get_tamper).put(put_tamper).delete(reset_tamper))
}

impl From<SnapshotError> for ApiError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::NoPicture(_) => ApiError::Unavailable(e.to_string()),
            SnapshotError::Reference(_) | SnapshotError::Thresholds(_) => ApiError::Unprocessable(e.to_string()),
            SnapshotError::Db(d) => d.into(),
        }
    }
}

/// Appends an audit entry by `p` about `camera`.
async fn audit_camera(app: &AppState, p: &crate::auth::Principal, action: Action, camera: &str, detail: Value) -> Result<()> {
    let entry = NewEntry {
        actor: Some(p.username.clone()),
        actor_role: Some(p.role.as_str().to_owned()),
        action,
        target: Some(format!("camera {camera}")),
        addr: p.addr.clone(),
        detail,
    };
    audit::append(&app.db, entry).await?;
    Ok(())
}

fn jpeg_response(jpeg: Bytes, taken: WallUs) -> Response {
    let mut r = jpeg.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    h.insert("X-Cradle-Taken", HeaderValue::from_str(&format_rfc3339(taken)).expect("ascii"));
    r
}

async fn snapshot(State(app): State<AppState>, Auth(p, _): Auth<Viewers>, Path(id): Path<String>) -> Result<Response> {
    let hub = app.hub(&id)?;
    let camera = hub.id().as_str().to_owned();
    match app.live.check(&p, &camera).await {
        Ok(Ok(_)) => {}
        Ok(Err(d)) => return Err(ApiError::Forbidden(d.message)),
        Err(e) => return Err(ApiError::Internal(anyhow::anyhow!(e))),
    }
    let Some(pic) = app.snapshots.latest(&hub).await? else {
        return Err(ApiError::Unavailable(format!(
            "camera {camera:?} has sent no picture yet ({}); try again when it is recording",
            hub.state().name()
        )));
    };
    if app.snapshots.audit_due(&p.username, &camera, now_us()) {
        let detail = json!({
            "camera_id": camera,
            "taken": format_rfc3339(pic.taken_us),
            "bytes": pic.jpeg.len(),
            "covers": "this and further views of the camera's snapshots by the same user within 10 minutes",
        });
        audit_camera(&app, &p, Action::SnapshotViewed, &camera, detail).await?;
    }
    Ok(jpeg_response(pic.jpeg.clone(), pic.taken_us))
}

async fn alarm_snapshot(State(app): State<AppState>, _: Auth<StatusReaders>, Path(id): Path<i64>) -> Result<Response> {
    let (jpeg, taken) =
        app.alarms.snapshot(id).await?.ok_or_else(|| ApiError::NotFound(format!("alarm {id} has no snapshot")))?;
    Ok(jpeg_response(Bytes::from(jpeg), taken))
}

async fn confirm_reference(
    State(app): State<AppState>,
    Auth(p, _): Auth<Operators>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let hub = app.hub(&id)?;
    let camera = hub.id().as_str();
    let reference = app.snapshots.confirm_reference(camera, &p.username).await?;
    audit_camera(&app, &p, Action::CentreChanged, camera, json!({ "camera_id": camera, "tamper_reference": &reference })).await?;
    Ok(Json(json!({ "reference": reference })))
}

async fn get_tamper(State(app): State<AppState>, _: Auth<StatusReaders>, Path(id): Path<String>) -> Result<Json<Value>> {
    let hub = app.hub(&id)?;
    Ok(Json(serde_json::to_value(app.snapshots.status(hub.id().as_str())).expect("status serialises")))
}

async fn put_tamper(
    State(app): State<AppState>,
    Auth(p, _): Auth<Operators>,
    Path(id): Path<String>,
    Body(changes): Body<serde_json::Map<String, Value>>,
) -> Result<Json<Value>> {
    set_tamper(app, p, id, Some(changes)).await
}

async fn reset_tamper(State(app): State<AppState>, Auth(p, _): Auth<Operators>, Path(id): Path<String>) -> Result<Json<Value>> {
    set_tamper(app, p, id, None).await
}

async fn set_tamper(
    app: AppState,
    p: crate::auth::Principal,
    id: String,
    changes: Option<serde_json::Map<String, Value>>,
) -> Result<Json<Value>> {
    let hub = app.hub(&id)?;
    let camera = hub.id().as_str();
    let thresholds = app.snapshots.set_thresholds(camera, changes.clone(), &p.username).await?;
    let detail = json!({ "camera_id": camera, "tamper_thresholds": &thresholds, "reset": changes.is_none() });
    audit_camera(&app, &p, Action::CentreChanged, camera, detail).await?;
    Ok(Json(serde_json::to_value(app.snapshots.status(camera)).expect("status serialises")))
}
