//! Legal holds: one camera's footage over a time range, kept whatever its age while the
//! hold is active — for a police case, a complaint, a court order. The sweeper skips
//! held spans (and its statements refuse held rows, see [`crate::db::retention`]).
//!
//! Placing and releasing are audited here, so every caller — the admin API, `cradle
//! hold`, and exports of evidence that place holds themselves — leaves the same trail.
//! A release needs a reason and is recorded, never a deletion of the hold's row.

use serde::{Deserialize, Serialize};

use crate::audit::{self, Action, NewEntry};
use crate::auth::Principal;
use crate::config::CameraId;
use crate::db::retention::HoldRow;
use crate::db::{Db, DbError};
use crate::time::{format_rfc3339, parse_rfc3339, WallUs};

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The request itself is wrong (422).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Already released (409).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Db(#[from] DbError),
}

/// Who did it, as the audit log records it.
#[derive(Clone, Debug)]
pub struct Actor {
    pub name: String,
    pub role: Option<String>,
    pub addr: Option<String>,
}

impl Actor {
    /// The server itself (the scheduled sweep).
    pub fn system() -> Actor {
        Actor { name: "system".into(), role: None, addr: None }
    }

    /// The command line: `cli:USER`.
    pub fn cli() -> Actor {
        Actor {
            name: format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into())),
            role: Some("cli".into()),
            addr: None,
        }
    }

    pub fn user(p: &Principal) -> Actor {
        Actor { name: p.username.clone(), role: Some(p.role.as_str().to_owned()), addr: p.addr.clone() }
    }
}

/// A hold as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Hold {
    pub id: i64,
    pub camera_id: String,
    pub start: String,
    pub end: String,
    pub case_ref: String,
    pub reason: String,
    pub created_by: String,
    pub created_at: String,
    pub active: bool,
    pub released_at: Option<String>,
    pub released_by: Option<String>,
    pub release_reason: Option<String>,
}

impl From<HoldRow> for Hold {
    fn from(r: HoldRow) -> Hold {
        Hold {
            id: r.id,
            camera_id: r.camera_id,
            start: format_rfc3339(r.start_us),
            end: format_rfc3339(r.end_us),
            case_ref: r.case_ref,
            reason: r.reason,
            created_by: r.created_by,
            created_at: format_rfc3339(r.created_at_us),
            active: r.released_at_us.is_none(),
            released_at: r.released_at_us.map(format_rfc3339),
            released_by: r.released_by,
            release_reason: r.release_reason,
        }
    }
}

/// A hold just placed, and how many segments of the index it covers now.
#[derive(Clone, Debug, Serialize)]
pub struct Placed {
    #[serde(flatten)]
    pub hold: Hold,
    pub segments_covered: i64,
}

/// A request to place a hold, as JSON (`POST /api/v1/holds`, `cradle hold add`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub camera_id: String,
    /// RFC 3339.
    pub start: String,
    pub end: String,
    pub case_ref: String,
    pub reason: String,
}

/// A checked request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewHold {
    pub camera_id: CameraId,
    pub start_us: WallUs,
    pub end_us: WallUs,
    pub case_ref: String,
    pub reason: String,
}

impl HoldRequest {
    pub fn parse(self) -> Result<NewHold, HoldError> {
        let camera_id = CameraId::parse(&self.camera_id).map_err(|e| HoldError::Invalid(format!("camera_id: {e}")))?;
        let start_us = parse_rfc3339(&self.start).map_err(|e| HoldError::Invalid(format!("start: {e}")))?;
        let end_us = parse_rfc3339(&self.end).map_err(|e| HoldError::Invalid(format!("end: {e}")))?;
        if start_us >= end_us {
            return Err(HoldError::Invalid("end: must be after start".into()));
        }
        Ok(NewHold {
            camera_id,
            start_us,
            end_us,
            case_ref: required("case_ref", &self.case_ref, 200)?,
            reason: required("reason", &self.reason, 2000)?,
        })
    }
}

fn required(field: &str, v: &str, max_chars: usize) -> Result<String, HoldError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(HoldError::Invalid(format!("{field}: required (say why, for the audit log)")));
    }
    if v.chars().count() > max_chars {
        return Err(HoldError::Invalid(format!("{field}: longer than {max_chars} characters")));
    }
    Ok(v.to_owned())
}

async fn audit(db: &Db, who: &Actor, action: Action, hold: &Hold, extra: serde_json::Value) -> Result<(), HoldError> {
    let mut detail = serde_json::to_value(hold).expect("a hold serialises");
    if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    audit::append(
        db,
        NewEntry {
            actor: Some(who.name.clone()),
            actor_role: who.role.clone(),
            action,
            target: Some(format!("camera {} hold {}", hold.camera_id, hold.id)),
            addr: who.addr.clone(),
            detail,
        },
    )
    .await?;
    Ok(())
}

