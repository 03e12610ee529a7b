//! Police evidence over HTTP. The rules are in [`crate::evidence`]; this module parses,
//! authorises, streams and answers.
//!
//! - `GET /api/v1/evidence/requests` (investigators: their own; admins: all),
//!   `POST` `{case_ref, camera_ids, start, end, reason}` → 201;
//!   `GET /api/v1/evidence/requests/{id}`;
//!   `POST .../{id}/approve` `{note?, valid_days?}` (an admin who did not file it),
//!   `.../reject` `{note?}`, `.../close` `{reason}` (admins; releases the holds).
//! - `POST .../{id}/exports` `{camera_id?, start?, end?}` → 202 and the export;
//!   `GET /api/v1/evidence/exports/{id}`; `.../file` (MP4, Range), `.../manifest`
//!   (the signed bytes), `.../signature` (64 raw bytes).
//! - `GET /api/v1/evidence/public-key`: the PEM, without signing in (it is public, and
//!   a court needs it without an account).
//! - `GET|HEAD /api/v1/cameras/{id}/view.mp4?start=&end=`: playback of up to an hour as
//!   one MP4 built on the fly from the stored segments, with `Range` support
//!   (admins; investigators inside an approved request).

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::auth::{AnyRole, Auth, Policy};
use super::{ApiError, AppState, Body, Result};
use crate::audit::{self, Action, NewEntry};
use crate::auth::{Principal, Role};
use crate::config::CameraId;
use crate::evidence::export::{ExportView, NewExport};
use crate::evidence::mp4::{self, Chunk};
use crate::evidence::{self as ev, Close, Decision, EvidenceError, NewRequest, Scope};
use crate::time::{format_rfc3339, now_us, parse_rfc3339};

/// Evidence: investigators (their own requests) and admins (all, and approval).
pub struct EvidenceUsers;

impl Policy for EvidenceUsers {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Investigator];
    const WHAT: &'static str = "evidence";
}

/// The longest playback one `view.mp4` covers.
pub const MAX_VIEW_US: i64 = 3_600_000_000;
/// Source bytes are fetched and sent in pieces of at most this.
const SEND_PIECE: u64 = 4 << 20;

