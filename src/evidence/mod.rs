//! Police evidence: requests approved by a second person, playback of approved footage,
//! and exports a court can verify.
//!
//! The workflow (MISSION: an investigator must never see anything outside what their
//! request was approved for):
//!
//! 1. An investigator (or an admin) files a request: case reference, cameras, a time
//!    range, a reason. It is `pending`.
//! 2. An admin who did not file it approves it (with a validity, default
//!    [`DEFAULT_VALID_DAYS`]) or rejects it. Approving one's own request is refused:
//!    four eyes.
//! 3. While approved and not expired, the requester sees exactly those cameras inside
//!    that range: recordings and gaps, playback, exports. Admins see everything, audited.
//! 4. An export of one camera's range ([`export`]) places a legal hold on the range and
//!    writes the MP4 (remuxed from the stored segments, [`mp4`]) plus a manifest that the
//!    server signs with its Ed25519 key ([`keys`]); `cradle verify-export` ([`verify`])
//!    or sha256sum + openssl check it offline.
//! 5. Closing the case (an admin, with a reason) releases the request's holds.
//!
//! Every step is audited; so is every playback and download.

pub mod export;
pub mod keys;
pub mod mp4;
pub mod source;
pub mod verify;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Action, NewEntry};
use crate::auth::{Principal, Role};
use crate::config::CameraId;
use crate::db::evidence::{ExportRow, RequestRow};
use crate::db::{Db, DbError};
use crate::retention::holds::{self, Actor, HoldError};
use crate::time::{format_rfc3339, parse_rfc3339, WallUs};

/// How long an approval lasts when the approver does not say.
pub const DEFAULT_VALID_DAYS: i64 = 30;
/// The longest approval an admin may grant at once (they can approve a new request).
pub const MAX_VALID_DAYS: i64 = 365;
/// The longest range one request may cover.
pub const MAX_REQUEST_DAYS: i64 = 31;
/// At most this many cameras per request.
pub const MAX_CAMERAS: usize = 32;

const DAY_US: i64 = 86_400_000_000;

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The request body is wrong (422).
    #[error("{0}")]
    Invalid(String),
    /// Not allowed, with the reason (403).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is not in a state that allows this (409).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Hold(#[from] HoldError),
}

/// A request as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RequestView {
    pub id: i64,
    pub case_ref: String,
    pub camera_ids: Vec<String>,
    pub cameras: Vec<CameraName>,
    pub start: String,
    pub end: String,
    pub reason: String,
    /// pending | approved | rejected | expired | closed
    pub state: String,
    pub requested_by: String,
    pub requested_at: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub decision_note: Option<String>,
    pub expires_at: Option<String>,
    pub closed_by: Option<String>,
    pub closed_at: Option<String>,
    pub close_reason: Option<String>,
    pub exports: Vec<export::ExportView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CameraName {
    pub id: String,
    pub name: String,
}

/// The state a user sees: an approved request past its expiry is `expired`.
pub fn effective_state(r: &RequestRow, now: WallUs) -> &str {
    match (r.state.as_str(), r.expires_at_us) {
        ("approved", Some(exp)) if exp <= now => "expired",
        (s, _) => s,
    }
}

/// `POST /api/v1/evidence/requests`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    pub case_ref: String,
    pub camera_ids: Vec<String>,
    pub start: String,
    pub end: String,
    pub reason: String,
}

/// `POST .../approve` and `.../reject`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    #[serde(default)]
    pub note: Option<String>,
    /// Approve only: how many days the approval lasts (1–365, default 30).
    #[serde(default)]
    pub valid_days: Option<i64>,
    /// Approve only, instead of `valid_days`: the exact end of the approval (RFC 3339),
    /// e.g. when the warrant's validity ends.
    #[serde(default)]
    pub valid_until: Option<String>,
}

/// `POST .../close`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Close {
    pub reason: String,
}

pub(crate) fn required(field: &str, v: &str, max_chars: usize) -> Result<String, EvidenceError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(EvidenceError::Invalid(format!("{field}: required")));
    }
    if v.chars().count() > max_chars {
        return Err(EvidenceError::Invalid(format!("{field}: longer than {max_chars} characters")));
    }
    Ok(v.to_owned())
}

fn optional(field: &str, v: Option<&str>, max_chars: usize) -> Result<Option<String>, EvidenceError> {
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => required(field, v, max_chars).map(Some),
    }
}

