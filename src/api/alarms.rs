//! Alarms over HTTP: the list (operators, admins, the regulator) and acknowledgement
//! with a note (operators and admins), audited.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::{Auth, Operators, StatusReaders};
use super::{ApiError, AppState, Body, Result};
use crate::alarms::{AckError, AlarmKind, AlarmQuery};
use crate::audit::{self, Action, NewEntry};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/alarms", get(list))
        .route("/api/v1/alarms/{id}/ack", post(acknowledge))
}

#[derive(Deserialize)]
struct ListParams {
    /// `open` (default: not yet both cleared and acknowledged), `live` (cause present)
    /// or `all`.
    state: Option<String>,
    camera: Option<String>,
    kind: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(app): State<AppState>,
    _: Auth<StatusReaders>,
    Query(p): Query<ListParams>,
) -> Result<Json<serde_json::Value>> {
    if let Some(k) = &p.kind {
        if AlarmKind::parse(k).is_none() {
            return Err(ApiError::BadRequest(format!("no alarm kind {k:?}")));
        }
    }
    let state = p.state.as_deref().unwrap_or("open");
    let q = AlarmQuery {
        open_only: match state {
            "open" | "live" => true,
            "all" => false,
            other => return Err(ApiError::BadRequest(format!("state {other:?}: use open, live or all"))),
        },
        camera: p.camera,
        kind: p.kind,
        limit: p.limit,
    };
    let mut alarms = app.alarms.list(&q).await?;
    if state == "live" {
        alarms.retain(|a| a.cleared_at.is_none());
    }
    Ok(Json(serde_json::json!({ "alarms": alarms })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    note: String,
}

async fn acknowledge(
    State(app): State<AppState>,
    Auth(p, _): Auth<Operators>,
    Path(id): Path<i64>,
    Body(body): Body<AckBody>,
) -> Result<Json<serde_json::Value>> {
    let note = body.note.trim();
    if note.is_empty() {
        return Err(ApiError::Unprocessable("say what was done about the alarm in \"note\"".into()));
    }
    if note.chars().count() > 2000 {
        return Err(ApiError::Unprocessable("the note is longer than 2000 characters".into()));
    }
    let alarm = app.alarms.acknowledge(id, &p.username, note).await.map_err(|e| match e {
        AckError::NotFound(_) => ApiError::NotFound(e.to_string()),
        AckError::AlreadyAcknowledged { .. } => ApiError::Conflict(e.to_string()),
        AckError::Db(d) => d.into(),
    })?;
    audit::append(
        &app.db,
        NewEntry {
            actor: Some(p.username.clone()),
            actor_role: Some(p.role.as_str().to_owned()),
            action: Action::AlarmAcknowledged,
            target: Some(format!("alarm {id}")),
            addr: p.addr.clone(),
            detail: serde_json::json!({
                "alarm": id,
                "camera": alarm.camera_id,
                "kind": alarm.kind,
                "note": note,
                "state_after": alarm.state,
            }),
        },
    )
    .await?;
    Ok(Json(serde_json::json!({ "alarm": alarm })))
}
