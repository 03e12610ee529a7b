//! One camera's state machine: from a once-a-second [`Sample`] of its hub's counters to
//! a verdict per alarm kind and the camera's health.
//!
//! Pure: time comes in with the sample, so tests drive it with simulated clocks.
//! States (what `/api/v1/armed` and the operator page show):
//!
//! | state            | meaning                                                            |
//! |------------------|--------------------------------------------------------------------|
//! | `starting`       | no frame yet, and `no_frames` has not passed since the camera was added |
//! | `recording`      | frames flow and are recorded; nothing wrong                         |
//! | `degraded`       | recorded, but something is wrong (reconnect storm, rate or bitrate collapse, clock drift, uploads failing) |
//! | `stalled`        | connected, but nothing is recorded: the session sends no frames, or the spool is full |
//! | `offline`        | no frames and no session: the camera or its network is down         |
//! | `decommissioned` | taken out of service by an admin (footage kept)                     |

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::clock::{ClockInput, ClockWatch};
use super::rates::{RateInput, RateWatch};
use super::Verdict;
use crate::alarms::AlarmKind;
use crate::config::WatchdogConfig;
use crate::hub::{CameraHub, CameraState, KeyMark};
use crate::time::{format_rfc3339, WallUs};

/// The hub's counters at one instant (atomics; the RTP origin minimum is taken, i.e.
/// reset, so each sample covers the second since the previous one).
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub now: WallUs,
    pub frames: u64,
    pub reconnects: u64,
    pub runs: u64,
    pub last_frame_us: WallUs,
    pub origin_min: Option<WallUs>,
    pub sender_report: Option<(i64, WallUs)>,
    pub spool_full_since: Option<WallUs>,
    pub mark: KeyMark,
    /// Ingest has a session up (frames may still have stopped).
    pub connected: bool,
    /// Ingest's last error, when it is failing.
    pub error: Option<String>,
}

impl Sample {
    pub fn take(hub: &CameraHub, now: WallUs) -> Sample {
        let s = &hub.stats;
        let nonzero = |v: i64| (v != 0).then_some(v);
        let origin = s.rtp_origin_min_us.swap(i64::MAX, Ordering::Relaxed);
        let sr_at = s.sr_at_us.load(Ordering::Relaxed);
        let state = hub.state();
        Sample {
            now,
            frames: s.frames.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            runs: s.runs.load(Ordering::Relaxed),
            last_frame_us: s.last_frame_us.load(Ordering::Relaxed),
            origin_min: (origin != i64::MAX && origin != 0).then_some(origin),
            sender_report: nonzero(sr_at).map(|at| (s.sr_offset_us.load(Ordering::Relaxed), at)),
            spool_full_since: nonzero(s.spool_full_since_us.load(Ordering::Relaxed)),
            mark: *s.key_mark.lock().unwrap(),
            connected: state == CameraState::Recording,
            error: match state {
                CameraState::Failed { error } => Some(error),
                _ => None,
            },
        }
    }
}

/// The kinds this state machine decides, per camera.
pub const CAMERA_KINDS: [AlarmKind; 6] = [
    AlarmKind::NoFrames,
    AlarmKind::ReconnectStorm,
    AlarmKind::FrameRateCollapse,
    AlarmKind::BitrateCollapse,
    AlarmKind::ClockDrift,
    AlarmKind::SpoolFull,
];

#[derive(Debug)]
pub struct CameraWatch {
    name: String,
    /// When the watchdog first saw this camera (the start of `starting`).
    since: WallUs,
    prev: Option<Sample>,
    /// When each reconnect of the last window was seen.
    reconnects: VecDeque<WallUs>,
    rates: RateWatch,
    clock: ClockWatch,
}

