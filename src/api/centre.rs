//! The centre's administration over HTTP: the centre's settings, classrooms and their
//! privacy periods, areas, where each camera hangs and whether parents may watch it,
//! children, guardians and consent. The rules live in [`crate::centre`] and
//! [`crate::db::centre`]; this module parses, authorises, audits and answers.
//!
//! Who may do what:
//! - the centre's structure (settings, classrooms, areas, cameras' placement) is read by
//!   admins, operators and regulators (a regulator checks places and ratios), changed
//!   by admins only;
//! - children and guardians are personal information (PIPL): admins only;
//! - a parent reads their own children through `GET /api/v1/me/children` and nothing
//!   else here, whatever id they guess.
//!
//! Every change is audited (`centre_changed`, or `consent_changed`) with the result as
//! the entry's detail. Cameras come from the config file or are added here (see
//! [`crate::fleet`]: the config file wins); the camera routes answer 404 for an id that
//! is neither.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::{record, AdminOnly, Auth, CameraKeepers, CentreReaders, Parents};
use super::{ApiError, AppState, Body, Result};
use crate::audit::Action;
use crate::auth::Principal;
use crate::centre::{
    merge_cameras, AreaId, CameraUpdate, CentreError, CentreUpdate, ChildId, ChildUpdate, ClassroomId, ClassroomUpdate,
    ConsentState, GuardianId, NewArea, NewChild, NewClassroom, NewGuardian, NewPrivacyPeriod, PrivacyPeriodId, Stamp,
};
use crate::config::{CameraConfig, CameraFields, CameraId, EnvRefs, RtspTransport};
use crate::time::now_us;

