//! Authentication and authorisation at the HTTP boundary.
//!
//! Every `/api/v1` handler takes an [`Auth<P>`] extractor whose policy `P` lists the
//! roles allowed; a handler without one cannot see who is asking, so it cannot forget
//! to check. Credentials: `Authorization: Bearer TOKEN` (scripts, WHEP players) or the
//! `cradle_session` cookie (the web pages). Writes authenticated by the cookie must
//! carry the session's CSRF token in `X-CSRF-Token`: a cookie is sent by the browser
//! on its own, a header is not. Logins are throttled per account and per address.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use super::{ApiError, AppState, Body, Result};
use crate::audit::{self, Action, NewEntry};
use crate::auth::{self, Principal, Role, Throttle};
use crate::config::AuthConfig;
use crate::db::accounts::{NewSession, UserRow};
use crate::time::{format_rfc3339, now_us};

pub const COOKIE: &str = "cradle_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Sessions are marked as seen at most this often (one write per minute, not per request).
const TOUCH_EVERY_US: i64 = 60_000_000;

/// The authentication side of the shared state.
pub struct AuthState {
    pub config: AuthConfig,
    pub per_account: Throttle,
    pub per_addr: Throttle,
    /// Mark cookies `Secure` (the server is reached over https).
    pub secure_cookies: bool,
}

impl AuthState {
    pub fn new(config: AuthConfig, secure_cookies: bool) -> AuthState {
        AuthState {
            per_account: Throttle::new(config.max_failures_per_account, config.failure_window),
            per_addr: Throttle::new(config.max_failures_per_addr, config.failure_window),
            config,
            secure_cookies,
        }
    }
}

// ---- policies --------------------------------------------------------------------------------

/// Which roles may use a route family.
pub trait Policy: Send + Sync + 'static {
    const ROLES: &'static [Role];
    /// What the route family is, for the 403 message.
    const WHAT: &'static str;
}

macro_rules! policy {
    ($(#[$m:meta])* $name:ident, $what:literal, [$($role:ident),+]) => {
        $(#[$m])*
        pub struct $name;
        impl Policy for $name {
            const ROLES: &'static [Role] = &[$(Role::$role),+];
            const WHAT: &'static str = $what;
        }
    };
}

policy!(/// Anyone signed in (what they then see is filtered by role).
    AnyRole, "this", [Admin, Operator, Parent, Investigator, Regulator, Committee]);
policy!(/// Centre management and accounts.
    AdminOnly, "administration", [Admin]);
policy!(/// The centre's structure: settings, classrooms, areas, cameras' placement (not
    /// children or guardians, which are personal information: admins only).
    CentreReaders, "the centre's structure", [Admin, Operator, Regulator]);
policy!(/// A parent's own children.
    Parents, "a parent's own children", [Parent]);
policy!(/// The pipeline's health: spool, storage, cameras' technical state.
    StatusReaders, "the system status", [Admin, Operator, Regulator]);
policy!(/// Acting on alarms (acknowledging them), confirming a camera's view, tuning its
    /// tamper checks.
    Operators, "acting on alarms", [Admin, Operator]);
policy!(/// Adding cameras and fixing their connection settings (MISSION: operators "add and
    /// fix cameras"); placement, decommissioning and parent visibility stay with admins.
    CameraKeepers, "adding and fixing cameras", [Admin, Operator]);
policy!(/// Recording metadata (segments and gaps), not the video itself. Investigators
    /// see it only inside an approved evidence request (the handler clamps to it).
    RecordingReaders, "recordings", [Admin, Operator, Regulator, Investigator]);
policy!(/// Live video (parents under the live-view rules; staff any camera).
    Viewers, "live video", [Admin, Operator, Parent]);
policy!(/// Who is watching live now.
    SessionReaders, "live sessions", [Admin, Operator, Regulator]);
policy!(/// The audit log (committee: viewing entries only).
    AuditReaders, "the audit log", [Admin, Regulator, Committee]);

/// An authenticated caller whose role `P` allows. Rejects with 401 (no or bad
/// credentials) or 403 (wrong role, or a cookie write without the CSRF token).
pub struct Auth<P: Policy>(pub Principal, pub PhantomData<P>);

impl<P: Policy> Auth<P> {
    pub fn principal(&self) -> &Principal {
        &self.0
    }
}

impl<P: Policy> FromRequestParts<AppState> for Auth<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self> {
        let p = authenticate(parts, app).await?;
        if !P::ROLES.contains(&p.role) {
            return Err(ApiError::Forbidden(format!("the {} role may not access {}", p.role, P::WHAT)));
        }
        Ok(Auth(p, PhantomData))
    }
}

/// The client's address: the peer, or the last `X-Forwarded-For` hop when the peer is
/// a reverse proxy on this machine.
pub fn client_addr(parts_headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<String> {
    let peer = peer?;
    if peer.ip().is_loopback() {
        if let Some(xff) = parts_headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            if let Some(last) = xff.rsplit(',').map(str::trim).find(|s| !s.is_empty()) {
                return Some(last.to_owned());
            }
        }
    }
    Some(peer.ip().to_string())
}

fn peer(parts: &Parts) -> Option<SocketAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

async fn authenticate(parts: &Parts, app: &AppState) -> Result<Principal> {
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned());
    let (token, via_cookie) = match bearer {
        Some(t) => (t, false),
        None => match cookie_token(&parts.headers) {
            Some(t) => (t, true),
            None => return Err(ApiError::Unauthorized("sign in first (no session cookie or Bearer token)".into())),
        },
    };
    let digest = auth::token_digest(&token);
    let now = now_us();
    let s = app
        .db
        .session(&digest)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("unknown session; sign in again".into()))?;
    if s.revoked_at_us.is_some() {
        return Err(ApiError::Unauthorized("this session was ended; sign in again".into()));
    }
    if now >= s.expires_at_us {
        return Err(ApiError::Unauthorized("the session expired; sign in again".into()));
    }
    if now - s.last_seen_at_us > app.auth.config.idle_timeout.as_micros() as i64 {
        return Err(ApiError::Unauthorized("the session expired after inactivity; sign in again".into()));
    }
    if s.user.disabled_at_us.is_some() {
        return Err(ApiError::Unauthorized("this account is disabled".into()));
    }
    let role: Role = s
        .user
        .role
        .parse()
        .map_err(|e: String| ApiError::Internal(anyhow::anyhow!("account {}: {e}", s.user.username)))?;
    let writes = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if via_cookie && writes {
        let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !auth::constant_time_eq(sent, &s.csrf_token) {
            return Err(ApiError::Forbidden(format!(
                "missing or wrong {CSRF_HEADER} header (required for cookie-authenticated changes)"
            )));
        }
    }
    if now - s.last_seen_at_us > TOUCH_EVERY_US {
        app.db.touch_session(&digest, now).await?;
    }
    Ok(Principal {
        user_id: s.user.id,
        username: s.user.username,
        display_name: s.user.display_name,
        role,
        session: digest,
        csrf_token: s.csrf_token,
        expires_at_us: s.expires_at_us,
        addr: client_addr(&parts.headers, peer(parts)),
    })
}

