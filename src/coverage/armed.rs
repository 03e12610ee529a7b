//! The armed verdict (MISSION, "What always armed means"), one answer a regulator can
//! read: the centre is armed iff every camera not decommissioned is recording now
//! (a frame within `[watchdog] no_frames`), no live alarm breaks the armed state, and
//! every camera keeps its footage for the retention floor — or has been recorded for
//! less than the floor, and keeps all of it. Each reason it is not is a sentence
//! naming the camera.

use std::sync::Arc;

use serde::Serialize;

use super::{CameraFacts, Ledger, Result, Snapshot};
use crate::alarms::Alarm;
use crate::centre::CentreTimeZone;
use crate::hub::{CameraHub, CameraState, Health};
use crate::time::{format_rfc3339, WallUs};

const DAY_US: i64 = 86_400 * 1_000_000;
/// The sweeper deletes a segment once its *end* is older than the retention, so the
/// oldest footage kept starts up to one segment (≤ 1 hour) after "floor days ago".
pub const FLOOR_SLACK_US: i64 = 3600 * 1_000_000;

/// A camera as it stands now: what the verdict is made from.
pub struct CameraNow {
    pub id: String,
    pub name: String,
    /// The watchdog's verdict.
    pub health: Health,
    /// Ingest's own state (connecting, recording, failed with an error).
    pub ingest: CameraState,
    /// 0: no frame since the server started.
    pub last_frame_us: WallUs,
    pub decommissioned: Option<(WallUs, String)>,
    pub first_footage_us: Option<WallUs>,
    pub oldest_footage_us: Option<WallUs>,
    pub recording_since_us: Option<WallUs>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ArmedCamera {
    pub id: String,
    pub name: String,
    /// The watchdog's state (`starting`, `recording`, `degraded`, `stalled`, `offline`,
    /// `decommissioned`); while the watchdog still says `starting`, derived from the
    /// age of the last frame and ingest's state.
    pub state: String,
    /// A frame arrived within `[watchdog] no_frames`.
    pub recording: bool,
    pub last_frame_at: Option<String>,
    /// The end of the camera's latest gap (`null` while it is not recording).
    pub recording_since: Option<String>,
    pub first_footage: Option<String>,
    pub oldest_footage: Option<String>,
    /// Age of the oldest footage still kept, in days.
    pub days_kept: f64,
    /// Days since the camera's first footage (the ledger remembers swept footage).
    pub recorded_for_days: f64,
    pub meets_floor: bool,
    /// Why: `days_kept` (keeps at least the floor), `recorded_for_less_than_floor`
    /// (younger than the floor and keeps everything), or `short` (it does not).
    pub floor_check: &'static str,
    /// Kinds of this camera's live alarms.
    pub live_alarms: Vec<String>,
    pub decommissioned_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    pub armed: bool,
    pub reasons: Vec<String>,
    pub cameras: Vec<ArmedCamera>,
}

/// Gathers each camera recorded now.
pub async fn cameras_now(
    ledger: &Ledger,
    zone: &CentreTimeZone,
    hubs: &[Arc<CameraHub>],
    now: WallUs,
    snap: &Snapshot,
    floor_days: u32,
) -> Result<Vec<CameraNow>> {
    let mut out = Vec::with_capacity(hubs.len());
    for h in hubs {
        let facts: CameraFacts = ledger.facts(h.id().as_str(), snap).await?;
        let since = ledger.recording_since(zone, &facts, now, &snap.downtimes, floor_days + 1).await?;
        out.push(CameraNow {
            id: h.id().to_string(),
            name: h.config.name.clone(),
            health: h.health(),
            ingest: h.state(),
            last_frame_us: h.stats.last_frame_us.load(std::sync::atomic::Ordering::Relaxed),
            decommissioned: facts.decommissioned.clone(),
            first_footage_us: facts.first_footage_us,
            oldest_footage_us: facts.oldest_footage_us,
            recording_since_us: since,
        });
    }
    Ok(out)
}

/// The verdict over the cameras recorded now and every live alarm.
pub fn verdict(cameras: &[CameraNow], live: &[Alarm], floor_days: u32, no_frames_us: i64, now: WallUs) -> Verdict {
    let mut reasons = Vec::new();
    if cameras.is_empty() {
        reasons.push("no camera is configured, so nothing is being recorded".to_owned());
    }
    let floor_us = i64::from(floor_days) * DAY_US;
    let mut out = Vec::with_capacity(cameras.len());
    for c in cameras {
        let label = if c.name.is_empty() || c.name == c.id {
            format!("camera {:?}", c.id)
        } else {
            format!("camera {:?} ({})", c.id, c.name)
        };
        let fresh = c.last_frame_us != 0 && now - c.last_frame_us <= no_frames_us;
        // The watchdog's state, unless it has not caught up with the frames yet (it
        // looks once a second; it says `starting` until it has seen the camera).
        let state = match (c.decommissioned.is_some(), c.health.state, fresh) {
            (true, _, _) => "decommissioned",
            (false, "starting", true) => "recording",
            (false, "starting" | "recording" | "degraded", false) => match (&c.ingest, c.last_frame_us) {
                (CameraState::Failed { .. }, _) => "offline",
                (_, 0) => "starting",
                _ => "stalled",
            },
            (false, s, _) => s,
        }
        .to_owned();
        let recording = fresh && !matches!(state.as_str(), "stalled" | "offline");
        if c.decommissioned.is_none() && !recording {
            let silence = if c.last_frame_us == 0 {
                "no frame since the server started".to_owned()
            } else {
                format!(
                    "no frame for {:.0} s (last at {})",
                    (now - c.last_frame_us) as f64 / 1e6,
                    format_rfc3339(c.last_frame_us)
                )
            };
            let why = match (&c.ingest, c.health.detail.as_str()) {
                (_, d) if !d.is_empty() => {
                    format!("; watchdog: {state} since {}: {d}", format_rfc3339(c.health.since_us))
                }
                (CameraState::Failed { error }, _) => format!("; {error}"),
                _ => String::new(),
            };
            reasons.push(format!("{label} is not recording: {silence}{why}"));
        }

        let days_kept = c.oldest_footage_us.map_or(0.0, |o| (now - o) as f64 / DAY_US as f64);
        let recorded_for = c.first_footage_us.map_or(0.0, |f| (now - f) as f64 / DAY_US as f64);
        let kept_floor = c.oldest_footage_us.is_some_and(|o| now - o >= floor_us - FLOOR_SLACK_US);
        let younger = c.first_footage_us.is_none_or(|f| now - f < floor_us);
        let floor_check = if kept_floor {
            "days_kept"
        } else if younger {
            "recorded_for_less_than_floor"
        } else {
            reasons.push(format!(
                "{label} keeps {days_kept:.1} days of footage, fewer than the {floor_days}-day floor, though it has been recorded for {recorded_for:.1} days"
            ));
            "short"
        };

        let mine: Vec<&Alarm> = live.iter().filter(|a| a.camera_id.as_deref() == Some(c.id.as_str())).collect();
        out.push(ArmedCamera {
            id: c.id.clone(),
            name: c.name.clone(),
            state,
            recording,
            last_frame_at: (c.last_frame_us != 0).then(|| format_rfc3339(c.last_frame_us)),
            recording_since: if recording { c.recording_since_us.map(format_rfc3339) } else { None },
            first_footage: c.first_footage_us.map(format_rfc3339),
            oldest_footage: c.oldest_footage_us.map(format_rfc3339),
            days_kept: (days_kept * 1000.0).round() / 1000.0,
            recorded_for_days: (recorded_for * 1000.0).round() / 1000.0,
            meets_floor: floor_check != "short",
            floor_check,
            live_alarms: mine.iter().map(|a| a.kind.clone()).collect(),
            decommissioned_at: c.decommissioned.as_ref().map(|d| format_rfc3339(d.0)),
        });
    }
    for a in live.iter().filter(|a| a.breaks_armed) {
        let whose = match &a.camera_id {
            Some(c) => format!("camera {c:?} has"),
            None => "the server has".to_owned(),
        };
        reasons.push(format!("{whose} a live {} alarm (raised {}): {}", a.kind, a.raised_at, a.detail));
    }
    Verdict { armed: reasons.is_empty(), reasons, cameras: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const NOW: i64 = 1_800_000_000 * S;

    fn cam(id: &str, last_frame_ago_s: Option<i64>) -> CameraNow {
        CameraNow {
            id: id.into(),
            name: format!("Room {id}"),
            health: Health { state: "starting", since_us: NOW - 100 * S, detail: String::new() },
            ingest: CameraState::Recording,
            last_frame_us: last_frame_ago_s.map_or(0, |a| NOW - a * S),
            decommissioned: None,
            first_footage_us: Some(NOW - 10 * DAY_US),
            oldest_footage_us: Some(NOW - 10 * DAY_US),
            recording_since_us: Some(NOW - 3600 * S),
        }
    }

    fn alarm(camera: Option<&str>, kind: &str, breaks: bool) -> Alarm {
        Alarm {
            id: 1,
            camera_id: camera.map(Into::into),
            kind: kind.into(),
            state: "raised",
            detail: "why".into(),
            raised_at: "then".into(),
            updated_at: "then".into(),
            cleared_at: None,
            clear_detail: None,
            acknowledged_at: None,
            acknowledged_by: None,
            ack_note: None,
            notify_count: 1,
            breaks_armed: breaks,
            snapshot: None,
            raised_at_us: 0,
            notified_at_us: None,
        }
    }

    #[test]
    fn armed_when_every_camera_records_and_nothing_breaks_it() {
        let v = verdict(
            &[cam("a", Some(1)), cam("b", Some(0))],
            &[alarm(Some("a"), "reconnect_storm", false)],
            90,
            10 * S,
            NOW,
        );
        assert!(v.armed, "{:?}", v.reasons);
        assert_eq!(v.cameras[0].state, "recording");
        assert_eq!(v.cameras[0].live_alarms, ["reconnect_storm"]);
        assert_eq!(v.cameras[0].floor_check, "recorded_for_less_than_floor");
    }

    #[test]
    fn a_silent_camera_a_breaking_alarm_and_a_short_floor_each_say_why() {
        let mut short = cam("c", Some(0));
        short.first_footage_us = Some(NOW - 200 * DAY_US);
        short.oldest_footage_us = Some(NOW - 30 * DAY_US);
        let mut gone = cam("d", None);
        gone.decommissioned = Some((NOW - DAY_US, "moved".into()));
        let v = verdict(
            &[cam("a", Some(1)), cam("b", Some(12)), short, gone],
            &[alarm(None, "spool_full", true)],
            90,
            10 * S,
            NOW,
        );
        assert!(!v.armed);
        assert_eq!(v.reasons.len(), 3, "{:?}", v.reasons);
        assert!(
            v.reasons[0].starts_with("camera \"b\" (Room b) is not recording: no frame for 12 s"),
            "{}",
            v.reasons[0]
        );
        assert_eq!(v.cameras[1].state, "stalled", "frames stopped before the watchdog looked");
        assert!(v.reasons[1].contains("camera \"c\"") && v.reasons[1].contains("90-day floor"), "{}", v.reasons[1]);
        assert!(v.reasons[2].starts_with("the server has a live spool_full alarm"), "{}", v.reasons[2]);
        assert_eq!(v.cameras[1].recording_since, None);
        assert_eq!(v.cameras[2].floor_check, "short");
        assert_eq!(v.cameras[3].state, "decommissioned");
    }

    #[test]
    fn the_floor_allows_one_segment_of_slack_and_the_watchdog_state_wins() {
        let mut c = cam("a", Some(1));
        c.first_footage_us = Some(NOW - 300 * DAY_US);
        c.oldest_footage_us = Some(NOW - 90 * DAY_US + 60 * S);
        c.health = Health { state: "offline", since_us: NOW - 5 * S, detail: "no frames".into() };
        let v = verdict(&[c], &[], 90, 10 * S, NOW);
        assert_eq!(v.cameras[0].floor_check, "days_kept");
        assert_eq!(v.cameras[0].state, "offline");
        assert!(!v.cameras[0].recording);
        assert!(!v.armed);
    }
}