impl From<EvidenceError> for ApiError {
    fn from(e: EvidenceError) -> Self {
        match e {
            EvidenceError::Invalid(m) => ApiError::Unprocessable(m),
            EvidenceError::Forbidden(m) => ApiError::Forbidden(m),
            EvidenceError::NotFound(m) => ApiError::NotFound(m),
            EvidenceError::Conflict(m) => ApiError::Conflict(m),
            EvidenceError::Db(e) => e.into(),
            EvidenceError::Hold(e) => e.into(),
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/evidence/requests", get(list_requests).post(file_request))
        .route("/api/v1/evidence/requests/{id}", get(get_request))
        .route("/api/v1/evidence/requests/{id}/approve", post(approve))
        .route("/api/v1/evidence/requests/{id}/reject", post(reject))
        .route("/api/v1/evidence/requests/{id}/close", post(close))
        .route("/api/v1/evidence/requests/{id}/exports", post(create_export))
        .route("/api/v1/evidence/exports/{id}", get(get_export))
        .route("/api/v1/evidence/exports/{id}/file", get(export_file))
        .route("/api/v1/evidence/exports/{id}/manifest", get(export_manifest))
        .route("/api/v1/evidence/exports/{id}/signature", get(export_signature))
        .route("/api/v1/evidence/public-key", get(public_key))
        .route("/api/v1/cameras/{id}/view.mp4", get(view_mp4))
}

fn request_id(s: &str) -> Result<i64> {
    s.parse().map_err(|_| ApiError::NotFound(format!("no evidence request {s:?}")))
}

fn camera_name(app: &AppState, id: &str) -> String {
    CameraId::parse(id)
        .ok()
        .and_then(|c| app.fleet.hub(&c))
        .map(|h| h.config.name.clone())
        .unwrap_or_else(|| id.to_owned())
}

async fn view_of(app: &AppState, r: &crate::db::evidence::RequestRow) -> Result<Json<ev::RequestView>> {
    let exports = app.db.evidence_exports_of(r.id).await?;
    Ok(Json(ev::view(r, &exports, |c| camera_name(app, c), now_us())))
}

async fn list_requests(State(app): State<AppState>, Auth(p, _): Auth<EvidenceUsers>) -> Result<Json<serde_json::Value>> {
    let mine = (p.role != Role::Admin).then_some(p.username.as_str());
    let now = now_us();
    let mut out = Vec::new();
    for r in app.db.evidence_requests(mine).await? {
        let exports = app.db.evidence_exports_of(r.id).await?;
        out.push(ev::view(&r, &exports, |c| camera_name(&app, c), now));
    }
    Ok(Json(json!({ "requests": out })))
}

async fn file_request(
    State(app): State<AppState>,
    Auth(p, _): Auth<EvidenceUsers>,
    Body(req): Body<NewRequest>,
) -> Result<(StatusCode, Json<ev::RequestView>)> {
    let mut known = std::collections::HashSet::new();
    for c in &req.camera_ids {
        if let Ok(id) = CameraId::parse(c) {
            if crate::retention::holds::known_camera(&app.db, &app.config, &id).await? {
                known.insert(id);
            }
        }
    }
    let r = ev::file_request(&app.db, &p, req, |c| known.contains(c), now_us()).await?;
    Ok((StatusCode::CREATED, view_of(&app, &r).await?))
}

async fn get_request(State(app): State<AppState>, Auth(p, _): Auth<EvidenceUsers>, Path(id): Path<String>) -> Result<Json<ev::RequestView>> {
    let r = ev::visible_request(&app.db, &p, request_id(&id)?).await?;
    view_of(&app, &r).await
}

async fn approve(
    State(app): State<AppState>,
    Auth(p, _): Auth<EvidenceUsers>,
    Path(id): Path<String>,
    Body(d): Body<Decision>,
) -> Result<Json<ev::RequestView>> {
    let r = ev::decide(&app.db, &p, request_id(&id)?, true, d, now_us()).await?;
    view_of(&app, &r).await
}

async fn reject(
    State(app): State<AppState>,
    Auth(p, _): Auth<EvidenceUsers>,
    Path(id): Path<String>,
    Body(d): Body<Decision>,
) -> Result<Json<ev::RequestView>> {
    let r = ev::decide(&app.db, &p, request_id(&id)?, false, d, now_us()).await?;
    view_of(&app, &r).await
}

async fn close(
    State(app): State<AppState>,
    Auth(p, _): Auth<EvidenceUsers>,
    Path(id): Path<String>,
    Body(c): Body<Close>,
) -> Result<Json<ev::RequestView>> {
    let r = ev::close(&app.db, &p, request_id(&id)?, c, now_us()).await?;
    view_of(&app, &r).await
}

async fn create_export(
    State(app): State<AppState>,
    Auth(p, _): Auth<EvidenceUsers>,
    Path(id): Path<String>,
    Body(body): Body<NewExport>,
) -> Result<(StatusCode, Json<ExportView>)> {
    let r = ev::visible_request(&app.db, &p, request_id(&id)?).await?;
    let e = app.exporter.create(&p, &r, body, now_us()).await?;
    Ok((StatusCode::ACCEPTED, Json(ExportView::from(&e))))
}

/// The export and its request, if `who` may still reach them: the requester while the
/// request is approved and unexpired, or an admin.
async fn reachable_export(
    app: &AppState,
    who: &Principal,
    id: &str,
) -> Result<(crate::db::evidence::ExportRow, crate::db::evidence::RequestRow)> {
    let missing = || ApiError::NotFound(format!("no export {id:?}"));
    let e = app.db.evidence_export(id).await?.ok_or_else(missing)?;
    let r = ev::visible_request(&app.db, who, e.request_id).await.map_err(|_| missing())?;
    if who.role != Role::Admin {
        let state = ev::effective_state(&r, now_us());
        if state != "approved" {
            return Err(ApiError::Forbidden(format!("evidence request {} is {state}: its exports are closed to you", r.id)));
        }
    }
    Ok((e, r))
}

async fn get_export(State(app): State<AppState>, Auth(p, _): Auth<EvidenceUsers>, Path(id): Path<String>) -> Result<Json<ExportView>> {
    let (e, _) = reachable_export(&app, &p, &id).await?;
    Ok(Json(ExportView::from(&e)))
}

#[derive(Clone, Copy)]
enum Part {
    File,
    Manifest,
    Signature,
}

async fn export_part(app: AppState, p: Principal, id: String, part: Part, headers: HeaderMap) -> Result<Response> {
    let (e, r) = reachable_export(&app, &p, &id).await?;
    if e.state != "ready" {
        return Err(ApiError::Conflict(format!("export {id} is {}{}", e.state, e.error.map(|m| format!(": {m}")).unwrap_or_default())));
    }
    let files = app.exporter.files(&e.id);
    let name = crate::evidence::export::file_name(&e);
    let (path, content_type, download) = match part {
        Part::File => (files.mp4, "video/mp4", name.clone()),
        Part::Manifest => (files.manifest, "application/json", name.replace(".mp4", ".manifest.json")),
        Part::Signature => (files.signature, "application/octet-stream", name.replace(".mp4", ".manifest.sig")),
    };
    let what = match part {
        Part::File => "file",
        Part::Manifest => "manifest",
        Part::Signature => "signature",
    };
    // One entry per download, not per Range piece of it.
    let first_piece = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() == "bytes=0-");
    if first_piece {
        ev::audit_request(
            &app.db,
            &p,
            Action::ExportDownloaded,
            &r,
            json!({ "export_id": e.id, "part": what, "camera_id": e.camera_id, "sha256": e.sha256 }),
        )
        .await?;
    }
    let req = axum::http::Request::builder()
        .method(Method::GET)
        .uri("/")
        .body(HttpBody::empty())
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut req = req;
    *req.headers_mut() = headers;
    let resp = tower::ServiceExt::oneshot(tower_http::services::ServeFile::new_with_mime(&path, &content_type.parse().expect("mime")), req)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("serving {}: {e}", path.display())))?;
    let mut resp = resp.map(HttpBody::new).into_response();
    let disp = format!("attachment; filename=\"{download}\"");
    if let Ok(v) = HeaderValue::from_str(&disp) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(resp)
}

