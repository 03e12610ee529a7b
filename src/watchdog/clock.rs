//! Clock drift: a camera whose clocks disagree with the server's.
//!
//! Two clocks, two checks:
//!
//! * **Wall clock.** RTCP sender reports carry the camera's NTP time (RFC 3550 §6.4.1);
//!   ingest keeps it minus the server's time at arrival. A camera whose own clock is
//!   wrong burns a wrong time into its picture (the on-screen date police read), so
//!   more than `max_clock_skew` either way raises `clock_drift`.
//! * **RTP clock rate.** Frame timestamps should advance 90 000 ticks per second of
//!   server time. For every frame the hub keeps `arrival − RTP time since the session
//!   began` (the session's origin as that frame implies it); the watchdog takes the
//!   smallest value of each second. Network delay only ever makes a frame late, so the
//!   minimum of a few seconds is the on-time estimate. If the origin moves by more than
//!   `max_clock_skew` within `clock_window`, the camera's clock gains or loses that much
//!   against the server's: raised. (The recorder's own `drift_us` re-anchors itself at
//!   `recording.max_drift`, so it never grows past that and is not used here.)
//!
//! Raising needs 10 s of evidence (or the whole window if shorter); clearing needs a
//! whole window of agreement (a session that just began has no rate yet).

use std::collections::VecDeque;
use std::time::Duration;

use super::Verdict;
use crate::time::{format_rfc3339, WallUs};

/// Sender reports older than this are not evidence any more (cameras send one every
/// few seconds).
const SR_FRESH_US: i64 = 30_000_000;

#[derive(Debug, Default)]
pub struct ClockWatch {
    /// (tick time, smallest implied origin in the second before it), this session.
    samples: VecDeque<(WallUs, WallUs)>,
}

#[derive(Clone, Copy, Debug)]
pub struct ClockInput {
    pub now: WallUs,
    /// Smallest `arrival − RTP elapsed` of the frames since the previous tick.
    pub origin_min: Option<WallUs>,
    pub new_run: bool,
    /// (camera wall clock − server wall clock, when the report arrived).
    pub sender_report: Option<(i64, WallUs)>,
}

impl ClockWatch {
    pub fn observe(&mut self, i: ClockInput, window: Duration, max_skew: Duration) -> Verdict {
        let window_us = window.as_micros() as i64;
        let skew_us = max_skew.as_micros() as i64;
        if i.new_run {
            self.samples.clear();
        }
        if let Some(o) = i.origin_min {
            self.samples.push_back((i.now, o));
        }
        // A second more than the window, so a window's span is reached despite tick jitter.
        while self.samples.front().is_some_and(|&(t, _)| t < i.now - window_us - 1_000_000) {
            self.samples.pop_front();
        }

        let wall = i.sender_report.filter(|&(_, at)| i.now - at <= SR_FRESH_US).map(|(offset, at)| {
            let (ahead, by) = if offset >= 0 { ("ahead of", offset) } else { ("behind", -offset) };
            if by > skew_us {
                Verdict::Bad(format!(
                    "the camera's clock is {:.1} s {ahead} the server's (its RTCP sender report at {}; limit {:.1} s)",
                    by as f64 / 1e6,
                    format_rfc3339(at),
                    skew_us as f64 / 1e6
                ))
            } else {
                Verdict::Good(format!("the camera's clock agrees with the server's within {:.3} s", by as f64 / 1e6))
            }
        });

        let rate = self.rate(i.now, window_us, skew_us);
        let mut bad: Vec<String> = Vec::new();
        for v in [&wall, &rate] {
            if let Some(Verdict::Bad(d)) = v {
                bad.push(d.clone());
            }
        }
        if !bad.is_empty() {
            return Verdict::Bad(bad.join("; "));
        }
        match (&wall, &rate) {
            // A session too young for a rate: wait for it before declaring the clock good.
            (_, Some(Verdict::Unknown)) => Verdict::Unknown,
            (Some(Verdict::Good(w)), Some(Verdict::Good(r))) => Verdict::Good(format!("{w}; {r}")),
            (Some(Verdict::Good(d)), None) | (None, Some(Verdict::Good(d))) => Verdict::Good(d.clone()),
            _ => Verdict::Unknown,
        }
    }