impl CameraWatch {
    pub fn new(name: &str, now: WallUs, cfg: &WatchdogConfig) -> CameraWatch {
        CameraWatch {
            name: name.to_owned(),
            since: now,
            prev: None,
            reconnects: VecDeque::new(),
            rates: RateWatch::new(cfg.rate_window, cfg.baseline),
            clock: ClockWatch::default(),
        }
    }

    /// One tick: a verdict per kind of [`CAMERA_KINDS`]. `live(kind)` says whether that
    /// alarm is raised (`None`: not known yet, e.g. left by a previous run); the
    /// reconnect storm clears only after a whole quiet window.
    pub fn observe(
        &mut self,
        s: Sample,
        cfg: &WatchdogConfig,
        live: impl Fn(AlarmKind) -> Option<bool>,
    ) -> Vec<(AlarmKind, Verdict)> {
        let now = s.now;
        let cam = &self.name;
        let (new_run, new_reconnects) = match &self.prev {
            Some(p) => (s.runs != p.runs, s.reconnects.saturating_sub(p.reconnects)),
            None => (false, 0),
        };
        let no_frames_us = cfg.no_frames.as_micros() as i64;

        // no_frames: since the last frame, or since the camera was added if none came.
        let silent_since = if s.last_frame_us != 0 { s.last_frame_us } else { self.since };
        let silent = now - silent_since;
        let no_frames = if silent >= no_frames_us {
            let what = if s.last_frame_us == 0 { "since it was added or the server started" } else { "" };
            let why = match (&s.error, s.connected) {
                (Some(e), _) => format!("; {e}"),
                (None, true) => "; the RTSP session is up but sends nothing".to_owned(),
                (None, false) => "; connecting".to_owned(),
            };
            Verdict::Bad(format!(
                "camera {cam:?}: no frame for {:.1} s {what}(threshold {} s){why}",
                silent as f64 / 1e6,
                cfg.no_frames.as_secs()
            ))
        } else if s.last_frame_us != 0 {
            Verdict::Good(format!("camera {cam:?}: frames flow again (last {:.1} s ago)", silent as f64 / 1e6))
        } else {
            Verdict::Unknown
        };

        // reconnect_storm: reconnects seen within the window.
        for _ in 0..new_reconnects.min(10_000) {
            self.reconnects.push_back(now);
        }
        let window_us = cfg.reconnect_window.as_micros() as i64;
        while self.reconnects.front().is_some_and(|&t| t <= now - window_us) {
            self.reconnects.pop_front();
        }
        let n = self.reconnects.len();
        let window = cfg.reconnect_window.as_secs();
        let storm_live = live(AlarmKind::ReconnectStorm);
        let storm = if n >= cfg.reconnect_storm_count as usize {
            Verdict::Bad(format!(
                "camera {cam:?}: {n} reconnects in the last {window} s (threshold {}){}",
                cfg.reconnect_storm_count,
                s.error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default()
            ))
        } else if storm_live == Some(false) {
            Verdict::Good(format!("camera {cam:?}: {n} reconnects in the last {window} s"))
        } else if n == 0 && now - self.since >= window_us {
            Verdict::Good(format!("camera {cam:?}: no reconnect for {window} s"))
        } else {
            Verdict::Unknown // raised (or maybe, by a previous run): clears after a quiet window
        };

        // A window counts only if frames kept coming through it: a pause of half the
        // window would look like a halved frame rate, and is no_frames' business.
        let half_window = (cfg.rate_window.as_micros() as i64 / 2).max(1_500_000);
        let flowing_us = (no_frames_us / 2).min(half_window);
        let flowing = s.last_frame_us != 0 && now - s.last_frame_us < flowing_us;
        let rates = self.rates.observe(
            RateInput { now, frames: s.frames, mark: s.mark, flowing, new_run },
            cfg.collapse_ratio,
        );
        let named = |v: Verdict| v.map(|d| format!("camera {cam:?}: {d}"));
        let clock = self.clock.observe(
            ClockInput { now, origin_min: s.origin_min, new_run, sender_report: s.sender_report },
            cfg.clock_window,
            cfg.max_clock_skew,
        );

        let spool_full = match s.spool_full_since {
            Some(since) => Verdict::Bad(format!(
                "camera {cam:?}: the spool is full; new footage has been dropped since {} ({:.0} s)",
                format_rfc3339(since),
                (now - since) as f64 / 1e6
            )),
            None => Verdict::Good(format!("camera {cam:?}: the spool has room; recording")),
        };

        self.prev = Some(s);
        vec![
            (AlarmKind::NoFrames, no_frames),
            (AlarmKind::ReconnectStorm, storm),
            (AlarmKind::FrameRateCollapse, named(rates.frame_rate)),
            (AlarmKind::BitrateCollapse, named(rates.bitrate)),
            (AlarmKind::ClockDrift, named(clock)),
            (AlarmKind::SpoolFull, spool_full),
        ]
    }

