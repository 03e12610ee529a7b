//! Live view over WHEP (draft-ietf-wish-whep): `POST /api/v1/cameras/{id}/whep` with an
//! SDP offer answers 201 with the SDP answer and the session's `Location`; `PATCH` on
//! the session takes trickled candidates; `DELETE` ends it. Plus what a viewer may
//! watch (`GET /api/v1/live/cameras`) and who watches now (`GET /api/v1/live/sessions`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::{AnyRole, Auth, SessionReaders, Viewers};
use super::{ApiError, AppState, Result};
use crate::auth::Role;
use crate::live::access::{self, Denial};
use crate::live::{ice, Session, StartError};
use crate::time::now_us;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/cameras/{id}/whep", post(whep_offer).options(whep_options))
        .route(
            "/api/v1/live/sessions/{sid}",
            get(session_state).patch(trickle).delete(end_session).options(session_options),
        )
        .route("/api/v1/live/sessions", get(list_sessions))
        .route("/api/v1/live/cameras", get(cameras))
        .layer(axum::middleware::map_response(cors))
}

/// WHEP players run on other origins; Bearer tokens need no cookies, so any origin may
/// call (cookies are never sent cross-origin with `*`).
async fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, ETag, Link, Accept-Patch"));
    r
}

fn preflight(methods: &'static str) -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "Authorization, Content-Type, If-Match, X-CSRF-Token"),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
        .into_response()
}

/// Preflight and ICE-server discovery. Anonymous, so only STUN servers are listed: TURN
/// credentials go to signed-in viewers with their answer.
async fn whep_options(State(app): State<AppState>) -> Response {
    let mut r = preflight("POST, OPTIONS");
    r.headers_mut().insert("Accept-Post", HeaderValue::from_static("application/sdp"));
    for u in &app.live.cfg.stun_servers {
        if let Ok(v) = HeaderValue::from_str(&format!("<{u}>; rel=\"ice-server\"")) {
            r.headers_mut().append(header::LINK, v);
        }
    }
    r
}

async fn session_options() -> Response {
    let mut r = preflight("GET, PATCH, DELETE, OPTIONS");
    r.headers_mut().insert("Accept-Patch", HeaderValue::from_static("application/trickle-ice-sdpfrag"));
    r
}

fn denied(status: StatusCode, d: &Denial) -> Response {
    (status, Json(json!({ "error": d.message, "code": d.code, "until": d.until, "period": d.period }))).into_response()
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn session_path(id: &str) -> String {
    format!("/api/v1/live/sessions/{id}")
}

async fn whep_offer(
    State(app): State<AppState>,
    // Any role: `Live::check` refuses the roles that may not watch with the `role` code.
    Auth(p, _): Auth<AnyRole>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    if media_type(&headers) != "application/sdp" {
        return Err(ApiError::UnsupportedMediaType("a WHEP offer is sent as Content-Type: application/sdp".into()));
    }
    let offer = std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("the offer is not UTF-8 text".into()))?;
    if !offer.starts_with("v=0") {
        return Err(ApiError::BadRequest("the body is not an SDP offer (it must start with v=0)".into()));
    }
    let (session, answer) = match app.live.start(&p, &id, offer).await {
        Ok(r) => r,
        Err(StartError::Denied(d)) => return Ok(denied(StatusCode::FORBIDDEN, &d)),
        Err(StartError::NoCamera(m)) => return Err(ApiError::NotFound(m)),
        Err(StartError::Offline(m)) => return Ok(denied(StatusCode::SERVICE_UNAVAILABLE, &Denial::new("offline", m))),
        Err(StartError::Offer(m)) => return Err(ApiError::BadRequest(m)),
        Err(StartError::Codec(m)) => return Ok((StatusCode::NOT_ACCEPTABLE, Json(json!({ "error": m, "code": "codec" }))).into_response()),
        Err(StartError::Busy(m)) => return Err(ApiError::Unavailable(m)),
        Err(StartError::Internal(m)) => return Err(ApiError::Internal(anyhow::anyhow!(m))),
    };
    let mut r = (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/sdp")], answer).into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_str(&session_path(&session.id)).expect("hex id"));
    h.insert(header::ETAG, HeaderValue::from_str(&session.etag).expect("hex etag"));
    h.insert("Accept-Patch", HeaderValue::from_static("application/trickle-ice-sdpfrag"));
    for l in ice::link_headers(&app.live.cfg, &p.username, now_us() / 1_000_000) {
        if let Ok(v) = HeaderValue::from_str(&l) {
            h.append(header::LINK, v);
        }
    }
    Ok(r)
}

/// The session, if the caller may act on it: its viewer, or an admin.
fn owned(app: &AppState, p: &crate::auth::Principal, sid: &str) -> Result<std::sync::Arc<Session>> {
    let s = app.live.session(sid).ok_or_else(|| ApiError::NotFound(format!("no live session {sid:?}")))?;
    if s.username != p.username && p.role != Role::Admin {
        return Err(ApiError::NotFound(format!("no live session {sid:?}")));
    }
    Ok(s)
}

async fn trickle(
    State(app): State<AppState>,
    Auth(p, _): Auth<Viewers>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let s = owned(&app, &p, &sid)?;
    if s.ending().is_some() {
        return Err(ApiError::NotFound(format!("live session {sid:?} has ended")));
    }
    if media_type(&headers) != "application/trickle-ice-sdpfrag" {
        return Err(ApiError::UnsupportedMediaType("PATCH takes Content-Type: application/trickle-ice-sdpfrag (RFC 8840)".into()));
    }
    match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        None => return Ok((StatusCode::PRECONDITION_REQUIRED, Json(json!({ "error": "send If-Match with the session's ETag" }))).into_response()),
        Some("*") => {
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error": "ICE restarts are not supported; start a new session" }))).into_response())
        }
        Some(e) if e != s.etag => {
            return Ok((StatusCode::PRECONDITION_FAILED, Json(json!({ "error": "If-Match does not match the session's ETag" }))).into_response())
        }
        Some(_) => {}
    }
    let frag = std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("the fragment is not UTF-8 text".into()))?;
    if Session::is_ice_restart(frag) {
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error": "ICE restarts are not supported; start a new session" }))).into_response());
    }
    s.add_candidates(frag).await.map_err(ApiError::BadRequest)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn end_session(State(app): State<AppState>, Auth(p, _): Auth<Viewers>, Path(sid): Path<String>) -> Result<StatusCode> {
    let s = owned(&app, &p, &sid)?;
    app.live.stop(&s.id);
    Ok(StatusCode::NO_CONTENT)
}

