//! Frame-rate and bitrate collapse: a camera that still delivers, but far less than it
//! usually does.
//!
//! Rates are measured over `rate_window` and compared with the camera's own baseline:
//! the **median** of the windows of the last `baseline` (one odd window — a burst at
//! reconnect, a scene change — cannot move a median). Only windows in which frames flowed
//! for the whole window, within one camera session, count. Nothing is judged until half
//! the baseline is known, so start-up never alarms. A window judged collapsed is kept
//! out of the baseline, so a camera that stays broken does not become its own new normal;
//! the baseline is in memory, so a server restart accepts the current rate afresh.
//!
//! **Bitrate is measured over whole GOPs**, between two keyframes, never over a bare
//! window: in a still scene nearly all bytes are in the keyframes, and a window holding
//! one keyframe instead of two would look like a halved bitrate. And it needs **both**
//! the bitrate and the keyframe size to collapse: when children leave the room, P-frames
//! shrink but keyframes (the whole picture's detail) do not; a covered lens, a dead
//! sensor or an encoder fallen back to a trickle shrink both.

use std::collections::VecDeque;

use super::Verdict;
use crate::hub::KeyMark;
use crate::time::WallUs;

/// At most this many windows are kept for the baseline (a long baseline with a short
/// window is thinned by its length, not by sampling).
const MAX_HISTORY: usize = 720;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Bucket {
    start: WallUs,
    frames0: u64,
    valid: bool,
}

/// One camera's rate history.
#[derive(Debug)]
pub struct RateWatch {
    window_us: i64,
    history: usize,
    bucket: Option<Bucket>,
    fps: VecDeque<f64>,
    bps: VecDeque<f64>,
    key: VecDeque<f64>,
    /// Keyframe marks seen in this session, oldest first.
    marks: VecDeque<KeyMark>,
    last_keyframes: u64,
}

/// What one tick tells the rate watch.
#[derive(Clone, Copy, Debug)]
pub struct RateInput {
    pub now: WallUs,
    pub frames: u64,
    pub mark: KeyMark,
    /// Frames arrived recently (the session is delivering).
    pub flowing: bool,
    /// A new camera session began since the previous tick.
    pub new_run: bool,
}

/// The verdicts for `frame_rate_collapse` and `bitrate_collapse`.
#[derive(Debug, PartialEq)]
pub struct RateVerdicts {
    pub frame_rate: Verdict,
    pub bitrate: Verdict,
}

impl RateWatch {
    pub fn new(window: std::time::Duration, baseline: std::time::Duration) -> RateWatch {
        let window_us = window.as_micros().max(1) as i64;
        let history = ((baseline.as_micros() as i64 / window_us) as usize).clamp(4, MAX_HISTORY);
        RateWatch {
            window_us,
            history,
            bucket: None,
            fps: VecDeque::new(),
            bps: VecDeque::new(),
            key: VecDeque::new(),
            marks: VecDeque::new(),
            last_keyframes: 0,
        }
    }

    /// Windows needed before a baseline is trusted: half the baseline, at least three.
    fn needed(&self) -> usize {
        (self.history / 2).max(3)
    }

    pub fn observe(&mut self, i: RateInput, ratio: f64) -> RateVerdicts {
        let unknown = || RateVerdicts { frame_rate: Verdict::Unknown, bitrate: Verdict::Unknown };
        if i.new_run {
            // A new session: a new RTP origin and maybe new encoder settings; the GOP
            // accounting starts again (the outage must not count as a long, thin GOP).
            self.marks.clear();
            self.last_keyframes = i.mark.keyframes;
            if let Some(b) = &mut self.bucket {
                b.valid = false;
            }
        } else if i.mark.keyframes != self.last_keyframes {
            self.last_keyframes = i.mark.keyframes;
            self.marks.push_back(i.mark);
            // Keep a few windows' worth, and always the two newest (a GOP longer than that).
            while self.marks.len() > 2 && self.marks[0].at_us < i.now - 4 * self.window_us {
                self.marks.pop_front();
            }
        }
        let Some(mut b) = self.bucket else {
            self.bucket = Some(Bucket { start: i.now, frames0: i.frames, valid: i.flowing });
            return unknown();
        };
        b.valid &= i.flowing;
        let elapsed = i.now - b.start;
        if elapsed < self.window_us {
            self.bucket = Some(b);
            return unknown();
        }
        self.bucket = Some(Bucket { start: i.now, frames0: i.frames, valid: i.flowing });
        if !b.valid {
            return unknown();
        }
        let secs = elapsed as f64 / 1e6;
        let fps = (i.frames - b.frames0) as f64 / secs;
        let frame_rate = judge_frame_rate(fps, median(&self.fps, self.needed()), ratio, secs);
        if !matches!(frame_rate, Verdict::Bad(_)) {
            push(&mut self.fps, fps, self.history);
        }
        let bitrate = match self.gop_rates() {
            None => Verdict::Unknown,
            Some((bps, key, span)) => {
                let base = median(&self.bps, self.needed()).zip(median(&self.key, self.needed()));
                let v = judge_bitrate(bps, key, span, base, ratio);
                if !matches!(v, Verdict::Bad(_)) {
                    push(&mut self.bps, bps, self.history);
                    push(&mut self.key, key, self.history);
                }
                v
            }
        };
        RateVerdicts { frame_rate, bitrate }
    }

