//! Whether a parent may watch a camera now, and if not, why (the page shows the
//! reason; the API answers 403 with it; a running session ends with it).
//!
//! The rules, in the order they are checked: the deployment's policy allows parent live
//! view; the camera is `parent_viewable` in the classroom of a child the account is a
//! linked guardian of; that guardian's consent is given; with `[policy]
//! classroom_consent`, every child of the classroom has a consenting guardian; the
//! centre is within viewing hours and the classroom outside its privacy periods.

use jiff::Zoned;
use serde::Serialize;

use crate::centre::{viewing_status, ViewingStatus};
use crate::config::PolicyConfig;
use crate::db::live::ParentCamera;
use crate::centre::Result;
use crate::db::Db;
use crate::time::WallUs;

/// Why live view is refused or ended. `code` is stable (pages translate it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub code: &'static str,
    pub message: String,
    /// When it changes (local time with offset), if known.
    pub until: Option<String>,
    /// The privacy period's name.
    pub period: Option<String>,
}

impl Denial {
    pub fn new(code: &'static str, message: impl Into<String>) -> Denial {
        Denial { code, message: message.into(), until: None, period: None }
    }
}

/// Permission to watch, until `until` (closing time or the next privacy period).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub classroom: Option<(i64, String)>,
    pub until: Option<String>,
    pub until_us: Option<WallUs>,
}

fn local(z: &Zoned) -> String {
    z.timestamp().display_with_offset(z.offset()).to_string()
}

fn hhmm(z: &Zoned) -> String {
    format!("{:02}:{:02}", z.hour(), z.minute())
}

pub fn policy_denial() -> Denial {
    Denial::new("policy", "parent live view is switched off for this centre ([policy] parent_live_view / profile)")
}

/// The time rules for one classroom at `now_us`.
async fn by_the_clock(db: &Db, classroom_id: i64, now_us: WallUs) -> Result<std::result::Result<Grant, Denial>> {
    let centre = db.centre().await?;
    let periods = db.privacy_periods(crate::centre::ClassroomId(classroom_id)).await?;
    Ok(match viewing_status(&centre, &periods, now_us) {
        ViewingStatus::Open { until } => Ok(Grant {
            classroom: None,
            until: Some(local(&until)),
            until_us: Some(until.timestamp().as_microsecond()),
        }),
        ViewingStatus::ClosedUntil(until) => Err(Denial {
            code: "closed",
            message: format!("outside viewing hours; opens {}", hhmm(&until)),
            until: Some(local(&until)),
            period: None,
        }),
        ViewingStatus::PrivacyUntil { period, until } => Err(Denial {
            code: "privacy",
            message: format!("privacy period {period} until {}", hhmm(&until)),
            until: Some(local(&until)),
            period: Some(period),
        }),
        ViewingStatus::Closed => Err(Denial::new("closed", "the centre has no viewing hours: parents cannot watch live")),
    })
}

/// The decision for one of the account's classroom cameras.
pub async fn decide(db: &Db, policy: &PolicyConfig, cam: &ParentCamera, now_us: WallUs) -> Result<std::result::Result<Grant, Denial>> {
    if !policy.parent_live_view {
        return Ok(Err(policy_denial()));
    }
    if !cam.consent_given {
        return Ok(Err(Denial::new("consent", "your guardian consent to live viewing is not given")));
    }
    if policy.classroom_consent && !db.classroom_consented(cam.classroom_id).await? {
        return Ok(Err(Denial::new(
            "classroom_consent",
            "not every family of this classroom has consented to live viewing",
        )));
    }
    Ok(by_the_clock(db, cam.classroom_id, now_us).await?.map(|g| Grant {
        classroom: Some((cam.classroom_id, cam.classroom_name.clone())),
        ..g
    }))
}

/// The decision for a parent and a camera id (not theirs: `not_yours`).
pub async fn parent_access(db: &Db, policy: &PolicyConfig, username: &str, camera: &str, now_us: WallUs) -> Result<std::result::Result<Grant, Denial>> {
    if !policy.parent_live_view {
        return Ok(Err(policy_denial()));
    }
    let cams = db.parent_cameras(username).await?;
    match cams.iter().find(|c| c.camera_id == camera) {
        Some(c) => decide(db, policy, c, now_us).await,
        None => Ok(Err(Denial::new(
            "not_yours",
            "this camera is not a parent-viewable camera of your child's classroom",
        ))),
    }
}
