//! The HTTP API (axum): health, Prometheus metrics, cameras and their recordings, and
//! the static web pages. It reads the pipeline's state (hubs, spool statistics, the
//! index); the pipeline never knows HTTP.
//!
//! Every `/api/v1` route except login takes an `auth::Auth<Policy>` extractor: the
//! policy names the roles allowed, so a handler cannot forget to check.

mod alarms;
pub mod auth;
mod centre;
mod coverage;
mod error;
mod evidence;
mod live;
mod metrics;
mod operator;
mod retention;
mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::config::CameraId;
use crate::db::Db;
use crate::gaps::find_gaps;
use crate::hub::{CameraHub, CameraState};
use crate::record::uploader::SpoolStats;
use crate::time::{format_rfc3339, now_us, parse_rfc3339, ticks_to_us};
use crate::auth::Role;
use auth::{AnyRole, AuditReaders, Auth, AuthState, RecordingReaders, StatusReaders};
pub use error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

#[derive(Clone)]
pub struct AppState {
    /// The cameras being recorded (config file and added ones).
    pub fleet: Arc<crate::fleet::Fleet>,
    pub db: Db,
    pub spool: Arc<SpoolStats>,
    pub storage_description: String,
    pub started_us: i64,
    pub auth: Arc<AuthState>,
    pub alarms: crate::alarms::Alarms,
    /// The configuration the server started with (retention, policy, watchdog …).
    pub config: Arc<crate::config::Config>,
    /// The sweeper and its policy (`POST /api/v1/retention/sweep`).
    pub retention: Arc<crate::retention::Retention>,
    /// The proof of coverage (`GET /api/v1/coverage`, `GET /api/v1/armed`).
    pub coverage: Arc<crate::coverage::Ledger>,
    /// Live view (WHEP sessions and their rules).
    pub live: Arc<crate::live::Live>,
    /// Evidence exports, playback sources and the signing key.
    pub exporter: Arc<crate::evidence::export::Exporter>,
    /// Each camera's newest snapshot and its tamper checks.
    pub snapshots: Arc<crate::snapshot::service::Snapshots>,
}

impl AppState {
    fn hub(&self, id: &str) -> Result<Arc<CameraHub>> {
        let id = CameraId::parse(id).map_err(|_| ApiError::NotFound(format!("no camera {id:?}")))?;
        self.fleet.hub(&id).ok_or_else(|| ApiError::NotFound(format!("no camera {:?}", id.as_str())))
    }
}

/// A JSON body whose rejection (wrong content type, malformed JSON, a missing or
/// mistyped field) is answered like every other error: `{"error": "…"}` naming what is
/// wrong, 415 / 400 / 422 as axum classifies it.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(match e.status() {
                axum::http::StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(e.body_text()),
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(e.body_text()),
                _ => ApiError::BadRequest(e.body_text()),
            }),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/common.js", get(common_js))
        .route("/login", get(login_page))
        .route("/admin", get(admin_page))
        .route("/admin.js", get(admin_js))
        .route("/live", get(live_page))
        .route("/live.js", get(live_js))
        .route("/evidence", get(evidence_page))
        .route("/evidence.js", get(evidence_js))
        .route("/operator", get(operator_page))
        .route("/operator.js", get(operator_js))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/login", post(auth::login))
        .route("/api/v1/logout", post(auth::logout))
        .route("/api/v1/me", get(auth::me))
        .route("/api/v1/me/password", post(auth::change_password))
        .route("/api/v1/users", get(auth::list_users).post(auth::create_user))
        .route("/api/v1/users/{username}", patch(auth::update_user))
        .route("/api/v1/users/{username}/revoke-sessions", post(auth::revoke_sessions))
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/status", get(status))
        .route("/api/v1/cameras", get(list_cameras))
        .route("/api/v1/cameras/{id}", get(get_camera))
        .route("/api/v1/cameras/{id}/recordings", get(recordings))
        .merge(centre::routes())
        .merge(alarms::routes())
        .merge(retention::routes())
        .merge(coverage::routes())
        .merge(live::routes())
        .merge(evidence::routes())
        .merge(snapshot::routes())
        .merge(operator::routes())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}