    /// The camera's state from the latest sample and the alarms live for it.
    pub fn health(&self, cfg: &WatchdogConfig, live: impl Fn(AlarmKind) -> bool, decommissioned: Option<&str>) -> (&'static str, String) {
        if let Some(why) = decommissioned {
            return ("decommissioned", why.to_owned());
        }
        let Some(s) = &self.prev else { return ("starting", String::new()) };
        let silent_since = if s.last_frame_us != 0 { s.last_frame_us } else { self.since };
        let silent = s.now - silent_since >= cfg.no_frames.as_micros() as i64;
        if s.last_frame_us == 0 && !silent {
            return ("starting", "connecting to the camera".into());
        }
        if silent {
            let detail = s.error.clone().unwrap_or_else(|| "no frames".into());
            return if s.connected { ("stalled", "the RTSP session is up but sends no frames".into()) } else { ("offline", detail) };
        }
        if let Some(since) = s.spool_full_since {
            return ("stalled", format!("spool full since {}: new footage is dropped", format_rfc3339(since)));
        }
        let wrong: Vec<&str> = [
            AlarmKind::ReconnectStorm,
            AlarmKind::FrameRateCollapse,
            AlarmKind::BitrateCollapse,
            AlarmKind::ClockDrift,
            AlarmKind::UploadFailing,
            AlarmKind::SpoolBacklog,
        ]
        .into_iter()
        .filter(|&k| live(k))
        .map(AlarmKind::as_str)
        .collect();
        if wrong.is_empty() {
            ("recording", String::new())
        } else {
            ("degraded", wrong.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T0: WallUs = 1_700_000_000_000_000;

    fn cfg() -> WatchdogConfig {
        WatchdogConfig { reconnect_storm_count: 3, reconnect_window: Duration::from_secs(20), ..Default::default() }
    }

    fn verdict(v: &[(AlarmKind, Verdict)], k: AlarmKind) -> &Verdict {
        &v.iter().find(|(kind, _)| *kind == k).unwrap().1
    }

    #[test]
    fn no_frames_is_raised_just_after_the_threshold_and_cleared_by_a_frame() {
        let cfg = cfg();
        let mut w = CameraWatch::new("Room 1", T0, &cfg);
        let mut s = Sample { now: T0 + 1_000_000, frames: 25, last_frame_us: T0 + 990_000, connected: true, ..Default::default() };
        assert!(matches!(verdict(&w.observe(s.clone(), &cfg, |_| Some(false)), AlarmKind::NoFrames), Verdict::Good(_)));
        s.now = T0 + 10_900_000; // 9.91 s since the last frame
        assert!(matches!(verdict(&w.observe(s.clone(), &cfg, |_| Some(false)), AlarmKind::NoFrames), Verdict::Good(_)));
        s.now = T0 + 11_900_000;
        s.connected = false;
        s.error = Some("camera \"room-1\": connection refused".into());
        let v = w.observe(s.clone(), &cfg, |_| Some(false));
        let Verdict::Bad(d) = verdict(&v, AlarmKind::NoFrames) else { panic!("{v:?}") };
        assert!(d.contains("no frame for 10.9 s") && d.contains("threshold 10 s") && d.contains("refused"), "{d}");
        assert_eq!(w.health(&cfg, |_| false, None).0, "offline");
        s.now += 1_000_000;
        s.last_frame_us = s.now - 20_000;
        s.connected = true;
        s.error = None;
        assert!(matches!(verdict(&w.observe(s, &cfg, |_| Some(false)), AlarmKind::NoFrames), Verdict::Good(_)));
        assert_eq!(w.health(&cfg, |_| false, None).0, "recording");
    }

    #[test]
    fn a_camera_that_never_sends_is_starting_then_offline() {
        let cfg = cfg();
        let mut w = CameraWatch::new("cam", T0, &cfg);
        let s = Sample { now: T0 + 5_000_000, ..Default::default() };
        assert_eq!(*verdict(&w.observe(s, &cfg, |_| Some(false)), AlarmKind::NoFrames), Verdict::Unknown);
        assert_eq!(w.health(&cfg, |_| false, None).0, "starting");
        let s = Sample { now: T0 + 10_000_000, ..Default::default() };
        assert!(matches!(verdict(&w.observe(s, &cfg, |_| Some(false)), AlarmKind::NoFrames), Verdict::Bad(_)));
        assert_eq!(w.health(&cfg, |_| false, None).0, "offline");
        assert_eq!(w.health(&cfg, |_| false, Some("moved")).0, "decommissioned");
    }

    #[test]
    fn a_reconnect_storm_clears_only_after_a_quiet_window() {
        let cfg = cfg();
        let mut w = CameraWatch::new("cam", T0, &cfg);
        let mut live = false;
        let mut s = Sample { now: T0, frames: 1, last_frame_us: T0, connected: true, ..Default::default() };
        let step = |w: &mut CameraWatch, s: &mut Sample, reconnect: bool, live: &mut bool| {
            s.now += 1_000_000;
            s.last_frame_us = s.now;
            if reconnect {
                s.reconnects += 1;
                s.runs += 1;
            }
            let v = verdict(&w.observe(s.clone(), &cfg, |_| Some(*live)), AlarmKind::ReconnectStorm).clone();
            match &v {
                Verdict::Bad(_) => *live = true,
                Verdict::Good(_) => *live = false,
                Verdict::Unknown => {}
            }
            v
        };
        step(&mut w, &mut s, false, &mut live);
        for i in 0..3 {
            let v = step(&mut w, &mut s, true, &mut live);
            assert_eq!(matches!(v, Verdict::Bad(_)), i == 2, "{v:?}");
        }
        // Quiet, but the storm's reconnects are still within the window: still raised.
        for _ in 0..18 {
            assert!(!matches!(step(&mut w, &mut s, false, &mut live), Verdict::Good(_)));
            assert!(live);
        }
        for _ in 0..2 {
            step(&mut w, &mut s, false, &mut live);
        }
        assert!(!live, "cleared after a whole window without a reconnect");
    }

    #[test]
    fn a_storm_left_by_a_previous_run_clears_only_after_a_quiet_window_of_this_one() {
        let cfg = cfg();
        let mut w = CameraWatch::new("cam", T0, &cfg);
        let at = |secs: i64| Sample { now: T0 + secs * 1_000_000, frames: 1, last_frame_us: T0 + secs * 1_000_000, ..Default::default() };
        assert_eq!(*verdict(&w.observe(at(1), &cfg, |_| None), AlarmKind::ReconnectStorm), Verdict::Unknown);
        assert_eq!(*verdict(&w.observe(at(19), &cfg, |_| None), AlarmKind::ReconnectStorm), Verdict::Unknown);
        assert!(matches!(verdict(&w.observe(at(20), &cfg, |_| None), AlarmKind::ReconnectStorm), Verdict::Good(_)));
    }
}