    /// Bits per second and mean keyframe bytes over the whole GOPs that ended within
    /// the last window (at least one GOP), and the seconds they span.
    fn gop_rates(&self) -> Option<(f64, f64, f64)> {
        let last = *self.marks.back()?;
        let first = self
            .marks
            .iter()
            .rev()
            .skip(1)
            .find(|m| last.at_us - m.at_us >= self.window_us)
            .or_else(|| self.marks.front().filter(|m| m.keyframes != last.keyframes))?;
        let span = (last.at_us - first.at_us) as f64 / 1e6;
        if span <= 0.0 {
            return None;
        }
        let bps = (last.bytes_before - first.bytes_before) as f64 * 8.0 / span;
        // Keyframes after `first` up to and including `last`.
        let key = (last.key_bytes - first.key_bytes) as f64 / (last.keyframes - first.keyframes) as f64;
        Some((bps, key, span))
    }
}

fn judge_frame_rate(fps: f64, base: Option<f64>, ratio: f64, secs: f64) -> Verdict {
    let Some(base) = base else { return Verdict::Unknown };
    if fps < ratio * base {
        Verdict::Bad(format!(
            "frame rate {fps:.1} fps over the last {secs:.1} s, below {:.0} % of this camera's baseline of {base:.1} fps",
            ratio * 100.0
        ))
    } else {
        Verdict::Good(format!("frame rate back to {fps:.1} fps (baseline {base:.1} fps)"))
    }
}

fn judge_bitrate(bps: f64, key: f64, span: f64, base: Option<(f64, f64)>, ratio: f64) -> Verdict {
    let Some((base_bps, base_key)) = base else { return Verdict::Unknown };
    let low_rate = bps < ratio * base_bps;
    let low_key = key < ratio * base_key;
    if low_rate && low_key {
        Verdict::Bad(format!(
            "bitrate {} over the last {span:.1} s of whole GOPs, below {:.0} % of this camera's baseline of {}; \
             keyframes {} against {} (a covered lens, a failed sensor or a starved encoder)",
            kbit(bps),
            ratio * 100.0,
            kbit(base_bps),
            kbytes(key),
            kbytes(base_key)
        ))
    } else if low_rate {
        Verdict::Good(format!(
            "bitrate {} (baseline {}) but keyframes keep their size ({} against {}): a still scene, not a failing camera",
            kbit(bps),
            kbit(base_bps),
            kbytes(key),
            kbytes(base_key)
        ))
    } else {
        Verdict::Good(format!("bitrate back to {} (baseline {})", kbit(bps), kbit(base_bps)))
    }
}

fn kbit(bps: f64) -> String {
    format!("{:.0} kbit/s", bps / 1000.0)
}

fn kbytes(b: f64) -> String {
    format!("{:.1} kB", b / 1000.0)
}

fn push(q: &mut VecDeque<f64>, v: f64, cap: usize) {
    if q.len() == cap {
        q.pop_front();
    }
    q.push_back(v);
}