pub(crate) fn parse_range(start: &str, end: &str) -> Result<(WallUs, WallUs), EvidenceError> {
    let s = parse_rfc3339(start).map_err(|e| EvidenceError::Invalid(format!("start: {e}")))?;
    let e = parse_rfc3339(end).map_err(|e| EvidenceError::Invalid(format!("end: {e}")))?;
    if s >= e {
        return Err(EvidenceError::Invalid("end: must be after start".into()));
    }
    Ok((s, e))
}

/// Who does what to a request, as the audit log shows it.
pub(crate) async fn audit_request(
    db: &Db,
    who: &Principal,
    action: Action,
    r: &RequestRow,
    extra: serde_json::Value,
) -> Result<(), DbError> {
    let mut detail = serde_json::json!({
        "request_id": r.id,
        "case_ref": r.case_ref,
        "camera_ids": r.camera_ids,
        "start": format_rfc3339(r.start_us),
        "end": format_rfc3339(r.end_us),
        "reason": r.reason,
        "requested_by": r.requested_by,
    });
    if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    audit::append(
        db,
        NewEntry {
            actor: Some(who.username.clone()),
            actor_role: Some(who.role.as_str().to_owned()),
            action,
            target: Some(format!("evidence request {}", r.id)),
            addr: who.addr.clone(),
            detail,
        },
    )
    .await?;
    Ok(())
}

/// Files a request (investigators and admins). `known` says whether Cradle knows a camera.
pub async fn file_request(
    db: &Db,
    who: &Principal,
    req: NewRequest,
    known: impl Fn(&CameraId) -> bool,
    now: WallUs,
) -> Result<RequestRow, EvidenceError> {
    if !matches!(who.role, Role::Investigator | Role::Admin) {
        return Err(EvidenceError::Forbidden("only investigators and admins file evidence requests".into()));
    }
    let case_ref = required("case_ref", &req.case_ref, 200)?;
    let reason = required("reason", &req.reason, 2000)?;
    let (start_us, end_us) = parse_range(&req.start, &req.end)?;
    if end_us - start_us > MAX_REQUEST_DAYS * DAY_US {
        return Err(EvidenceError::Invalid(format!("the range is longer than {MAX_REQUEST_DAYS} days; file several requests")));
    }
    if start_us > now {
        return Err(EvidenceError::Invalid("start: in the future; there is no footage yet".into()));
    }
    let mut cams = BTreeSet::new();
    for c in &req.camera_ids {
        let id = CameraId::parse(c).map_err(|e| EvidenceError::Invalid(format!("camera_ids: {e}")))?;
        if !known(&id) {
            return Err(EvidenceError::Invalid(format!("camera_ids: no camera {c:?}")));
        }
        cams.insert(id.to_string());
    }
    if cams.is_empty() || cams.len() > MAX_CAMERAS {
        return Err(EvidenceError::Invalid(format!("camera_ids: name 1 to {MAX_CAMERAS} cameras")));
    }
    let mut row = RequestRow {
        id: 0,
        case_ref,
        camera_ids: cams.into_iter().collect(),
        start_us,
        end_us,
        reason,
        requested_by: who.username.clone(),
        requested_at_us: now,
        state: "pending".into(),
        decided_by: None,
        decided_at_us: None,
        decision_note: None,
        expires_at_us: None,
        closed_by: None,
        closed_at_us: None,
        close_reason: None,
    };
    row.id = db.insert_evidence_request(&row).await?;
    audit_request(db, who, Action::EvidenceRequested, &row, serde_json::json!({})).await?;
    Ok(row)
}

pub async fn get_request(db: &Db, id: i64) -> Result<RequestRow, EvidenceError> {
    db.evidence_request(id).await?.ok_or_else(|| EvidenceError::NotFound(format!("no evidence request {id}")))
}

/// The request, if `who` may see it: its requester or an admin. Others get 404, so ids
/// reveal nothing.
pub async fn visible_request(db: &Db, who: &Principal, id: i64) -> Result<RequestRow, EvidenceError> {
    let r = get_request(db, id).await?;
    if who.role == Role::Admin || r.requested_by == who.username {
        Ok(r)
    } else {
        Err(EvidenceError::NotFound(format!("no evidence request {id}")))
    }
}