async fn session_state(State(app): State<AppState>, Auth(p, _): Auth<Viewers>, Path(sid): Path<String>) -> Result<Json<Value>> {
    Ok(Json(owned(&app, &p, &sid)?.json()))
}

async fn list_sessions(State(app): State<AppState>, _: Auth<SessionReaders>) -> Json<Value> {
    let sessions: Vec<Value> = app.live.active().iter().map(|s| s.json()).collect();
    Json(json!({ "sessions": sessions, "udp_ports_in_use": app.live.ports_in_use() }))
}

/// Whether the camera delivers video now (a viewer would get a picture).
fn delivering(app: &AppState, id: &str) -> bool {
    app.hub(id).is_ok_and(|h| h.state() == crate::hub::CameraState::Recording)
}

/// What the caller may watch now, and why not where not.
async fn cameras(State(app): State<AppState>, Auth(p, _): Auth<Viewers>) -> Result<Json<Value>> {
    let now = now_us();
    let centre = app.db.centre().await?;
    let policy = app.live.policy();
    let mut out = Vec::new();
    let (active, max) = if p.role == Role::Parent {
        let family = app.db.family_of(&p.username).await?;
        (app.live.family_streams(&family), Some(app.live.cfg.max_streams_per_family))
    } else {
        (app.live.active().iter().filter(|s| s.username == p.username).count(), None)
    };
    if p.role == Role::Parent {
        for c in app.db.parent_cameras(&p.username).await? {
            let name = app.hub(&c.camera_id).map(|h| h.config.name.clone()).unwrap_or_else(|_| c.camera_id.clone());
            let mut decision = access::decide(&app.db, policy, &c, now).await?;
            if decision.is_ok() && !delivering(&app, &c.camera_id) {
                decision = Err(Denial::new("offline", "the camera is not delivering video now"));
            }
            if decision.is_ok() && max.is_some_and(|m| active >= m) {
                decision = Err(Denial::new("family_limit", "your family already watches the most streams allowed"));
            }
            out.push(camera_json(&c.camera_id, &name, Some(&c.classroom_name), decision));
        }
    } else {
        let placements = app.db.camera_placements(centre.id).await?;
        let rooms = app.db.list_classrooms(centre.id).await?;
        let areas = app.db.list_areas(centre.id).await?;
        for h in app.fleet.hubs() {
            let id = h.id().as_str();
            let room = placements.iter().find(|pl| pl.camera_id.as_str() == id).and_then(|pl| match &pl.placement {
                crate::centre::Placement::Classroom { classroom_id } => rooms.iter().find(|r| r.id == *classroom_id).map(|r| r.name.clone()),
                crate::centre::Placement::Area { area_id } => areas.iter().find(|a| a.id == *area_id).map(|a| a.name.clone()),
                crate::centre::Placement::Unplaced => None,
            });
            let decision = if delivering(&app, id) {
                Ok(access::Grant { classroom: None, until: None, until_us: None })
            } else {
                Err(Denial::new("offline", "the camera is not delivering video now"))
            };
            out.push(camera_json(id, &h.config.name, room.as_deref(), decision));
        }
    }
    // The page builds its connection from these (TURN with short-lived credentials);
    // WHEP players get the same as Link headers with the answer.
    let cfg = &app.live.cfg;
    let mut ice_servers: Vec<Value> = cfg.stun_servers.iter().map(|u| json!({ "urls": u })).collect();
    if let (Some(secret), false) = (&cfg.turn_secret, cfg.turn_servers.is_empty()) {
        let c = ice::turn_credential(secret, &p.username, now / 1_000_000 + cfg.turn_ttl.as_secs() as i64);
        ice_servers.push(json!({ "urls": cfg.turn_servers, "username": c.username, "credential": c.password }));
    }
    Ok(Json(json!({
        "viewer": { "username": p.username, "display_name": p.display_name, "role": p.role.as_str() },
        "parent_live_view": policy.parent_live_view,
        "time_zone": centre.time_zone.name(),
        "now": jiff::Timestamp::from_microsecond(now).map(|t| t.to_zoned(centre.time_zone.tz().clone())).map(|z| z.timestamp().display_with_offset(z.offset()).to_string()).ok(),
        "sessions": { "active": active, "max": max },
        "ice_servers": ice_servers,
        "cameras": out,
    })))
}

fn camera_json(id: &str, name: &str, classroom: Option<&str>, d: std::result::Result<access::Grant, Denial>) -> Value {
    match d {
        Ok(g) => json!({ "id": id, "name": name, "classroom": classroom, "available": true, "until": g.until, "reason": null }),
        Err(d) => json!({ "id": id, "name": name, "classroom": classroom, "available": false, "until": null, "reason": d }),
    }
}