async fn export_file(State(app): State<AppState>, Auth(p, _): Auth<EvidenceUsers>, Path(id): Path<String>, headers: HeaderMap) -> Result<Response> {
    export_part(app, p, id, Part::File, headers).await
}

async fn export_manifest(State(app): State<AppState>, Auth(p, _): Auth<EvidenceUsers>, Path(id): Path<String>, headers: HeaderMap) -> Result<Response> {
    export_part(app, p, id, Part::Manifest, headers).await
}

async fn export_signature(State(app): State<AppState>, Auth(p, _): Auth<EvidenceUsers>, Path(id): Path<String>, headers: HeaderMap) -> Result<Response> {
    export_part(app, p, id, Part::Signature, headers).await
}

async fn public_key(State(app): State<AppState>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file")),
            (header::CONTENT_DISPOSITION, HeaderValue::from_static("inline; filename=\"cradle-evidence-public-key.pem\"")),
        ],
        app.exporter.signer().public_key_pem(),
    )
}

#[derive(Deserialize)]
struct ViewQuery {
    start: String,
    end: String,
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range; several → the whole file, as RFC
/// 9110 allows) → `[start, end)`; `Err` when unsatisfiable.
fn byte_range(h: Option<&HeaderValue>, len: u64) -> std::result::Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.and_then(|v| v.to_str().ok()).and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let r = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let n: u64 = b.parse().map_err(|_| ())?;
            (len.saturating_sub(n), len)
        }
        (false, _) => {
            let s: u64 = a.parse().map_err(|_| ())?;
            let e = if b.is_empty() { len } else { b.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(len) };
            (s, e)
        }
        _ => return Err(()),
    };
    if r.0 >= r.1 || r.0 >= len {
        return Err(());
    }
    Ok(Some(r))
}