impl From<CentreError> for ApiError {
    fn from(e: CentreError) -> Self {
        match e {
            CentreError::NotFound(m) => ApiError::NotFound(m),
            CentreError::Conflict(m) => ApiError::Conflict(m),
            CentreError::Invalid(m) => ApiError::Unprocessable(m),
            CentreError::Db(e) => e.into(),
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/centre", get(get_centre).patch(update_centre))
        .route("/api/v1/classrooms", get(list_classrooms).post(create_classroom))
        .route("/api/v1/classrooms/{id}", get(get_classroom).patch(update_classroom))
        .route("/api/v1/classrooms/{id}/close", post(close_classroom))
        .route("/api/v1/classrooms/{id}/privacy-periods", post(add_privacy_period))
        .route("/api/v1/classrooms/{id}/privacy-periods/{period}", delete(delete_privacy_period))
        .route("/api/v1/areas", get(list_areas).post(create_area))
        .route("/api/v1/areas/{id}", patch(update_area))
        .route("/api/v1/centre/cameras", get(list_cameras).post(add_camera))
        .route("/api/v1/centre/cameras/test", post(test_camera))
        .route("/api/v1/centre/cameras/{id}", patch(update_camera))
        .route("/api/v1/centre/cameras/{id}/connection", put(set_connection))
        .route("/api/v1/centre/cameras/{id}/decommission", post(decommission_camera))
        .route("/api/v1/children", get(list_children).post(enrol_child))
        .route("/api/v1/children/{id}", get(get_child).patch(update_child))
        .route("/api/v1/children/{id}/move", post(move_child))
        .route("/api/v1/children/{id}/leave", post(child_left))
        .route("/api/v1/guardians", get(list_guardians).post(create_guardian))
        .route("/api/v1/guardians/{id}", get(get_guardian).patch(update_guardian))
        .route("/api/v1/guardians/{id}/children", post(link_guardian))
        .route("/api/v1/guardians/{id}/children/{child}", delete(unlink_guardian))
        .route("/api/v1/guardians/{id}/children/{child}/consent", get(consent_history).post(set_consent))
        .route("/api/v1/me/children", get(my_children))
}

fn stamp(p: &Principal) -> Stamp<'_> {
    Stamp { by: &p.username, at_us: now_us() }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("centre types serialise")
}

/// Audits a change and answers with its result. A failure to audit fails the request.
async fn changed<T: Serialize>(app: &AppState, p: &Principal, action: Action, target: String, out: &T) -> Result<Json<Value>> {
    let v = to_json(out);
    record(app, Some(p), action, Some(target), None, v.clone()).await?;
    Ok(Json(v))
}

async fn created<T: Serialize>(app: &AppState, p: &Principal, target: String, out: &T) -> Result<(StatusCode, Json<Value>)> {
    Ok((StatusCode::CREATED, changed(app, p, Action::CentreChanged, target, out).await?))
}

/// A camera being recorded (of the config file or added by an admin), else 404.
fn configured(app: &AppState, id: &str) -> Result<CameraId> {
    Ok(app.hub(id)?.id().clone())
}

// ----- the centre -----

async fn get_centre(State(app): State<AppState>, _: Auth<CentreReaders>) -> Result<Json<Value>> {
    let centre = app.db.centre().await?;
    let places = app.db.centre_places(centre.id).await?;
    Ok(Json(json!({ "centre": centre, "places": places })))
}

async fn update_centre(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Body(u): Body<CentreUpdate>,
) -> Result<Json<Value>> {
    let id = app.db.centre().await?.id;
    let c = app.db.update_centre(id, &u, stamp(&p)).await?;
    changed(&app, &p, Action::CentreChanged, format!("centre {id}"), &c).await
}

// ----- classrooms -----

/// Every classroom (closed ones too, with `closed_at_us`), each with its privacy periods.
async fn list_classrooms(State(app): State<AppState>, _: Auth<CentreReaders>) -> Result<Json<Value>> {
    let centre = app.db.centre().await?;
    let mut out = Vec::new();
    for room in app.db.list_classrooms(centre.id).await? {
        let periods = app.db.privacy_periods(room.id).await?;
        out.push(with_field(&room, "privacy_periods", to_json(&periods)));
    }
    Ok(Json(json!({ "classrooms": out })))
}

/// `v` as a JSON object with one more field.
fn with_field<T: Serialize>(v: &T, key: &str, extra: Value) -> Value {
    let mut v = to_json(v);
    if let Value::Object(m) = &mut v {
        m.insert(key.to_owned(), extra);
    }
    v
}

async fn get_classroom(State(app): State<AppState>, _: Auth<CentreReaders>, Path(id): Path<i64>) -> Result<Json<Value>> {
    let room = app.db.classroom(ClassroomId(id)).await?;
    let periods = app.db.privacy_periods(room.id).await?;
    Ok(Json(json!({ "classroom": room, "privacy_periods": periods })))
}

async fn create_classroom(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Body(new): Body<NewClassroom>,
) -> Result<(StatusCode, Json<Value>)> {
    let centre = app.db.centre().await?;
    let c = app.db.create_classroom(centre.id, &new, stamp(&p)).await?;
    created(&app, &p, format!("classroom {}", c.id), &c).await
}

async fn update_classroom(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(id): Path<i64>,
    Body(u): Body<ClassroomUpdate>,
) -> Result<Json<Value>> {
    let c = app.db.update_classroom(ClassroomId(id), &u, stamp(&p)).await?;
    changed(&app, &p, Action::CentreChanged, format!("classroom {id}"), &c).await
}

async fn close_classroom(State(app): State<AppState>, Auth(p, _): Auth<AdminOnly>, Path(id): Path<i64>) -> Result<Json<Value>> {
    let c = app.db.close_classroom(ClassroomId(id), stamp(&p)).await?;
    changed(&app, &p, Action::CentreChanged, format!("classroom {id}"), &c).await
}

async fn add_privacy_period(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(id): Path<i64>,
    Body(new): Body<NewPrivacyPeriod>,
) -> Result<(StatusCode, Json<Value>)> {
    let period = app.db.add_privacy_period(ClassroomId(id), &new, stamp(&p)).await?;
    created(&app, &p, format!("classroom {id} privacy period {}", period.id), &period).await
}

async fn delete_privacy_period(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path((id, period)): Path<(i64, i64)>,
) -> Result<Json<Value>> {
    let periods = app.db.privacy_periods(ClassroomId(id)).await?;
    let gone = periods
        .into_iter()
        .find(|x| x.id == PrivacyPeriodId(period))
        .ok_or_else(|| ApiError::NotFound(format!("classroom {id} has no privacy period {period}")))?;
    app.db.delete_privacy_period(gone.id).await?;
    changed(&app, &p, Action::CentreChanged, format!("classroom {id} privacy period {period}"), &json!({ "deleted": gone }))
        .await
}

// ----- areas -----

async fn list_areas(State(app): State<AppState>, _: Auth<CentreReaders>) -> Result<Json<Value>> {
    let centre = app.db.centre().await?;
    Ok(Json(json!({ "areas": app.db.list_areas(centre.id).await? })))
}

async fn create_area(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Body(new): Body<NewArea>,
) -> Result<(StatusCode, Json<Value>)> {
    let centre = app.db.centre().await?;
    let a = app.db.create_area(centre.id, &new, stamp(&p)).await?;
    created(&app, &p, format!("area {}", a.id), &a).await
}

/// Marking an area private switches its cameras' parent viewing off (and says which).
async fn update_area(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(id): Path<i64>,
    Body(u): Body<NewArea>,
) -> Result<Json<Value>> {
    let (area, switched_off) = app.db.update_area(AreaId(id), &u, stamp(&p)).await?;
    let ids: Vec<&str> = switched_off.iter().map(CameraId::as_str).collect();
    let out = json!({ "area": area, "cameras_no_longer_viewable": ids });
    changed(&app, &p, Action::CentreChanged, format!("area {id}"), &out).await
}

// ----- cameras -----

/// Every camera being recorded with its placement and where its settings come from
/// (`source`: `config` or `database`), and any camera that has a placement but is no
/// longer recorded (`in_config: false`, removed from the config file). Connection
/// settings are shown without the password.
async fn list_cameras(State(app): State<AppState>, _: Auth<CentreReaders>) -> Result<Json<Value>> {
    let centre = app.db.centre().await?;
    let configs: Vec<_> = app.fleet.hubs().iter().map(|h| h.config.clone()).collect();
    let cameras = merge_cameras(&configs, app.db.camera_placements(centre.id).await?);
    let out: Vec<Value> = cameras
        .iter()
        .map(|c| {
            let conf = configs.iter().find(|x| x.id == c.id);
            let mut v = with_field(c, "source", to_json(&app.fleet.source(&c.id)));
            if let (Some(conf), Value::Object(m)) = (conf, &mut v) {
                m.insert("connection".into(), connection_json(conf));
                // The camera's own; null keeps the centre's [retention] days.
                m.insert("retention_days".into(), json!(conf.retention_days));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "cameras": out })))
}