    /// The RTP clock's gain over the window; `None` without samples, `Some(Unknown)` while
    /// the session is too young to tell.
    fn rate(&self, now: WallUs, window_us: i64, skew_us: i64) -> Option<Verdict> {
        let &(t0, _) = self.samples.front()?;
        let span = now - t0;
        // Each end is the minimum over a few seconds of per-second minima.
        let group = (window_us / 4).min(5_000_000);
        let min_span = window_us.min(10_000_000);
        if span < min_span.max(2 * group) - 500_000 {
            return Some(Verdict::Unknown);
        }
        let by_origin = |a: &&(WallUs, WallUs), b: &&(WallUs, WallUs)| a.1.cmp(&b.1);
        let &(t_old, old) = self.samples.iter().take_while(|&&(t, _)| t <= t0 + group).min_by(by_origin)?;
        let &(t_new, new) = self.samples.iter().rev().take_while(|&&(t, _)| t >= now - group).min_by(by_origin)?;
        // The origin moving earlier means RTP time ran ahead of arrival time: a fast clock.
        let gained = old - new;
        let between = (t_new - t_old).max(1);
        let secs = between as f64 / 1e6;
        let pct = gained as f64 / between as f64 * 100.0;
        if gained.abs() > skew_us {
            Some(Verdict::Bad(format!(
                "the camera's RTP clock {} {:.2} s against the server's clock in {secs:.0} s ({}{pct:.2} %; limit {:.1} s per {:.0} s)",
                if gained > 0 { "gained" } else { "lost" },
                gained.abs() as f64 / 1e6,
                if pct > 0.0 { "+" } else { "" },
                skew_us as f64 / 1e6,
                window_us as f64 / 1e6
            )))
        } else if span >= window_us - 1_000_000 {
            Some(Verdict::Good(format!(
                "the camera's RTP clock kept the server's pace within {:.3} s over {:.0} s",
                gained.abs() as f64 / 1e6,
                span as f64 / 1e6
            )))
        } else {
            Some(Verdict::Unknown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: WallUs = 1_700_000_000_000_000;

    /// Feeds `secs` seconds of a camera whose RTP clock runs `ppm` fast, with frames
    /// late by up to `jitter_us` (deterministic pattern); answers the last verdict.
    fn feed(w: &mut ClockWatch, from: i64, secs: i64, ppm: i64, jitter_us: i64, sr: Option<i64>) -> Verdict {
        let mut v = Verdict::Unknown;
        for s in from..from + secs {
            let now = T0 + s * 1_000_000;
            // Origin = arrival − RTP elapsed; RTP elapsed = real elapsed × (1 + ppm).
            let elapsed = s * 1_000_000;
            let late = if s % 3 == 0 { 0 } else { jitter_us * ((s % 7) + 1) / 7 };
            let origin = T0 + elapsed + late - elapsed * (1_000_000 + ppm) / 1_000_000;
            let input = ClockInput {
                now,
                origin_min: Some(origin),
                new_run: s == from && from == 0,
                sender_report: sr.map(|o| (o, now)),
            };
            v = w.observe(input, Duration::from_secs(60), Duration::from_millis(500));
        }
        v
    }

    #[test]
    fn a_camera_in_step_is_good_once_a_whole_window_is_seen_despite_jitter() {
        let mut w = ClockWatch::default();
        assert_eq!(feed(&mut w, 0, 30, 0, 300_000, None), Verdict::Unknown);
        assert!(matches!(feed(&mut w, 30, 40, 0, 300_000, None), Verdict::Good(_)));
    }

    #[test]
    fn a_fast_rtp_clock_is_raised_with_its_rate() {
        let mut w = ClockWatch::default();
        // 2 % fast: 0.5 s gained after 25 s.
        let v = feed(&mut w, 0, 40, 20_000, 100_000, None);
        let Verdict::Bad(d) = v else { panic!("{v:?}") };
        assert!(d.contains("gained") && d.contains("+2.0"), "{d}");
    }

    #[test]
    fn a_short_window_is_judged_although_ticks_come_a_little_late() {
        // As in the integration test: a 10 s window, 5 % fast, ticks every 1.01 s.
        let mut w = ClockWatch::default();
        let mut v = Verdict::Unknown;
        for k in 0..15i64 {
            let now = T0 + k * 1_010_000;
            let origin = T0 - (now - T0) * 50_000 / 1_000_000;
            let input = ClockInput { now, origin_min: Some(origin), new_run: k == 0, sender_report: None };
            v = w.observe(input, Duration::from_secs(10), Duration::from_millis(300));
        }
        assert!(matches!(v, Verdict::Bad(_)), "{v:?}");
    }

    #[test]
    fn a_wrong_wall_clock_is_raised_at_once_and_a_right_one_needs_the_rate_too() {
        let mut w = ClockWatch::default();
        let v = feed(&mut w, 0, 1, 0, 0, Some(-20_000_000));
        let Verdict::Bad(d) = v else { panic!("{v:?}") };
        assert!(d.contains("20.0 s behind"), "{d}");
        let mut w = ClockWatch::default();
        assert_eq!(feed(&mut w, 0, 5, 0, 0, Some(10_000)), Verdict::Unknown);
        assert!(matches!(feed(&mut w, 5, 60, 0, 0, Some(10_000)), Verdict::Good(_)));
    }
}
