//! Gaps: the spans of a time range with no recorded footage, each with its cause.
//!
//! A gap is a hole between consecutive segments (or at the edges of the range), longer
//! than a small tolerance. Its cause comes from the events recorded around it: a server
//! that stopped or crashed, a camera that went offline (and the camera's own error), a
//! full spool, a clock re-anchor. A gap nothing explains says so ("unknown") rather than
//! guessing.

use serde::Serialize;

use crate::db::EventRow;
use crate::time::WallUs;

/// Holes shorter than this are rounding between segments, not missing footage.
pub const TOLERANCE_US: i64 = 250_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub start_us: WallUs,
    pub end_us: WallUs,
    /// `server_down`, `server_crashed`, `camera_offline`, `spool_full`, `storage`,
    /// `clock_drift`, `unknown`.
    pub cause: String,
    pub detail: String,
}

/// Computes the gaps of `[start, end)` given the recorded spans overlapping it (sorted
/// by start: indexed segments, plus the segment in progress) and the events in and
/// shortly before it (sorted by time). `now` caps the range: the future is not a gap.
pub fn find_gaps(start: WallUs, end: WallUs, now: WallUs, spans: &[(WallUs, WallUs)], events: &[EventRow]) -> Vec<Gap> {
    holes(start, end.min(now), spans).into_iter().map(|(s, e)| explain(s, e, events)).collect()
}

/// The spans of `[start, end)` that no recorded span covers, longer than
/// [`TOLERANCE_US`], oldest first. `spans` must be sorted by start; they may overlap.
/// (The proof of coverage, [`crate::coverage`], gives these its own causes.)
pub fn holes(start: WallUs, end: WallUs, spans: &[(WallUs, WallUs)]) -> Vec<(WallUs, WallUs)> {
    let mut holes = Vec::new();
    let mut cursor = start;
    for &(s_start, s_end) in spans {
        if cursor >= end {
            break;
        }
        if s_start - cursor > TOLERANCE_US {
            holes.push((cursor, s_start.min(end)));
        }
        cursor = cursor.max(s_end);
    }
    if end - cursor > TOLERANCE_US {
        holes.push((cursor, end));
    }
    holes
}

fn explain(start: WallUs, end: WallUs, events: &[EventRow]) -> Gap {
    // Look a little before the hole too: the event that caused it is often logged a
    // moment before the last frame's segment was closed.
    let window_start = start - 15_000_000;
    let relevant: Vec<&EventRow> = events.iter().filter(|e| e.at_us >= window_start && e.at_us <= end).collect();
    let find = |kinds: &[&str]| relevant.iter().find(|e| kinds.contains(&e.kind.as_str()) && e.at_us >= window_start);
    let (cause, detail) = if let Some(e) = find(&["server_crashed"]) {
        ("server_crashed", e.detail.clone())
    } else if let Some(e) = find(&["server_stopped"]) {
        ("server_down", e.detail.clone())
    } else if let Some(e) = find(&["spool_full"]) {
        ("spool_full", e.detail.clone())
    } else if let Some(e) = find(&["settings_changed"]) {
        ("settings_changed", e.detail.clone())
    } else if let Some(e) = find(&["disconnected", "connect_failed"]) {
        ("camera_offline", e.detail.clone())
    } else if let Some(e) = find(&["clock_drift"]) {
        ("clock_drift", e.detail.clone())
    } else if let Some(e) = find(&["server_started"]) {
        ("server_down", e.detail.clone())
    } else {
        ("unknown", "no recorded event explains this gap".to_owned())
    };
    Gap { start_us: start, end_us: end, cause: cause.to_owned(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: i64, end: i64) -> (i64, i64) {
        (start, end)
    }

    fn ev(at: i64, kind: &str) -> EventRow {
        EventRow { camera_id: Some("c".into()), at_us: at, kind: kind.into(), detail: format!("{kind} detail") }
    }

    const S: i64 = 1_000_000;

    #[test]
    fn contiguous_segments_have_no_gaps() {
        let segs = [seg(0, 60 * S), seg(60 * S, 120 * S), seg(120 * S + 1000, 180 * S)];
        assert!(find_gaps(0, 180 * S, 1000 * S, &segs, &[]).is_empty());
    }

    #[test]
    fn a_hole_gets_the_cause_of_the_event_around_it() {
        let segs = [seg(0, 60 * S), seg(90 * S, 120 * S)];
        let gaps = find_gaps(0, 120 * S, 1000 * S, &segs, &[ev(59 * S, "disconnected")]);
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].start_us, gaps[0].end_us), (60 * S, 90 * S));
        assert_eq!(gaps[0].cause, "camera_offline");
    }

    #[test]
    fn server_crash_beats_camera_events_and_edges_count() {
        let segs = [seg(10 * S, 60 * S)];
        let events = [ev(61 * S, "connect_failed"), ev(80 * S, "server_crashed")];
        let gaps = find_gaps(0, 100 * S, 1000 * S, &segs, &events);
        assert_eq!(gaps.len(), 2);
        assert_eq!(gaps[0].cause, "unknown");
        assert_eq!(gaps[1].cause, "server_crashed");
        assert_eq!(gaps[1].end_us, 100 * S);
    }

    #[test]
    fn the_future_is_not_a_gap() {
        let segs = [seg(0, 60 * S)];
        assert!(find_gaps(0, 3600 * S, 60 * S, &segs, &[]).is_empty());
    }
}