async fn live_page() -> Html<&'static str> {
    Html(include_str!("../../web/live.html"))
}

async fn live_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../../web/live.js"))
}

async fn evidence_page() -> Html<&'static str> {
    Html(include_str!("../../web/evidence.html"))
}

async fn evidence_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../../web/evidence.js"))
}

async fn operator_page() -> Html<&'static str> {
    Html(include_str!("../../web/operator.html"))
}

async fn operator_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../../web/operator.js"))
}

async fn login_page() -> Html<&'static str> {
    Html(include_str!("../../web/login.html"))
}

async fn admin_page() -> Html<&'static str> {
    Html(include_str!("../../web/admin.html"))
}

async fn admin_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../../web/admin.js"))
}

/// The pages' shared script, preceded by the centre's default language (`[server]
/// language`), which a page uses when its user has not chosen one.
async fn common_js(State(app): State<AppState>) -> impl IntoResponse {
    let lang = match app.config.language {
        Some(crate::config::Language::Zh) => "\"zh\"",
        Some(crate::config::Language::En) => "\"en\"",
        None => "null",
    };
    let body = format!("const CRADLE_DEFAULT_LANG = {lang};\n{}", include_str!("../../web/common.js"));
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], body)
}

async fn app_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../../web/app.js"))
}

async fn healthz(State(app): State<AppState>) -> Result<Json<serde_json::Value>> {
    app.db.ping().await.map_err(|e| ApiError::Unavailable(format!("database: {e}")))?;
    Ok(Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })))
}

#[derive(Serialize)]
struct CameraView {
    id: String,
    name: String,
    state: &'static str,
    last_error: Option<String>,
    last_frame_at: Option<String>,
    codec: Option<String>,
    frames: u64,
    bytes: u64,
    reconnects: u64,
    segments: u64,
    frames_dropped: u64,
    clock_drift_ms: f64,
    oldest_footage: Option<String>,
    newest_footage: Option<String>,
    /// The watchdog's verdict: `starting`, `recording`, `degraded`, `stalled`,
    /// `offline` or `decommissioned`, since when, and why.
    health: HealthView,
}

#[derive(Serialize)]
struct HealthView {
    state: &'static str,
    since: String,
    detail: String,
}

async fn camera_view(app: &AppState, h: &CameraHub) -> Result<CameraView> {
    let s = &h.stats;
    let last = s.last_frame_us.load(Ordering::Relaxed);
    let state = h.state();
    let (first, newest, _) = app.db.camera_extent(h.id().as_str()).await?;
    Ok(CameraView {
        id: h.id().to_string(),
        name: h.config.name.clone(),
        state: state.name(),
        last_error: match state {
            CameraState::Failed { error } => Some(error),
            _ => None,
        },
        last_frame_at: (last != 0).then(|| format_rfc3339(last)),
        codec: h.codec(),
        frames: s.frames.load(Ordering::Relaxed),
        bytes: s.bytes.load(Ordering::Relaxed),
        reconnects: s.reconnects.load(Ordering::Relaxed),
        segments: s.segments.load(Ordering::Relaxed),
        frames_dropped: s.frames_dropped.load(Ordering::Relaxed),
        clock_drift_ms: s.drift_us.load(Ordering::Relaxed) as f64 / 1000.0,
        oldest_footage: first.map(format_rfc3339),
        newest_footage: newest.map(format_rfc3339),
        health: {
            let h = h.health();
            HealthView { state: h.state, since: format_rfc3339(h.since_us), detail: h.detail }
        },
    })
}