/// Approves (admins other than the requester) or rejects (any admin) a pending request.
pub async fn decide(
    db: &Db,
    who: &Principal,
    id: i64,
    approve: bool,
    d: Decision,
    now: WallUs,
) -> Result<RequestRow, EvidenceError> {
    if who.role != Role::Admin {
        return Err(EvidenceError::Forbidden("only an admin approves or rejects evidence requests".into()));
    }
    let r = get_request(db, id).await?;
    if approve && r.requested_by == who.username {
        return Err(EvidenceError::Forbidden(
            "you filed this request: another admin must approve it (four eyes)".into(),
        ));
    }
    if r.state != "pending" {
        return Err(EvidenceError::Conflict(format!(
            "evidence request {id} is already {} (by {})",
            r.state,
            r.decided_by.as_deref().unwrap_or("?")
        )));
    }
    let note = optional("note", d.note.as_deref(), 2000)?;
    let expires = if approve {
        Some(approval_end(&d, now)?)
    } else {
        if d.valid_days.is_some() || d.valid_until.is_some() {
            return Err(EvidenceError::Invalid("valid_days, valid_until: only for an approval".into()));
        }
        None
    };
    let state = if approve { "approved" } else { "rejected" };
    if !db.decide_evidence_request(id, state, &who.username, now, note.as_deref(), expires).await? {
        return Err(EvidenceError::Conflict(format!("evidence request {id} was decided by someone else just now")));
    }
    let r = get_request(db, id).await?;
    let action = if approve { Action::EvidenceApproved } else { Action::EvidenceRejected };
    audit_request(
        db,
        who,
        action,
        &r,
        serde_json::json!({ "note": note, "expires_at": r.expires_at_us.map(format_rfc3339) }),
    )
    .await?;
    Ok(r)
}

/// When an approval ends: `valid_until`, or `valid_days` (default 30) from now.
fn approval_end(d: &Decision, now: WallUs) -> Result<WallUs, EvidenceError> {
    let end = match (d.valid_days, d.valid_until.as_deref()) {
        (Some(_), Some(_)) => return Err(EvidenceError::Invalid("give valid_days or valid_until, not both".into())),
        (None, Some(u)) => parse_rfc3339(u).map_err(|e| EvidenceError::Invalid(format!("valid_until: {e}")))?,
        (days, None) => {
            let days = days.unwrap_or(DEFAULT_VALID_DAYS);
            if !(1..=MAX_VALID_DAYS).contains(&days) {
                return Err(EvidenceError::Invalid(format!("valid_days: 1 to {MAX_VALID_DAYS}")));
            }
            now + days * DAY_US
        }
    };
    if end <= now || end > now + MAX_VALID_DAYS * DAY_US {
        return Err(EvidenceError::Invalid(format!("valid_until: must be in the next {MAX_VALID_DAYS} days")));
    }
    Ok(end)
}

/// Closes an approved request (the case is closed): access ends and every legal hold its
/// exports placed is released.
pub async fn close(db: &Db, who: &Principal, id: i64, c: Close, now: WallUs) -> Result<RequestRow, EvidenceError> {
    if who.role != Role::Admin {
        return Err(EvidenceError::Forbidden("only an admin closes evidence requests".into()));
    }
    let reason = required("reason", &c.reason, 2000)?;
    let r = get_request(db, id).await?;
    if !db.close_evidence_request(id, &who.username, now, &reason).await? {
        return Err(EvidenceError::Conflict(format!("evidence request {id} is {}, not approved", r.state)));
    }
    let mut released = Vec::new();
    for e in db.evidence_exports_of(id).await? {
        if let Some(h) = e.hold_id {
            match holds::release_hold(db, h, &format!("case {} closed: {reason}", r.case_ref), &Actor::user(who), now).await {
                Ok(_) => released.push(h),
                Err(HoldError::Conflict(_)) => {} // released before, by hand
                Err(e) => return Err(e.into()),
            }
        }
    }
    let r = get_request(db, id).await?;
    audit_request(db, who, Action::EvidenceClosed, &r, serde_json::json!({ "close_reason": reason, "holds_released": released }))
        .await?;
    Ok(r)
}

/// What `who` may see of `camera` around `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Admins: everything.
    All,
    /// An investigator: this approved request's range (the one that matched).
    Request { id: i64, start_us: WallUs, end_us: WallUs },
}