/// A camera's connection settings as shown and audited: never the password.
fn connection_json(c: &CameraConfig) -> Value {
    json!({
        "url": c.url.as_str(),
        "sub_url": c.sub_url.as_ref().map(|u| u.as_str()),
        "username": c.username,
        "has_password": c.password.is_some(),
        "transport": match c.transport { RtspTransport::Tcp => "tcp", RtspTransport::Udp => "udp" },
    })
}

fn camera_fields(fields: CameraFields) -> Result<CameraConfig> {
    fields
        .validate(EnvRefs::Literal)
        .map_err(|(field, reason)| ApiError::Unprocessable(format!("{field}: {reason}")))
}

/// Adds a camera and starts recording it at once. Its id must be new: the config file's
/// cameras are edited in the file. Answers 201 with the camera as listed.
async fn add_camera(
    State(app): State<AppState>,
    Auth(p, _): Auth<CameraKeepers>,
    Body(fields): Body<CameraFields>,
) -> Result<(StatusCode, Json<Value>)> {
    let camera = camera_fields(fields)?;
    if app.fleet.in_config_file(&camera.id) {
        return Err(ApiError::Conflict(format!("camera {:?} is already defined in the config file", camera.id.as_str())));
    }
    app.db.add_camera(&camera, stamp(&p)).await?;
    app.fleet.reconcile(&app.db).await?;
    let out = json!({ "id": camera.id.as_str(), "name": camera.name, "source": "database", "connection": connection_json(&camera), "retention_days": camera.retention_days });
    created(&app, &p, format!("camera {}", camera.id), &out).await
}