/// The median of `q`, when it holds at least `needed` values.
fn median(q: &VecDeque<f64>, needed: usize) -> Option<f64> {
    if q.len() < needed {
        return None;
    }
    let mut v: Vec<f64> = q.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A simulated camera: `fps` frames a second, a keyframe every `gop` frames of
    /// `key_bytes`, other frames `p_bytes`; ticks once a second.
    struct Cam {
        now: WallUs,
        frames: u64,
        bytes: u64,
        mark: KeyMark,
        watch: RateWatch,
    }

    impl Cam {
        fn new(window_s: u64, baseline_s: u64) -> Cam {
            Cam {
                now: 1_700_000_000_000_000,
                frames: 0,
                bytes: 0,
                mark: KeyMark::default(),
                watch: RateWatch::new(Duration::from_secs(window_s), Duration::from_secs(baseline_s)),
            }
        }

        /// Runs `secs` seconds; answers every verdict that was not Unknown.
        fn run(&mut self, secs: u64, fps: u64, gop: u64, key_bytes: u64, p_bytes: u64) -> Vec<RateVerdicts> {
            let mut out = Vec::new();
            for _ in 0..secs {
                for f in 0..fps {
                    let at = self.now + (f as i64) * 1_000_000 / fps as i64;
                    if self.frames.is_multiple_of(gop) {
                        self.mark = KeyMark {
                            keyframes: self.mark.keyframes + 1,
                            bytes_before: self.bytes,
                            key_bytes: self.mark.key_bytes + key_bytes,
                            at_us: at,
                        };
                        self.bytes += key_bytes;
                    } else {
                        self.bytes += p_bytes;
                    }
                    self.frames += 1;
                }
                self.now += 1_000_000;
                let v = self.watch.observe(
                    RateInput { now: self.now, frames: self.frames, mark: self.mark, flowing: true, new_run: false },
                    0.5,
                );
                if v != (RateVerdicts { frame_rate: Verdict::Unknown, bitrate: Verdict::Unknown }) {
                    out.push(v);
                }
            }
            out
        }
    }

    fn bad(v: &Verdict) -> bool {
        matches!(v, Verdict::Bad(_))
    }

    #[test]
    fn start_up_is_never_judged_before_half_a_baseline() {
        let mut cam = Cam::new(10, 300);
        // 2 minutes at 25 fps: windows are measured, but 15 are needed for a baseline.
        let v = cam.run(140, 25, 50, 40_000, 8_000);
        assert!(v.iter().all(|v| v.frame_rate == Verdict::Unknown), "{v:?}");
        let v = cam.run(30, 25, 50, 40_000, 8_000);
        assert!(v.iter().any(|v| matches!(v.frame_rate, Verdict::Good(_))), "{v:?}");
    }

    #[test]
    fn a_frame_rate_collapse_is_raised_and_cleared_and_does_not_become_the_baseline() {
        let mut cam = Cam::new(10, 300);
        cam.run(200, 25, 50, 40_000, 8_000);
        let v = cam.run(20, 8, 16, 40_000, 8_000);
        assert!(v.iter().any(|v| bad(&v.frame_rate)), "{v:?}");
        // Ten minutes later it is still collapsed: the baseline did not follow it down.
        let v = cam.run(600, 8, 16, 40_000, 8_000);
        assert!(v.iter().all(|v| bad(&v.frame_rate)), "{:?}", v.last());
        let v = cam.run(20, 25, 50, 40_000, 8_000);
        assert!(matches!(v.last().unwrap().frame_rate, Verdict::Good(_)), "{v:?}");
    }

    #[test]
    fn a_still_scene_with_long_gops_is_not_a_bitrate_collapse() {
        // A busy scene, then the room empties: P-frames nearly vanish and nearly all
        // bytes are in keyframes every 10 s (longer than the window). Bitrate falls to a
        // fifth, keyframes keep their size: no alarm, at any window alignment.
        let mut cam = Cam::new(10, 300);
        cam.run(300, 25, 250, 120_000, 20_000);
        let v = cam.run(300, 25, 250, 120_000, 500);
        assert!(v.iter().all(|v| !bad(&v.bitrate) && !bad(&v.frame_rate)), "{v:?}");
        assert!(v.iter().any(|v| matches!(&v.bitrate, Verdict::Good(d) if d.contains("still scene"))), "{v:?}");
    }

    #[test]
    fn a_covered_lens_is_a_bitrate_collapse_until_uncovered() {
        let mut cam = Cam::new(10, 300);
        cam.run(300, 25, 50, 60_000, 10_000);
        let v = cam.run(30, 25, 50, 3_000, 300);
        assert!(v.iter().any(|v| bad(&v.bitrate)), "{v:?}");
        assert!(v.iter().all(|v| !bad(&v.frame_rate)), "{v:?}");
        let v = cam.run(30, 25, 50, 60_000, 10_000);
        assert!(matches!(v.last().unwrap().bitrate, Verdict::Good(_)), "{v:?}");
    }

    #[test]
    fn windows_with_a_stall_or_a_new_session_are_not_judged() {
        let mut cam = Cam::new(10, 300);
        cam.run(200, 25, 50, 40_000, 8_000);
        // A window in which frames stopped is not a rate at all (no_frames covers it).
        for _ in 0..15 {
            cam.now += 1_000_000;
            let v = cam.watch.observe(
                RateInput { now: cam.now, frames: cam.frames, mark: cam.mark, flowing: false, new_run: false },
                0.5,
            );
            assert_eq!(v.frame_rate, Verdict::Unknown);
        }
        cam.now += 1_000_000;
        let v = cam.watch.observe(
            RateInput { now: cam.now, frames: cam.frames, mark: cam.mark, flowing: true, new_run: true },
            0.5,
        );
        assert_eq!(v.frame_rate, Verdict::Unknown);
        let v = cam.run(30, 25, 50, 40_000, 8_000);
        assert!(v.iter().all(|v| matches!(v.frame_rate, Verdict::Good(_) | Verdict::Unknown)), "{v:?}");
    }
}