/// The cameras the caller may know about: all of them for staff and the regulator,
/// for a parent only the viewable cameras of their children's classrooms.
async fn visible_cameras(app: &AppState, p: &crate::auth::Principal) -> Result<Vec<Arc<CameraHub>>> {
    match p.role {
        Role::Admin | Role::Operator | Role::Regulator | Role::Investigator => Ok(app.fleet.hubs()),
        Role::Parent => {
            let allowed = app.db.cameras_viewable_by_guardian(&p.username).await.map_err(|e| ApiError::Internal(e.into()))?;
            Ok(app.fleet.hubs().into_iter().filter(|h| allowed.iter().any(|c| c == h.id())).collect())
        }
        Role::Committee => Err(ApiError::Forbidden("the committee role reads the viewing audit, not cameras".into())),
    }
}

async fn list_cameras(State(app): State<AppState>, Auth(p, _): Auth<AnyRole>) -> Result<Json<serde_json::Value>> {
    let visible = visible_cameras(&app, &p).await?;
    let mut cams = Vec::with_capacity(visible.len());
    for h in &visible {
        cams.push(camera_view(&app, h).await?);
    }
    Ok(Json(serde_json::json!({ "cameras": cams })))
}

async fn get_camera(
    State(app): State<AppState>,
    Auth(p, _): Auth<AnyRole>,
    Path(id): Path<String>,
) -> Result<Json<CameraView>> {
    let h = app.hub(&id)?;
    if !visible_cameras(&app, &p).await?.iter().any(|v| v.id() == h.id()) {
        return Err(ApiError::Forbidden(format!(
            "camera {id:?} is not in a classroom of your children, or is not open to parents"
        )));
    }
    Ok(Json(camera_view(&app, &h).await?))
}

async fn status(State(app): State<AppState>, _: Auth<StatusReaders>) -> Result<Json<serde_json::Value>> {
    let per_camera: Vec<_> = app
        .db
        .spooled_by_camera()
        .await?
        .into_iter()
        .map(|(c, n, b)| serde_json::json!({ "camera": c, "segments": n, "bytes": b }))
        .collect();
    Ok(Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": format_rfc3339(app.started_us),
        "storage": storage_health(&app),
        "spool": {
            "backlog_segments": app.spool.segments(),
            "backlog_bytes": app.spool.bytes(),
            "per_camera": per_camera,
            "uploaded_segments": app.spool.uploaded_segments.load(Ordering::Relaxed),
            "upload_failures": app.spool.upload_failures.load(Ordering::Relaxed),
        },
    })))
}

/// Whether uploads to storage are succeeding, as `/status` and `/armed` show it.
pub(crate) fn storage_health(app: &AppState) -> serde_json::Value {
    let failing = app.spool.failing_since_us.load(Ordering::Relaxed);
    serde_json::json!({
        "description": app.storage_description,
        "healthy": failing == 0,
        "failing_since": (failing != 0).then(|| format_rfc3339(failing)),
        "last_error": if failing != 0 { app.spool.last_error.lock().unwrap().clone() } else { None },
    })
}

#[derive(Deserialize)]
struct AuditParams {
    from: Option<String>,
    to: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    before_seq: Option<i64>,
    limit: Option<i64>,
}

/// The audit log, newest first (page with `before_seq`). The committee sees only who
/// watched what (viewing entries).
async fn audit_log(
    State(app): State<AppState>,
    Auth(p, _): Auth<AuditReaders>,
    Query(q): Query<AuditParams>,
) -> Result<Json<serde_json::Value>> {
    let parse = |s: &Option<String>| s.as_deref().map(parse_rfc3339).transpose().map_err(ApiError::BadRequest);
    let query = crate::audit::AuditQuery {
        from_us: parse(&q.from)?,
        to_us: parse(&q.to)?,
        actor: q.actor,
        action: q.action,
        before_seq: q.before_seq,
        limit: q.limit,
        viewing_only: p.role == Role::Committee,
    };
    let entries = crate::audit::list(&app.db, &query).await?;
    Ok(Json(serde_json::json!({ "entries": entries, "viewing_only": query.viewing_only })))
}