async fn view_mp4(
    State(app): State<AppState>,
    Auth(p, _): Auth<AnyRole>,
    Path(id): Path<String>,
    Query(q): Query<ViewQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response> {
    let cam = CameraId::parse(&id).map_err(|_| ApiError::NotFound(format!("no camera {id:?}")))?;
    let start = parse_rfc3339(&q.start).map_err(|e| ApiError::BadRequest(format!("start: {e}")))?;
    let end = parse_rfc3339(&q.end).map_err(|e| ApiError::BadRequest(format!("end: {e}")))?;
    if start >= end {
        return Err(ApiError::BadRequest("start must be before end".into()));
    }
    if end - start > MAX_VIEW_US {
        return Err(ApiError::BadRequest("a playback covers at most one hour; ask for the next hour after this one".into()));
    }
    let scope = ev::scope(&app.db, &p, cam.as_str(), start, end, true, now_us()).await?;
    let segments: Vec<_> = app
        .db
        .segments_between(cam.as_str(), start, end)
        .await?
        .into_iter()
        .filter(|s| s.state != "deleting")
        .collect();
    if segments.is_empty() {
        return Err(ApiError::NotFound(format!(
            "camera {} has no footage between {} and {}",
            cam.as_str(),
            format_rfc3339(start),
            format_rfc3339(end)
        )));
    }
    let sources = app.exporter.sources().clone();
    let tables = futures::stream::iter(segments.iter().cloned().map(|s| {
        let sources = sources.clone();
        async move { sources.table(&s).await }
    }))
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let inputs: Vec<mp4::Input<'_>> =
        segments.iter().zip(&tables).map(|(s, t)| mp4::Input { start_us: s.start_us, table: t }).collect();
    let plan = mp4::plan(&inputs, start, end).map_err(|e| ApiError::NotFound(e.to_string()))?;
    let (len, actual_start, actual_end) = (plan.total_len, plan.actual_start_us, plan.actual_end_us);
    drop(inputs);
    let range = byte_range(headers.get(header::RANGE), len);
    let Ok(range) = range else {
        let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        r.headers_mut().insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"));
        return Ok(r);
    };
    let (from, to) = range.unwrap_or((0, len));
    if method == Method::GET && from == 0 {
        audit::append(
            &app.db,
            NewEntry {
                actor: Some(p.username.clone()),
                actor_role: Some(p.role.as_str().to_owned()),
                action: Action::Playback,
                target: Some(format!("camera {}", cam.as_str())),
                addr: p.addr.clone(),
                detail: json!({
                    "camera_id": cam.as_str(), "start": format_rfc3339(start), "end": format_rfc3339(end),
                    "request_id": match scope { Scope::Request { id, .. } => Some(id), Scope::All => None },
                }),
            },
        )
        .await?;
    }
    let mut resp = if method == Method::HEAD {
        Response::new(HttpBody::empty())
    } else {
        let plan = Arc::new(plan);
        let chunks = plan.ranges(from, to);
        let segs = Arc::new(segments);
        let pieces = chunks.into_iter().flat_map(|c| split(c, SEND_PIECE));
        let stream = futures::stream::iter(pieces)
            .map(move |c| {
                let (plan, segs, sources) = (plan.clone(), segs.clone(), sources.clone());
                async move {
                    match c {
                        Chunk::Header(r) => Ok(bytes::Bytes::copy_from_slice(&plan.header[r])),
                        Chunk::Inline(r) => Ok(bytes::Bytes::copy_from_slice(&plan.inline[r])),
                        Chunk::Source { source, offset, len } => sources
                            .range(&segs[source], offset..offset + len)
                            .await
                            .map_err(|e| std::io::Error::other(e.to_string())),
                    }
                }
            })
            .buffered(2);
        Response::new(HttpBody::from_stream(stream))
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(to - from));
    // Where the file's time 0 is on the wall clock (the first keyframe at or after
    // `start`); position t in the file is that + t.
    h.insert("X-Cradle-Start", HeaderValue::from_str(&format_rfc3339(actual_start)).expect("ascii"));
    h.insert("X-Cradle-End", HeaderValue::from_str(&format_rfc3339(actual_end)).expect("ascii"));
    h.insert("Access-Control-Expose-Headers", HeaderValue::from_static("X-Cradle-Start, X-Cradle-End"));
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, HeaderValue::from_str(&format!("bytes {from}-{}/{len}", to - 1)).expect("ascii"));
    }
    Ok(resp)
}

/// Splits a source chunk into pieces of at most `max` bytes (headers stay whole).
fn split(c: Chunk, max: u64) -> Vec<Chunk> {
    match c {
        Chunk::Source { source, offset, len } if len > max => (0..len)
            .step_by(max as usize)
            .map(|o| Chunk::Source { source, offset: offset + o, len: max.min(len - o) })
            .collect(),
        c => vec![c],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        let h = |s: &str| Some(HeaderValue::from_str(s).unwrap());
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(h("bytes=0-").as_ref(), 100), Ok(Some((0, 100))));
        assert_eq!(byte_range(h("bytes=10-19").as_ref(), 100), Ok(Some((10, 20))));
        assert_eq!(byte_range(h("bytes=90-500").as_ref(), 100), Ok(Some((90, 100))));
        assert_eq!(byte_range(h("bytes=-10").as_ref(), 100), Ok(Some((90, 100))));
        assert_eq!(byte_range(h("bytes=0-1,5-6").as_ref(), 100), Ok(None));
        assert_eq!(byte_range(h("bytes=100-").as_ref(), 100), Err(()));
        assert_eq!(byte_range(h("bytes=5-2").as_ref(), 100), Err(()));
        assert_eq!(byte_range(h("bytes=x-").as_ref(), 100), Err(()));
    }
}