/// Places a hold and audits it (`legal_hold`: case, camera, range, reason). The caller
/// checks that the camera is one Cradle knows (configured, added, or in the index).
pub async fn place_hold(db: &Db, new: NewHold, who: &Actor, now: WallUs) -> Result<Placed, HoldError> {
    let row = HoldRow {
        id: 0,
        camera_id: new.camera_id.to_string(),
        start_us: new.start_us,
        end_us: new.end_us,
        case_ref: new.case_ref,
        reason: new.reason,
        created_by: who.name.clone(),
        created_at_us: now,
        released_at_us: None,
        released_by: None,
        release_reason: None,
    };
    // Wait for a sweep batch between its last hold check and its object delete, so a
    // hold placed now cannot lose footage to a batch marked a moment before.
    let gate = super::HOLD_GATE.write().await;
    let id = db.insert_hold(&row).await?;
    drop(gate);
    let covered = db.count_segments_overlapping(&row.camera_id, row.start_us, row.end_us).await?;
    let hold = Hold::from(HoldRow { id, ..row });
    audit(db, who, Action::LegalHold, &hold, serde_json::json!({ "segments_covered": covered })).await?;
    Ok(Placed { hold, segments_covered: covered })
}

/// Releases an active hold with a reason (required) and audits it
/// (`legal_hold_released`). Its footage is then swept like any other once expired.
pub async fn release_hold(db: &Db, id: i64, reason: &str, who: &Actor, now: WallUs) -> Result<Hold, HoldError> {
    let reason = required("reason", reason, 2000)?;
    let old = db.hold(id).await?.ok_or_else(|| HoldError::NotFound(format!("no legal hold {id}")))?;
    if !db.release_hold(id, &who.name, now, &reason).await? {
        let again = db.hold(id).await?.unwrap_or(old);
        return Err(HoldError::Conflict(format!(
            "legal hold {id} was already released at {} by {}",
            again.released_at_us.map(format_rfc3339).unwrap_or_default(),
            again.released_by.unwrap_or_default()
        )));
    }
    let hold = Hold::from(db.hold(id).await?.ok_or_else(|| HoldError::NotFound(format!("no legal hold {id}")))?);
    audit(db, who, Action::LegalHoldReleased, &hold, serde_json::json!({})).await?;
    Ok(hold)
}

/// Whether Cradle knows `camera`: in the config file, added by an admin, or with footage
/// in the index (a camera removed since). A hold on an unknown id would hold nothing.
pub async fn known_camera(db: &Db, config: &crate::config::Config, camera: &CameraId) -> Result<bool, DbError> {
    if config.cameras.iter().any(|c| &c.id == camera) {
        return Ok(true);
    }
    if let Ok(Some(_)) = db.added_camera(camera).await {
        return Ok(true);
    }
    Ok(db.oldest_segment_start(camera.as_str()).await?.is_some())
}

pub async fn list_holds(db: &Db, active_only: bool) -> Result<Vec<Hold>, HoldError> {
    Ok(db.list_holds(active_only).await?.into_iter().map(Hold::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(start: &str, end: &str, case_ref: &str, reason: &str) -> HoldRequest {
        HoldRequest {
            camera_id: "room-1".into(),
            start: start.into(),
            end: end.into(),
            case_ref: case_ref.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_hold_request_needs_a_range_a_case_and_a_reason() {
        let ok = req("2026-01-01T08:00:00Z", "2026-01-01T09:00:00Z", " 2026-JD-0042 ", "complaint").parse().unwrap();
        assert_eq!(ok.case_ref, "2026-JD-0042");
        assert_eq!(ok.end_us - ok.start_us, 3_600_000_000);
        let bad = |r: HoldRequest, want: &str| match r.parse() {
            Err(HoldError::Invalid(m)) => assert!(m.contains(want), "{m}"),
            other => panic!("{other:?}"),
        };
        bad(req("2026-01-01T09:00:00Z", "2026-01-01T08:00:00Z", "c", "r"), "after start");
        bad(req("yesterday", "2026-01-01T08:00:00Z", "c", "r"), "start");
        bad(req("2026-01-01T08:00:00Z", "2026-01-01T09:00:00Z", " ", "r"), "case_ref");
        bad(req("2026-01-01T08:00:00Z", "2026-01-01T09:00:00Z", "c", ""), "reason");
    }
}