/// How long "test connection" waits for a camera's first keyframe.
const TEST_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCamera {
    url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    transport: Option<String>,
    /// Test a camera being edited: its stored password is used when none is given
    /// and the username is unchanged.
    #[serde(default)]
    id: Option<String>,
}

/// "Test connection" before saving a camera: connects with the given settings, waits
/// for the first keyframe (up to 15 s) and answers it as a JPEG (`X-Cradle-Codec`,
/// `X-Cradle-Width`, `X-Cradle-Height`), or 422 with why it failed. Nothing is stored
/// or recorded; the attempt is audited.
async fn test_camera(
    State(app): State<AppState>,
    Auth(p, _): Auth<CameraKeepers>,
    Body(t): Body<TestCamera>,
) -> Result<axum::response::Response> {
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    let fields = CameraFields {
        id: "test".into(),
        name: None,
        url: t.url,
        username: t.username,
        password: t.password,
        sub_url: None,
        transport: t.transport,
        retention_days: None,
    };
    let mut camera = camera_fields(fields)?;
    if let (None, Some(id)) = (&camera.password, &t.id) {
        if let Ok(id) = CameraId::parse(id) {
            if let Some(old) = app.db.added_camera(&id).await? {
                if camera.username.is_some() && camera.username == old.username {
                    camera.password = old.password;
                }
            }
        }
    }
    let outcome = match crate::ingest::probe(&camera, TEST_WITHIN).await {
        Ok(frame) => {
            let frame = std::sync::Arc::new(frame);
            tokio::task::spawn_blocking(move || crate::snapshot::decode::decode_keyframe(&frame).map(|d| (d, frame)))
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
                .map_err(|e| format!("connected, but its keyframe does not decode: {e}"))
        }
        Err(e) => Err(e),
    };
    let url = camera.url.as_str().to_owned();
    let detail = json!({
        "camera_test": { "url": url, "username": camera.username, "ok": outcome.is_ok(), "error": outcome.as_ref().err() },
    });
    record(&app, Some(&p), Action::CameraTested, Some(format!("camera test {url}")), p.addr.clone(), detail).await?;
    let (d, frame) = outcome.map_err(|e| ApiError::Unprocessable(format!("{url}: {e}")))?;
    let mut r = d.jpeg.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (k, v) in [
        ("X-Cradle-Codec", frame.params.codec.clone()),
        ("X-Cradle-Width", frame.params.width.to_string()),
        ("X-Cradle-Height", frame.params.height.to_string()),
    ] {
        h.insert(k, HeaderValue::from_str(&v).expect("ascii"));
    }
    Ok(r)
}

/// The new name and connection settings of a camera an admin added; the camera
/// reconnects with them at once (the segment in progress is closed first). Leaving
/// `password` out keeps the stored one while `username` stays the same. Cameras of the
/// config file are edited there (409).
async fn set_connection(
    State(app): State<AppState>,
    Auth(p, _): Auth<CameraKeepers>,
    Path(id): Path<String>,
    Body(mut fields): Body<serde_json::Map<String, Value>>,
) -> Result<Json<Value>> {
    let cam = configured(&app, &id)?;
    if app.fleet.in_config_file(&cam) {
        return Err(ApiError::Conflict(format!(
            "camera {id:?} is defined in the config file; change its settings there and restart Cradle"
        )));
    }
    let old = app.db.added_camera(&cam).await?.ok_or_else(|| ApiError::NotFound(format!("no added camera {id:?}")))?;
    fields.insert("id".into(), Value::String(id.clone()));
    let fields: CameraFields =
        serde_json::from_value(Value::Object(fields)).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let mut camera = camera_fields(fields)?;
    if camera.password.is_none() && camera.username.is_some() && camera.username == old.username {
        camera.password = old.password;
    }
    app.db.update_added_camera(&camera, stamp(&p)).await?;
    app.fleet.reconcile(&app.db).await?;
    let out = json!({ "id": id, "name": camera.name, "source": "database", "connection": connection_json(&camera) });
    changed(&app, &p, Action::CentreChanged, format!("camera {id}"), &out).await
}