/// Appends to the audit log. A failure to audit fails the request: an unaudited look
/// at a child's video must not happen.
pub async fn record(
    app: &AppState,
    who: Option<&Principal>,
    action: Action,
    target: Option<String>,
    addr: Option<String>,
    detail: serde_json::Value,
) -> Result<()> {
    let entry = NewEntry {
        actor: who.map(|p| p.username.clone()),
        actor_role: who.map(|p| p.role.as_str().to_owned()),
        action,
        target,
        addr: addr.or_else(|| who.and_then(|p| p.addr.clone())),
        detail,
    };
    audit::append(&app.db, entry).await?;
    Ok(())
}

// ---- login, logout, me ---------------------------------------------------------------------

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

/// Peer address and headers, for handlers that run before authentication.
pub struct ClientInfo {
    pub addr: Option<String>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> std::result::Result<Self, Self::Rejection> {
        Ok(ClientInfo {
            addr: client_addr(&parts.headers, peer(parts)),
            user_agent: parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(200).collect()),
        })
    }
}

pub async fn login(State(app): State<AppState>, client: ClientInfo, body: Option<Json<LoginRequest>>) -> Result<Response> {
    let Some(Json(req)) = body else {
        return Err(ApiError::BadRequest("send JSON {\"username\": …, \"password\": …}".into()));
    };
    let now = Instant::now();
    let account_key = format!("user:{}", req.username.to_lowercase());
    let addr_key = format!("addr:{}", client.addr.as_deref().unwrap_or("?"));
    for (t, k) in [(&app.auth.per_account, &account_key), (&app.auth.per_addr, &addr_key)] {
        if let Err(wait) = t.check(k, now) {
            record(&app, None, Action::LoginFailed, Some(req.username.clone()), client.addr.clone(), json!({ "reason": "throttled" })).await?;
            return Err(ApiError::TooManyRequests {
                message: format!("too many failed sign-ins; try again in {} s", wait.as_secs().max(1)),
                retry_after: wait,
            });
        }
    }
    let user = app.db.user_by_name(&req.username).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| auth::dummy_hash().to_owned());
    let pw = req.password.clone();
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&pw, &hash)).await.expect("argon2 task panicked");
    let user = match user {
        Some(u) if ok && u.disabled_at_us.is_none() => u,
        other => {
            let reason = match &other {
                None => "unknown user",
                Some(u) if u.disabled_at_us.is_some() && ok => "account disabled",
                Some(_) => "wrong password",
            };
            app.auth.per_account.fail(&account_key, now);
            app.auth.per_addr.fail(&addr_key, now);
            record(&app, None, Action::LoginFailed, Some(req.username.clone()), client.addr.clone(), json!({ "reason": reason })).await?;
            return Err(ApiError::Unauthorized("wrong username or password".into()));
        }
    };
    app.auth.per_account.clear(&account_key);
    let (token, digest) = auth::new_token();
    let (csrf, _) = auth::new_token();
    let created = now_us();
    let expires = created + app.auth.config.session_lifetime.as_micros() as i64;
    app.db
        .insert_session(&NewSession {
            token_sha256: &digest,
            user_id: user.id,
            csrf_token: &csrf,
            now_us: created,
            expires_at_us: expires,
            addr: client.addr.as_deref(),
            user_agent: client.user_agent.as_deref(),
        })
        .await?;
    let role: Role = user.role.parse().map_err(|e: String| ApiError::Internal(anyhow::anyhow!(e)))?;
    let who = Principal {
        user_id: user.id,
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        role,
        session: digest,
        csrf_token: csrf.clone(),
        expires_at_us: expires,
        addr: client.addr.clone(),
    };
    record(&app, Some(&who), Action::Login, None, None, json!({ "user_agent": client.user_agent })).await?;
    let body = json!({
        "token": token,
        "role": role,
        "username": user.username,
        "display_name": user.display_name,
        "expires_at": format_rfc3339(expires),
        "csrf_token": csrf,
    });
    let cookie = session_cookie(&app, &token, app.auth.config.session_lifetime);
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

