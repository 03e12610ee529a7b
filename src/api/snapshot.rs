//! `GET /api/v1/cameras/{id}/snapshot.jpg`: the camera's latest keyframe as a JPEG.
//!
//! Decoded on a blocking thread at most once per keyframe (the hub keeps the current
//! GOP's keyframe), never per request or per frame, and cached until the camera sends
//! the next one. Admins and operators see any camera; a parent only a camera they may
//! watch live now, under the same rules (403 with the reason otherwise). Every view is
//! audited (`snapshot_viewed`). `X-Cradle-Taken` is when the keyframe arrived.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::auth::{Auth, Viewers};
use super::{ApiError, AppState, Result};
use crate::audit::{self, Action, NewEntry};
use crate::snapshot::decode::decode_keyframe;
use crate::time::{format_rfc3339, WallUs};

/// The newest JPEG per camera and the arrival time of the keyframe it shows.
#[derive(Default)]
pub struct SnapshotCache {
    latest: Mutex<HashMap<String, (WallUs, Bytes)>>,
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/cameras/{id}/snapshot.jpg", get(snapshot))
}

async fn snapshot(State(app): State<AppState>, Auth(p, _): Auth<Viewers>, Path(id): Path<String>) -> Result<Response> {
    let hub = app.hub(&id)?;
    let camera = hub.id().as_str().to_owned();
    match app.live.check(&p, &camera).await {
        Ok(Ok(_)) => {}
        Ok(Err(d)) => return Err(ApiError::Forbidden(d.message)),
        Err(e) => return Err(ApiError::Internal(anyhow::anyhow!(e))),
    }
    let Some(key) = hub.latest_keyframe() else {
        return Err(ApiError::Unavailable(format!(
            "camera {camera:?} has sent no picture yet ({}); try again when it is recording",
            hub.state().name()
        )));
    };
    let cached = app.snapshots.latest.lock().unwrap().get(&camera).filter(|(at, _)| *at == key.arrival_us).cloned();
    let (taken, jpeg) = match cached {
        Some(c) => c,
        None => {
            let at = key.arrival_us;
            let decoded = tokio::task::spawn_blocking(move || decode_keyframe(&key))
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
                .map_err(|e| ApiError::Unavailable(format!("camera {camera:?}: cannot decode its latest keyframe: {e}")))?;
            app.snapshots.latest.lock().unwrap().insert(camera.clone(), (at, decoded.jpeg.clone()));
            (at, decoded.jpeg)
        }
    };
    audit::append(
        &app.db,
        NewEntry {
            actor: Some(p.username.clone()),
            actor_role: Some(p.role.as_str().to_owned()),
            action: Action::SnapshotViewed,
            target: Some(format!("camera {camera}")),
            addr: p.addr.clone(),
            detail: json!({ "camera_id": camera, "taken": format_rfc3339(taken), "bytes": jpeg.len() }),
        },
    )
    .await?;
    let mut r = jpeg.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    h.insert("X-Cradle-Taken", HeaderValue::from_str(&format_rfc3339(taken)).expect("ascii"));
    Ok(r)
}