async fn update_camera(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(id): Path<String>,
    Body(u): Body<CameraUpdate>,
) -> Result<Json<Value>> {
    let camera = configured(&app, &id)?;
    let centre = app.db.centre().await?;
    let placement = app.db.update_camera(centre.id, &camera, u, stamp(&p)).await?;
    changed(&app, &p, Action::CentreChanged, format!("camera {id}"), &placement).await
}

#[derive(Deserialize)]
struct DecommissionRequest {
    reason: String,
}

/// Records that a camera is out of service (moved, broken, removed). It never stops
/// recording: recording ends only when the camera leaves the config file.
async fn decommission_camera(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(id): Path<String>,
    Body(req): Body<DecommissionRequest>,
) -> Result<Json<Value>> {
    let camera = configured(&app, &id)?;
    let centre = app.db.centre().await?;
    let placement = app.db.decommission_camera(centre.id, &camera, &req.reason, stamp(&p)).await?;
    changed(&app, &p, Action::CentreChanged, format!("camera {id}"), &placement).await
}

// ----- children -----

#[derive(Deserialize)]
struct ChildrenQuery {
    classroom_id: Option<i64>,
}

async fn list_children(
    State(app): State<AppState>,
    _: Auth<AdminOnly>,
    Query(q): Query<ChildrenQuery>,
) -> Result<Json<Value>> {
    let centre = app.db.centre().await?;
    let children = app.db.list_children(centre.id, q.classroom_id.map(ClassroomId)).await?;
    Ok(Json(json!({ "children": children })))
}

/// A child with their guardians (and each one's consent) and enrolment history.
async fn get_child(State(app): State<AppState>, _: Auth<AdminOnly>, Path(id): Path<i64>) -> Result<Json<Value>> {
    let child = app.db.child(ChildId(id)).await?;
    let guardians = app.db.child_guardians(child.id).await?;
    let moves = app.db.child_moves(child.id).await?;
    Ok(Json(json!({ "child": child, "guardians": guardians, "moves": moves })))
}

async fn enrol_child(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Body(new): Body<NewChild>,
) -> Result<(StatusCode, Json<Value>)> {
    let centre = app.db.centre().await?;
    let c = app.db.enrol_child(centre.id, &new, stamp(&p)).await?;
    created(&app, &p, format!("child {}", c.id), &c).await
}

async fn update_child(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(id): Path<i64>,
    Body(u): Body<ChildUpdate>,
) -> Result<Json<Value>> {
    let c = app.db.update_child(ChildId(id), &u, stamp(&p)).await?;
    changed(&app, &p, Action::CentreChanged, format!("child {id}"), &c).await
}

#[derive(Deserialize)]
struct MoveRequest {
    classroom_id: i64,
}

async fn move_child(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(id): Path<i64>,
    Body(req): Body<MoveRequest>,
) -> Result<Json<Value>> {
    let c = app.db.move_child(ChildId(id), ClassroomId(req.classroom_id), stamp(&p)).await?;
    changed(&app, &p, Action::CentreChanged, format!("child {id}"), &c).await
}

async fn child_left(State(app): State<AppState>, Auth(p, _): Auth<AdminOnly>, Path(id): Path<i64>) -> Result<Json<Value>> {
    let c = app.db.child_left(ChildId(id), stamp(&p)).await?;
    changed(&app, &p, Action::CentreChanged, format!("child {id}"), &c).await
}