fn session_cookie(app: &AppState, token: &str, max_age: Duration) -> HeaderValue {
    let secure = if app.auth.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    ))
    .expect("cookie is ASCII")
}

pub async fn logout(State(app): State<AppState>, Auth(p, _): Auth<AnyRole>) -> Result<Response> {
    app.db.revoke_session(&p.session, now_us()).await?;
    record(&app, Some(&p), Action::Logout, None, None, json!({})).await?;
    let cleared = session_cookie(&app, "", Duration::ZERO);
    Ok(([(header::SET_COOKIE, cleared)], StatusCode::NO_CONTENT).into_response())
}

pub async fn me(Auth(p, _): Auth<AnyRole>) -> Json<serde_json::Value> {
    Json(json!({
        "username": p.username,
        "display_name": p.display_name,
        "role": p.role,
        "expires_at": format_rfc3339(p.expires_at_us),
        "csrf_token": p.csrf_token,
    }))
}

#[derive(Deserialize)]
pub struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// Changes the caller's own password and ends their other sessions.
pub async fn change_password(
    State(app): State<AppState>,
    Auth(p, _): Auth<AnyRole>,
    Body(req): Body<ChangePassword>,
) -> Result<StatusCode> {
    auth::check_password(&req.new_password).map_err(ApiError::Unprocessable)?;
    let user = app.db.user_by_name(&p.username).await?.ok_or_else(|| ApiError::Unauthorized("account gone".into()))?;
    let (cur, hash) = (req.current_password, user.password_hash.clone());
    if !tokio::task::spawn_blocking(move || auth::verify_password(&cur, &hash)).await.expect("argon2 task panicked") {
        return Err(ApiError::Forbidden("the current password is wrong".into()));
    }
    let new_hash = hash_blocking(req.new_password).await;
    let ended = app.db.set_password(user.id, &new_hash, now_us(), Some(&p.session)).await?;
    record(&app, Some(&p), Action::PasswordChanged, Some(p.username.clone()), None, json!({ "other_sessions_ended": ended })).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn hash_blocking(pw: String) -> String {
    tokio::task::spawn_blocking(move || auth::hash_password(&pw)).await.expect("argon2 task panicked")
}

// ---- accounts (admin) ------------------------------------------------------------------------

fn user_json(u: &UserRow) -> serde_json::Value {
    json!({
        "username": u.username,
        "display_name": u.display_name,
        "role": u.role,
        "created_at": format_rfc3339(u.created_at_us),
        "password_changed_at": format_rfc3339(u.password_changed_at_us),
        "disabled": u.disabled_at_us.is_some(),
    })
}

pub async fn list_users(State(app): State<AppState>, _: Auth<AdminOnly>) -> Result<Json<serde_json::Value>> {
    let users: Vec<_> = app.db.list_users().await?.iter().map(user_json).collect();
    Ok(Json(json!({ "users": users })))
}

#[derive(Deserialize)]
pub struct NewUser {
    username: String,
    display_name: Option<String>,
    role: String,
    password: String,
}

pub async fn create_user(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Body(req): Body<NewUser>,
) -> Result<(StatusCode, Json<serde_json::Value>)> {
    let user = create_account(&app.db, &req.username, req.display_name.as_deref(), &req.role, req.password)
        .await
        .map_err(|e| match e {
            CreateError::Invalid(m) => ApiError::Unprocessable(m),
            CreateError::Taken(m) => ApiError::Conflict(m),
            CreateError::Db(e) => e.into(),
        })?;
    record(&app, Some(&p), Action::AccountCreated, Some(user.username.clone()), None, json!({ "role": user.role })).await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))))
}