#[derive(Deserialize)]
struct RangeQuery {
    start: Option<String>,
    end: Option<String>,
}

/// At most this much per query: a day of one-minute segments is 1440 rows.
const MAX_RANGE_US: i64 = 7 * 86_400 * 1_000_000;

async fn recordings(
    State(app): State<AppState>,
    Auth(p, _): Auth<RecordingReaders>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Json<serde_json::Value>> {
    let h = app.hub(&id)?;
    let now = now_us();
    let end = q.end.as_deref().map(parse_rfc3339).transpose().map_err(ApiError::BadRequest)?.unwrap_or(now);
    let start = q
        .start
        .as_deref()
        .map(parse_rfc3339)
        .transpose()
        .map_err(ApiError::BadRequest)?
        .unwrap_or(end - 3_600_000_000);
    if start >= end {
        return Err(ApiError::BadRequest("start must be before end".into()));
    }
    if end - start > MAX_RANGE_US {
        return Err(ApiError::BadRequest("range longer than 7 days; ask for less".into()));
    }
    let cam = h.id().as_str();
    // An investigator sees only inside an approved request: the range is clamped to it.
    let (start, end) = if p.role == Role::Investigator {
        match crate::evidence::scope(&app.db, &p, cam, start, end, false, now).await? {
            crate::evidence::Scope::Request { start_us, end_us, .. } => (start.max(start_us), end.min(end_us)),
            crate::evidence::Scope::All => (start, end),
        }
    } else {
        (start, end)
    };
    // Footage still being written is not missing: the segment in progress (up to one
    // segment length, fsynced GOP by GOP in the spool) is indexed when it closes. Read
    // before the index: the recorder moves it on only after the closed segment's row is
    // written, so a segment closing meanwhile is found in one or the other.
    let open_start = h.stats.open_segment_start_us.load(Ordering::Relaxed);
    let segments = app.db.segments_between(cam, start, end).await?;
    let events = app.db.events_between(cam, start - 60_000_000, end).await?;
    let in_progress = (open_start != 0 && open_start < end).then_some(open_start);
    let mut spans: Vec<(i64, i64)> = segments.iter().map(|s| (s.start_us, s.end_us)).collect();
    spans.extend(in_progress.map(|s| (s, now)));
    let gaps = find_gaps(start, end, now, &spans, &events);
    let mut causes: HashMap<&str, i64> = HashMap::new();
    for g in &gaps {
        *causes.entry(g.cause.as_str()).or_default() += g.end_us - g.start_us;
    }
    Ok(Json(serde_json::json!({
        "camera": cam,
        "start": format_rfc3339(start),
        "end": format_rfc3339(end),
        "segments": segments.iter().map(|s| serde_json::json!({
            "start": format_rfc3339(s.start_us),
            "end": format_rfc3339(s.end_us),
            "duration_seconds": ticks_to_us(s.duration_90k) as f64 / 1e6,
            "bytes": s.bytes,
            "frames": s.frames,
            "codec": s.codec,
            "key": s.object_key,
            "sha256": s.sha256,
            "state": s.state,
            "clock_drift_ms": s.drift_us as f64 / 1000.0,
        })).collect::<Vec<_>>(),
        "gaps": gaps.iter().map(|g| serde_json::json!({
            "start": format_rfc3339(g.start_us),
            "end": format_rfc3339(g.end_us),
            "seconds": (g.end_us - g.start_us) as f64 / 1e6,
            "cause": g.cause,
            "detail": g.detail,
        })).collect::<Vec<_>>(),
        "in_progress": in_progress.map(|s| serde_json::json!({ "start": format_rfc3339(s) })),
        "gap_seconds_by_cause": causes.iter().map(|(k, v)| (k.to_string(), *v as f64 / 1e6)).collect::<HashMap<_, _>>(),
    })))
}