// ----- guardians and consent -----

/// Every guardian, each with their children and the consent on record for each.
async fn list_guardians(State(app): State<AppState>, _: Auth<AdminOnly>) -> Result<Json<Value>> {
    let centre = app.db.centre().await?;
    let mut out = Vec::new();
    for g in app.db.list_guardians(centre.id).await? {
        let children = app.db.guardian_children(&g.username).await?;
        out.push(with_field(&g, "children", to_json(&children)));
    }
    Ok(Json(json!({ "guardians": out })))
}

/// A guardian with their children (and the consent for each).
async fn get_guardian(State(app): State<AppState>, _: Auth<AdminOnly>, Path(id): Path<i64>) -> Result<Json<Value>> {
    let g = app.db.guardian(GuardianId(id)).await?;
    let children = app.db.guardian_children(&g.username).await?;
    Ok(Json(json!({ "guardian": g, "children": children })))
}

async fn create_guardian(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Body(new): Body<NewGuardian>,
) -> Result<(StatusCode, Json<Value>)> {
    let centre = app.db.centre().await?;
    let g = app.db.create_guardian(centre.id, &new, stamp(&p)).await?;
    created(&app, &p, format!("guardian {}", g.id), &g).await
}

#[derive(Deserialize)]
struct GuardianPatch {
    display_name: String,
}

async fn update_guardian(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(id): Path<i64>,
    Body(u): Body<GuardianPatch>,
) -> Result<Json<Value>> {
    let g = app.db.update_guardian(GuardianId(id), &u.display_name, stamp(&p)).await?;
    changed(&app, &p, Action::CentreChanged, format!("guardian {id}"), &g).await
}

#[derive(Deserialize)]
struct LinkRequest {
    child_id: i64,
    relationship: String,
}

async fn link_guardian(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(id): Path<i64>,
    Body(req): Body<LinkRequest>,
) -> Result<(StatusCode, Json<Value>)> {
    let l = app.db.link_guardian(GuardianId(id), ChildId(req.child_id), &req.relationship, stamp(&p)).await?;
    created(&app, &p, format!("guardian {id} child {}", req.child_id), &l).await
}

async fn unlink_guardian(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path((id, child)): Path<(i64, i64)>,
) -> Result<Json<Value>> {
    let l = app.db.unlink_guardian(GuardianId(id), ChildId(child), stamp(&p)).await?;
    changed(&app, &p, Action::CentreChanged, format!("guardian {id} child {child}"), &l).await
}

#[derive(Deserialize)]
struct ConsentRequest {
    state: ConsentState,
    #[serde(default)]
    note: String,
}

/// Records a guardian's consent given or withdrawn (PIPL: who recorded it, when, and a
/// note such as "signed form 2026-09-01"). Withdrawal takes effect at once.
async fn set_consent(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path((id, child)): Path<(i64, i64)>,
    Body(req): Body<ConsentRequest>,
) -> Result<(StatusCode, Json<Value>)> {
    let r = app.db.set_consent(GuardianId(id), ChildId(child), req.state, &req.note, stamp(&p)).await?;
    let v = changed(&app, &p, Action::ConsentChanged, format!("guardian {id} child {child}"), &r).await?;
    Ok((StatusCode::CREATED, v))
}

async fn consent_history(
    State(app): State<AppState>,
    _: Auth<AdminOnly>,
    Path((id, child)): Path<(i64, i64)>,
) -> Result<Json<Value>> {
    let link = app.db.guardian_link(GuardianId(id), ChildId(child)).await?;
    let history = app.db.consent_history(GuardianId(id), ChildId(child)).await?;
    Ok(Json(json!({ "link": link, "history": history })))
}

// ----- a parent's own view -----

/// The caller's own children, each with the classroom and the consent on record.
async fn my_children(State(app): State<AppState>, Auth(p, _): Auth<Parents>) -> Result<Json<Value>> {
    Ok(Json(json!({ "children": app.db.guardian_children(&p.username).await? })))
}