#[derive(Deserialize)]
pub struct UserPatch {
    display_name: Option<String>,
    role: Option<String>,
    disabled: Option<bool>,
    password: Option<String>,
}

/// Edits an account: name, role, disabled, or a new password (which ends its sessions).
pub async fn update_user(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(username): Path<String>,
    Body(req): Body<UserPatch>,
) -> Result<Json<serde_json::Value>> {
    let u = app.db.user_by_name(&username).await?.ok_or_else(|| ApiError::NotFound(format!("no account {username:?}")))?;
    let role = match &req.role {
        Some(r) => r.parse::<Role>().map_err(ApiError::Unprocessable)?.as_str().to_owned(),
        None => u.role.clone(),
    };
    if u.username == p.username && (role != u.role || req.disabled == Some(true)) {
        return Err(ApiError::Conflict("you cannot change your own role or disable yourself; ask another admin".into()));
    }
    if let Some(pw) = &req.password {
        auth::check_password(pw).map_err(ApiError::Unprocessable)?;
    }
    let now = now_us();
    let disabled = match req.disabled {
        Some(true) => Some(u.disabled_at_us.unwrap_or(now)),
        Some(false) => None,
        None => u.disabled_at_us,
    };
    let name = req.display_name.clone().unwrap_or_else(|| u.display_name.clone());
    let password_reset = req.password.is_some();
    app.db.update_user(u.id, &name, &role, disabled, now).await?;
    if let Some(pw) = req.password {
        let h = hash_blocking(pw).await;
        app.db.set_password(u.id, &h, now, None).await?;
    }
    let detail = json!({ "role": role, "disabled": disabled.is_some(), "display_name": name, "password_reset": password_reset });
    record(&app, Some(&p), Action::AccountChanged, Some(u.username.clone()), None, detail).await?;
    let u = app.db.user_by_name(&username).await?.ok_or_else(|| ApiError::NotFound(format!("no account {username:?}")))?;
    Ok(Json(user_json(&u)))
}

/// Ends every session of an account (a lost phone).
pub async fn revoke_sessions(
    State(app): State<AppState>,
    Auth(p, _): Auth<AdminOnly>,
    Path(username): Path<String>,
) -> Result<Json<serde_json::Value>> {
    let u = app.db.user_by_name(&username).await?.ok_or_else(|| ApiError::NotFound(format!("no account {username:?}")))?;
    let n = app.db.revoke_user_sessions(u.id, now_us()).await?;
    record(&app, Some(&p), Action::SessionRevoked, Some(u.username.clone()), None, json!({ "sessions": n })).await?;
    Ok(Json(json!({ "revoked": n })))
}

// ---- shared with the CLI -----------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Taken(String),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

/// Validates and creates an account (HTTP admin API, `cradle user add`, demo seeding).
pub async fn create_account(
    db: &crate::db::Db,
    username: &str,
    display_name: Option<&str>,
    role: &str,
    password: String,
) -> std::result::Result<UserRow, CreateError> {
    auth::check_username(username).map_err(CreateError::Invalid)?;
    let role: Role = role.parse().map_err(CreateError::Invalid)?;
    auth::check_password(&password).map_err(CreateError::Invalid)?;
    let hash = hash_blocking(password).await;
    db.insert_user(username, display_name.unwrap_or(username), role.as_str(), &hash, now_us())
        .await?
        .ok_or_else(|| CreateError::Taken(format!("the username {username:?} is taken")))
}

pub fn shared(config: &crate::config::Config) -> Arc<AuthState> {
    let secure = config.public_url.as_ref().is_some_and(|u| u.scheme() == "https");
    if !secure && !config.listen.ip().is_loopback() {
        warn!("server.public_url is not https: session cookies are sent without the Secure flag; put TLS in front");
    }
    Arc::new(AuthState::new(config.auth.clone(), secure))
}