/// Whether `who` may see `camera` over `[start, end)`. `whole`: the range must lie inside
/// one approved request (playback, export); otherwise overlapping one is enough and the
/// caller clamps to the returned scope (listing recordings for a day).
pub async fn scope(
    db: &Db,
    who: &Principal,
    camera: &str,
    start: WallUs,
    end: WallUs,
    whole: bool,
    now: WallUs,
) -> Result<Scope, EvidenceError> {
    match who.role {
        Role::Admin => return Ok(Scope::All),
        Role::Investigator => {}
        _ => return Err(EvidenceError::Forbidden("recorded footage is for admins and approved investigators".into())),
    }
    let approved = db.approved_requests_for(&who.username, camera, now).await?;
    if approved.is_empty() {
        return Err(EvidenceError::Forbidden(format!(
            "no approved, unexpired evidence request of yours covers camera {camera:?}"
        )));
    }
    let fits = |r: &RequestRow| if whole { r.start_us <= start && end <= r.end_us } else { r.start_us < end && start < r.end_us };
    match approved.iter().find(|r| fits(r)) {
        Some(r) => Ok(Scope::Request { id: r.id, start_us: r.start_us, end_us: r.end_us }),
        None => {
            let ranges: Vec<String> =
                approved.iter().map(|r| format!("{} – {}", format_rfc3339(r.start_us), format_rfc3339(r.end_us))).collect();
            Err(EvidenceError::Forbidden(format!(
                "{} – {} is outside your approved range for camera {camera:?} ({})",
                format_rfc3339(start),
                format_rfc3339(end),
                ranges.join(", ")
            )))
        }
    }
}

/// The request as the API shows it, with its exports and the cameras' names.
pub fn view(r: &RequestRow, exports: &[ExportRow], name: impl Fn(&str) -> String, now: WallUs) -> RequestView {
    RequestView {
        id: r.id,
        case_ref: r.case_ref.clone(),
        camera_ids: r.camera_ids.clone(),
        cameras: r.camera_ids.iter().map(|c| CameraName { id: c.clone(), name: name(c) }).collect(),
        start: format_rfc3339(r.start_us),
        end: format_rfc3339(r.end_us),
        reason: r.reason.clone(),
        state: effective_state(r, now).to_owned(),
        requested_by: r.requested_by.clone(),
        requested_at: format_rfc3339(r.requested_at_us),
        decided_by: r.decided_by.clone(),
        decided_at: r.decided_at_us.map(format_rfc3339),
        decision_note: r.decision_note.clone(),
        expires_at: r.expires_at_us.map(format_rfc3339),
        closed_by: r.closed_by.clone(),
        closed_at: r.closed_at_us.map(format_rfc3339),
        close_reason: r.close_reason.clone(),
        exports: exports.iter().map(export::ExportView::from).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str, expires: Option<WallUs>) -> RequestRow {
        RequestRow {
            id: 1,
            case_ref: "c".into(),
            camera_ids: vec!["room-1".into()],
            start_us: 0,
            end_us: 10,
            reason: "r".into(),
            requested_by: "police".into(),
            requested_at_us: 0,
            state: state.into(),
            decided_by: None,
            decided_at_us: None,
            decision_note: None,
            expires_at_us: expires,
            closed_by: None,
            closed_at_us: None,
            close_reason: None,
        }
    }

    #[test]
    fn an_approval_expires() {
        assert_eq!(effective_state(&row("approved", Some(100)), 99), "approved");
        assert_eq!(effective_state(&row("approved", Some(100)), 100), "expired");
        assert_eq!(effective_state(&row("rejected", None), 100), "rejected");
        assert_eq!(effective_state(&row("closed", Some(100)), 200), "closed");
    }

    #[test]
    fn ranges_and_texts_are_checked() {
        assert!(parse_range("2026-01-01T09:00:00Z", "2026-01-01T08:00:00Z").is_err());
        assert!(parse_range("nonsense", "2026-01-01T08:00:00Z").unwrap_err().to_string().starts_with("start:"));
        assert_eq!(required("case_ref", "  A-1 ", 10).unwrap(), "A-1");
        assert!(required("case_ref", " ", 10).is_err());
        assert_eq!(optional("note", Some("  "), 10).unwrap(), None);
    }
}
