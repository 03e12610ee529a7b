//! Tamper checks: is each camera still showing the room it should?
//!
//! A camera can keep sending frames, so the watchdog sees it as healthy, while it protects
//! nobody: the lens is covered or painted over, the picture is frozen, the focus is knocked
//! or the dome smeared, or the camera has been turned away. Every few seconds (default 10)
//! the snapshot task decodes each camera's latest keyframe to 8-bit luma and passes it to that
//! camera's [`Detector`]. The detector returns alarms to raise and clear ([`Change`]), and the
//! caller passes them on to [`crate::alarms`].
//!
//! Every check runs on a fixed `ANALYSIS_WIDTH`×`ANALYSIS_HEIGHT` picture, box-filtered
//! down from whatever the decoder gives. That keeps the cost the same for every camera and
//! tiny. Measured with `cargo test --release --lib tamper_cost -- --ignored --nocapture` on
//! the 2-core dev box: one [`Detector::check`] of a 160×90 picture takes about 45 µs, and
//! about 0.3 ms while the view looks moved (it then searches for the shift). The box filter
//! down from 1920×1080 takes about 0.4 ms. Pictures that are not 16:9 (the decoder's
//! 160×120 for a 4:3 camera) are stretched to fit. None of the measures depend on aspect.
//!
//! A condition must show in several pictures in a row before it is raised, and be gone for
//! several before it is cleared (see [`Thresholds`]). So a child's hand on the lens or a
//! person walking past raises nothing, and an alarm does not flap on and off.
//!
//! Precedence: a covered picture (black or uniform) is also frozen-looking, blur-free and
//! unlike the reference. So while a picture is covered, the other three conditions are
//! *unknown*: they are neither raised nor cleared, and their counters hold. In the same way,
//! a blurred picture leaves Moved unknown, because blur alone lowers the similarity to the
//! reference. A camera turned to face a blank wall can therefore read as Blurred rather
//! than Moved. Either alarm sends someone to look at it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Every check runs at this size: each pixel averages 12×12 pixels of a 1080p picture.
pub const ANALYSIS_WIDTH: u32 = 160;
pub const ANALYSIS_HEIGHT: u32 = 90;
/// Counted as "near black" in [`Stats::dark_fraction`]. Limited-range video black is 16.
const NEAR_BLACK: u8 = 32;
/// For Moved, the view's structure is compared on cells this many analysis pixels wide
/// (48 px at 1080p). The cells are coarse enough that children, sensor noise and a
/// vibrating mount barely change the structure, and fine enough that a 5 % turn shows.
const CELL: u32 = 4;
/// A difference between cells of at least this many luma levels is structure, not sensor noise.
const CLEAR_STEP: i16 = 3;
/// While a condition is raised, its threshold is this much looser (a quarter further toward
/// healthy), so a measure hovering at the threshold neither clears nor re-raises it.
const HYSTERESIS: f32 = 1.25;

/// An 8-bit luma picture, row-major, `data.len() == width * height`.
#[derive(Clone, PartialEq, Eq)]
pub struct Luma {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Luma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Luma({}×{}, {} bytes)", self.width, self.height, self.data.len())
    }
}

impl Luma {
    pub fn is_valid(&self) -> bool {
        self.width > 0 && self.height > 0 && self.data.len() as u64 == u64::from(self.width) * u64::from(self.height)
    }

    /// Box filter: each output pixel is the rounded mean of the source pixels under it.
    /// When the sizes do not divide, the box bounds are rounded to whole pixels, so boxes
    /// differ by at most one row or column. A smaller source is enlarged by repeating pixels.
    pub fn downscale(&self, width: u32, height: u32) -> Luma {
        assert!(self.is_valid() && width > 0 && height > 0, "downscale of {self:?} to {width}×{height}");
        let (sw, sh, w, h) = (self.width as usize, self.height as usize, width as usize, height as usize);
        let span = |i: usize, n: usize, s: usize| (i * s / n, ((i + 1) * s / n).max(i * s / n + 1));
        let cols: Vec<(usize, usize)> = (0..w).map(|x| span(x, w, sw)).collect();
        let mut sums = vec![0u32; w];
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h {
            let (y0, y1) = span(y, h, sh);
            sums.fill(0);
            for row in self.data[y0 * sw..y1 * sw].chunks_exact(sw) {
                for (sum, &(x0, x1)) in sums.iter_mut().zip(&cols) {
                    *sum += row[x0..x1].iter().map(|&v| u32::from(v)).sum::<u32>();
                }
            }
            for (&sum, &(x0, x1)) in sums.iter().zip(&cols) {
                let n = ((x1 - x0) * (y1 - y0)) as u32;
                data.push(((sum + n / 2) / n) as u8);
            }
        }
        Luma { width, height, data }
    }

    /// The picture at the analysis size. It is only copied when it needs resizing.
    pub fn for_analysis(&self) -> Cow<'_, Luma> {
        if (self.width, self.height) == (ANALYSIS_WIDTH, ANALYSIS_HEIGHT) {
            Cow::Borrowed(self)
        } else {
            Cow::Owned(self.downscale(ANALYSIS_WIDTH, ANALYSIS_HEIGHT))
        }
    }
}

// ---- measures: pure functions of one or two pictures --------------------------------------

/// Brightness and contrast of a picture.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    pub mean: f32,
    pub stddev: f32,
    /// The 5th and 95th percentile of luma. The spread between them ignores the outer 5 %,
    /// such as a burned-in clock, which would make a black picture look textured.
    pub p5: u8,
    pub p95: u8,
    /// Share of pixels darker than `NEAR_BLACK`.
    pub dark_fraction: f32,
}

impl Stats {
    pub fn spread(&self) -> u8 {
        self.p95 - self.p5
    }
}

pub fn stats(p: &Luma) -> Stats {
    let mut hist = [0u32; 256];
    for &v in &p.data {
        hist[usize::from(v)] += 1;
    }
    let n = p.data.len().max(1) as f64;
    let (mut sum, mut sum_sq) = (0f64, 0f64);
    for (v, &c) in hist.iter().enumerate() {
        sum += (v * c as usize) as f64;
        sum_sq += (v * v) as f64 * f64::from(c);
    }
    let mean = sum / n;
    let percentile = |q: f64| {
        let target = (q * n).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        hist.iter().position(|&c| { seen += u64::from(c); seen >= target }).unwrap_or(255) as u8
    };
    let dark: u32 = hist[..usize::from(NEAR_BLACK)].iter().sum();
    Stats {
        mean: mean as f32,
        stddev: (sum_sq / n - mean * mean).max(0.0).sqrt() as f32,
        p5: percentile(0.05),
        p95: percentile(0.95),
        dark_fraction: (f64::from(dark) / n) as f32,
    }
}

/// Fine detail relative to contrast: the RMS of the 4-neighbour Laplacian divided by the
/// standard deviation. Defocus removes fine detail (the Laplacian) much faster than the coarse
/// contrast (the deviation), so the ratio drops. Because both scale with the light, a dimmed
/// room keeps its sharpness. Sensor noise adds to the Laplacian, so noise slightly raises
/// the value and never fakes blur. Unlike focus measures used for autofocus, this one can
/// be compared across lighting changes.
pub fn sharpness(p: &Luma) -> f32 {
    sharpness_with(p, &stats(p))
}

fn sharpness_with(p: &Luma, stats: &Stats) -> f32 {
    let (w, h) = (p.width as usize, p.height as usize);
    if w < 3 || h < 3 || stats.stddev < 1.0 {
        return 0.0;
    }
    let d = &p.data;
    let mut sum_sq = 0u64;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let lap = 4 * i32::from(d[i]) - i32::from(d[i - 1]) - i32::from(d[i + 1]) - i32::from(d[i - w]) - i32::from(d[i + w]);
            sum_sq += (lap * lap) as u64;
        }
    }
    ((sum_sq as f64 / ((w - 2) * (h - 2)) as f64).sqrt() / f64::from(stats.stddev)) as f32
}

/// Mean absolute difference in luma levels. Pictures of different sizes are maximally
/// different (`f32::INFINITY`).
pub fn mean_abs_diff(a: &Luma, b: &Luma) -> f32 {
    if (a.width, a.height) != (b.width, b.height) || a.data.is_empty() {
        return f32::INFINITY;
    }
    let sum: u64 = a.data.iter().zip(&b.data).map(|(&x, &y)| u64::from(x.abs_diff(y))).sum();
    (sum as f64 / a.data.len() as f64) as f32
}

/// Similarity of the view in `pic` to `reference`, from -1 (inverted) through 0 (unrelated)
/// to 1 (the same). It counts the reference's clear local contrasts (a table edge, a door
/// frame, a dark shelf) whose sign the picture keeps, minus those it flips, as a share of all
/// of them. Dimmed or brighter lights keep every sign, and children hide only the cells they
/// cover. A turned camera or another scene puts unrelated content under each cell, so about
/// as many signs flip as stay.
pub fn similarity(reference: &Luma, pic: &Luma) -> f32 {
    Structure::of(&reference.for_analysis()).similarity(&Structure::of(&pic.for_analysis()), 0, 0)
}

/// Where the reference view best matches `pic`, searching up to a fifth of the picture
/// each way in whole cells (2.5 % of the width, 4.5 % of the height).
pub fn find_shift(reference: &Luma, pic: &Luma) -> Shift {
    Structure::of(&reference.for_analysis()).best_shift(&Structure::of(&pic.for_analysis()))
}

/// How far the scene in the picture has moved from where it is in the reference, as
/// fractions of the picture size (positive: right, down; the camera turned the other way).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    pub right: f32,
    pub down: f32,
    pub similarity: f32,
}

/// The view's structure, per `CELL`×`CELL` cell: how much brighter the cell is than the mean
/// of its 3×3 neighbourhood, and the steps to its right and lower neighbours. Comparing against
/// the local mean drops smooth light falloff, which would otherwise look the same after a turn.
#[derive(Clone)]
struct Structure {
    w: usize,
    h: usize,
    cells: Vec<[i16; 3]>,
}

impl Structure {
    fn of(p: &Luma) -> Structure {
        let c = p.downscale((p.width / CELL).max(2), (p.height / CELL).max(2));
        let (w, h) = (c.width as usize, c.height as usize);
        let at = |x: usize, y: usize| i16::from(c.data[y * w + x]);
        let mut cells = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let (xs, ys) = (x.saturating_sub(1)..=(x + 1).min(w - 1), y.saturating_sub(1)..=(y + 1).min(h - 1));
                let n = (xs.clone().count() * ys.clone().count()) as i16;
                let sum: i16 = ys.flat_map(|yy| xs.clone().map(move |xx| (xx, yy))).map(|(xx, yy)| at(xx, yy)).sum();
                let right = if x + 1 < w { at(x + 1, y) - at(x, y) } else { 0 };
                let down = if y + 1 < h { at(x, y + 1) - at(x, y) } else { 0 };
                cells.push([(at(x, y) * n - sum) / n, right, down]);
            }
        }
        Structure { w, h, cells }
    }

    /// Agreement of the signs of `self` at (x, y) and `other` at (x + dx, y + dy), over the
    /// cells where `self` is clearly brighter or darker: +1 all agree, 0 unrelated, -1 inverted.
    /// Signs survive any change of light that keeps dark things darker than bright ones.
    /// Every cell counts the same, however strong its edge, so children cost only the area
    /// they cover.
    fn similarity(&self, other: &Structure, dx: i32, dy: i32) -> f32 {
        if (self.w, self.h) != (other.w, other.h) {
            return 0.0;
        }
        let (w, h) = (self.w as i32, self.h as i32);
        let (mut clear, mut agree) = (0i32, 0i32);
        for y in 0.max(-dy)..h.min(h - dy) {
            for x in 0.max(-dx)..w.min(w - dx) {
                let (r, o) = (&self.cells[(y * w + x) as usize], &other.cells[((y + dy) * w + x + dx) as usize]);
                for (&r, &o) in r.iter().zip(o) {
                    if r.abs() >= CLEAR_STEP {
                        clear += 1;
                        agree += i32::from(r.signum() * o.signum());
                    }
                }
            }
        }
        if clear < 20 {
            return 0.0;
        }
        agree as f32 / clear as f32
    }

    fn best_shift(&self, other: &Structure) -> Shift {
        let (mx, my) = ((self.w / 5) as i32, (self.h / 5) as i32);
        let mut best = Shift { right: 0.0, down: 0.0, similarity: f32::NEG_INFINITY };
        for dy in -my..=my {
            for dx in -mx..=mx {
                let similarity = self.similarity(other, dx, dy);
                if similarity > best.similarity {
                    let (right, down) = (dx as f32 / self.w as f32, dy as f32 / self.h as f32);
                    best = Shift { right, down, similarity };
                }
            }
        }
        best
    }
}

// ---- thresholds -----------------------------------------------------------------------------

/// When a picture counts as covered, frozen, blurred or moved, and for how long.
/// A camera's config may override any field; missing fields keep these defaults.
/// "Pictures" are checks, 10 s apart by default.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Covered when the middle 90 % of pixels span fewer luma levels than this. A hand or a
    /// cloth over the lens, or a black picture, spans only its sensor noise (σ 2 spans about
    /// 7). A room, even dimmed to half, spans many dozens. Default 12.
    #[serde(serialize_with = "as_written")]
    pub uniform_spread: f32,
    /// Covered when the mean luma is below this: nothing much above black (0 in the decoder's
    /// full-range luma, 16 if a picture arrives in limited range). Default 20.
    #[serde(serialize_with = "as_written")]
    pub dark_mean: f32,
    /// Frozen when the mean absolute difference from the previous picture is at or below this.
    /// A frozen stream decodes to identical pictures (0), or nearly (a few blocks one level
    /// off). Each analysis pixel averages 64 (720p) to 576 (4K) camera pixels, which hides
    /// most sensor noise: a still, empty room seen at 720p with noise σ 0.5 / 1 / 2 still
    /// differs by 0.08 / 0.14 / 0.29. Default 0.02 (a fortieth of one luma level).
    #[serde(serialize_with = "as_written")]
    pub frozen_mad: f32,
    /// Frozen is raised after this many pictures in a row, each identical to the one before
    /// it: 3 means 30 s without a single change, which even a sleeping room never manages.
    pub frozen_pictures: u32,
    /// Blurred when sharpness falls below this share of the camera's normal sharpness. In the
    /// tests' busy room, lights and children keep it at 82–110 %, and a person filling half
    /// the picture at about 60 %. A blur of 3×3 analysis pixels (a smear 36 px wide at 1080p)
    /// leaves 26–34 %. Default 0.5.
    #[serde(serialize_with = "as_written")]
    pub blur_ratio: f32,
    /// Moved when the similarity to the reference view falls below this. Over 20 synthetic busy
    /// rooms (a third of the cells hidden by moving children, lights at ±15 % or halved), a
    /// picture scored 0.35–0.83 against the reference. A view turned by 5 % scored at most
    /// 0.37, by 10 % or more at most 0.30, and another room about 0. Default 0.33.
    #[serde(serialize_with = "as_written")]
    pub moved_similarity: f32,
    /// Covered, Blurred and Moved are raised after this many pictures in a row. 3 (20–30 s)
    /// means a person in front of the lens, or a hand that touches it, raises nothing.
    pub consecutive: u32,
    /// An active alarm clears after this many pictures in a row without its condition, so a
    /// borderline camera does not flap. Default 2.
    pub clear_after: u32,
    /// Without an operator-confirmed view, the reference is the per-pixel median of this many
    /// first pictures that are neither covered nor frozen. The median removes the moving
    /// children from it. Default 6 (one minute).
    pub reference_pictures: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            uniform_spread: 12.0,
            dark_mean: 20.0,
            frozen_mad: 0.02,
            frozen_pictures: 3,
            blur_ratio: 0.5,
            moved_similarity: 0.33,
            consecutive: 3,
            clear_after: 2,
            reference_pictures: 6,
        }
    }
}

/// An `f32` threshold as its shortest decimal (0.02, not 0.019999999552965164).
fn as_written<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(v.to_string().parse().unwrap_or(f64::from(*v)))
}

impl Thresholds {
    /// Checks the values' ranges; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, v: String, want: &str| Err(format!("tamper threshold {key} = {v}: {want}"));
        for (key, v) in [("uniform_spread", self.uniform_spread), ("dark_mean", self.dark_mean)] {
            if !(0.0..=255.0).contains(&v) {
                return bad(key, v.to_string(), "must be a luma level from 0 to 255");
            }
        }
        if !(0.0..=255.0).contains(&self.frozen_mad) {
            return bad("frozen_mad", self.frozen_mad.to_string(), "must be from 0 to 255 luma levels");
        }
        if !(self.blur_ratio > 0.0 && self.blur_ratio < 1.0) {
            return bad("blur_ratio", self.blur_ratio.to_string(), "must be between 0 and 1");
        }
        if !(-1.0..1.0).contains(&self.moved_similarity) {
            return bad("moved_similarity", self.moved_similarity.to_string(), "must be from -1 to below 1");
        }
        for (key, v) in [("frozen_pictures", self.frozen_pictures), ("consecutive", self.consecutive),
                         ("clear_after", self.clear_after), ("reference_pictures", self.reference_pictures)] {
            if v == 0 {
                return bad(key, v.to_string(), "must be at least 1 picture");
            }
        }
        Ok(())
    }
}

// ---- the per-camera detector --------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Black or uniform: lens covered or painted, or the picture is black.
    Covered,
    /// Frames flow but the picture does not change.
    Frozen,
    /// Much less fine detail than this camera normally shows.
    Blurred,
    /// The view no longer matches the reference.
    Moved,
}

const KINDS: [Kind; 4] = [Kind::Covered, Kind::Frozen, Kind::Blurred, Kind::Moved];

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Covered => "covered",
            Kind::Frozen => "frozen",
            Kind::Blurred => "blurred",
            Kind::Moved => "moved",
        }
    }
}

/// What the caller should do with its alarms. The detail gives the numbers behind the
/// change, for the alarm text.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Raised { kind: Kind, detail: String },
    Cleared { kind: Kind, detail: String },
}

/// Everything measured on the latest picture, for the operator view and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Measurements {
    pub stats: Stats,
    /// Mean absolute difference from the previous picture; `None` for the first picture.
    pub mad: Option<f32>,
    pub sharpness: f32,
    /// This camera's normal sharpness; `None` until there is a reference.
    pub sharpness_baseline: Option<f32>,
    /// Similarity to the reference view; `None` until there is a reference.
    pub similarity: Option<f32>,
    /// Searched only when the view looks moved.
    pub shift: Option<Shift>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReferenceError {
    #[error("the picture's size ({0}×{1}) does not match its data")]
    Invalid(u32, u32),
    #[error("the picture is black or uniform (mean luma {mean:.0}, spread {spread}): there is no view to confirm")]
    Featureless { mean: f32, spread: u8 },
}

/// One camera's tamper state. Call [`Detector::check`] with each new picture.
pub struct Detector {
    t: Thresholds,
    /// The view to compare with for Moved: confirmed by the operator, or averaged from the
    /// first pictures.
    reference: Option<(Luma, Structure)>,
    /// The pictures so far toward an automatic reference, and their sharpness.
    warmup: (Vec<Luma>, Vec<f32>),
    /// This camera's normal sharpness. It rises quickly (lights on, a busier room) and falls
    /// slowly, so a focus that drifts over minutes is still caught.
    baseline: Option<f32>,
    prev: Option<Luma>,
    /// Per kind: consecutive pictures with, and without, the condition.
    runs: [(u32, u32); 4],
    active: Vec<Kind>,
    last: Option<Measurements>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Evidence {
    Present,
    Absent,
    /// This picture cannot tell, for example because a covered picture hides everything else.
    Unknown,
}

impl From<bool> for Evidence {
    fn from(present: bool) -> Self {
        if present { Evidence::Present } else { Evidence::Absent }
    }
}

impl Detector {
    pub fn new(thresholds: Thresholds) -> Detector {
        Detector {
            t: thresholds,
            reference: None,
            warmup: (Vec::new(), Vec::new()),
            baseline: None,
            prev: None,
            runs: [(0, 0); 4],
            active: Vec::new(),
            last: None,
        }
    }

    /// The operator confirms that `pic` shows the right view. It becomes the reference for
    /// Moved and the normal sharpness for Blurred. Evidence gathered against the old reference
    /// is dropped, and an active Moved or Blurred alarm clears in the next checks if the
    /// new view holds.
    pub fn set_reference(&mut self, pic: &Luma) -> Result<(), ReferenceError> {
        if !pic.is_valid() {
            return Err(ReferenceError::Invalid(pic.width, pic.height));
        }
        let a = pic.for_analysis().into_owned();
        let st = stats(&a);
        if self.covered(&st, 1.0) {
            return Err(ReferenceError::Featureless { mean: st.mean, spread: st.spread() });
        }
        self.baseline = Some(sharpness_with(&a, &st));
        self.adopt(a);
        Ok(())
    }

    /// The reference picture at analysis size, to show the operator or to keep across restarts.
    pub fn reference(&self) -> Option<&Luma> {
        self.reference.as_ref().map(|(pic, _)| pic)
    }

    /// The conditions currently raised, in the order Covered, Frozen, Blurred, Moved.
    pub fn active(&self) -> &[Kind] {
        &self.active
    }

    pub fn last(&self) -> Option<&Measurements> {
        self.last.as_ref()
    }

    /// Checks one picture and returns the alarms to raise or clear.
    ///
    /// Set `frames_flowing` only if the camera delivered frames since the previous check
    /// and `pic` comes from a keyframe received since then. A stalled camera is the
    /// watchdog's job. Its stale keyframe, decoded again, would look frozen and would
    /// repeat a one-off blip until it seemed to persist. So without fresh frames this does
    /// nothing and changes nothing. With long "smart" GOPs, skip the check until a new
    /// keyframe arrives.
    pub fn check(&mut self, pic: &Luma, frames_flowing: bool) -> Vec<Change> {
        if !frames_flowing {
            return Vec::new();
        }
        if !pic.is_valid() {
            tracing::warn!(width = pic.width, height = pic.height, len = pic.data.len(), "tamper check skipped: picture size does not match its data");
            return Vec::new();
        }
        let a = pic.for_analysis();
        let st = stats(&a);
        // While a condition is raised, it counts as gone only when clearly so (hysteresis).
        let loose = |kind: Kind| if self.active.contains(&kind) { HYSTERESIS } else { 1.0 };
        let covered = self.covered(&st, loose(Kind::Covered));
        let mad = self.prev.as_ref().map(|p| mean_abs_diff(p, &a));
        let sharp = sharpness_with(&a, &st);
        let structure = self.reference.as_ref().map(|_| Structure::of(&a));
        let similarity = self.reference.as_ref().zip(structure.as_ref()).map(|((_, r), s)| r.similarity(s, 0, 0));

        use Evidence::{Absent, Present, Unknown};
        let frozen = match mad {
            Some(m) if !covered => Evidence::from(m <= self.t.frozen_mad * loose(Kind::Frozen)),
            _ => Unknown,
        };
        let blurred = match self.baseline {
            Some(b) if !covered => Evidence::from(sharp < self.t.blur_ratio * loose(Kind::Blurred) * b),
            _ => Unknown,
        };
        let moved = match similarity {
            Some(s) if !covered && blurred != Present => Evidence::from(s < self.t.moved_similarity * loose(Kind::Moved)),
            _ => Unknown,
        };
        let shift = match (moved, &self.reference, &structure) {
            (Present, Some((_, r)), Some(s)) => Some(r.best_shift(s)),
            _ => None,
        };
        let m = Measurements { stats: st, mad, sharpness: sharp, sharpness_baseline: self.baseline, similarity, shift };

        let mut changes = Vec::new();
        for (i, (kind, evidence)) in KINDS.into_iter().zip([covered.into(), frozen, blurred, moved]).enumerate() {
            let (with, without) = match evidence {
                Present => (self.runs[i].0 + 1, 0),
                Absent => (0, self.runs[i].1 + 1),
                Unknown => self.runs[i],
            };
            self.runs[i] = (with, without);
            let needed = if kind == Kind::Frozen { self.t.frozen_pictures } else { self.t.consecutive };
            let is_active = self.active.contains(&kind);
            if evidence == Present && !is_active && with >= needed {
                self.active.push(kind);
                changes.push(Change::Raised { kind, detail: self.describe(kind, &m) });
            } else if evidence == Absent && is_active && without >= self.t.clear_after {
                self.active.retain(|&k| k != kind);
                changes.push(Change::Cleared { kind, detail: self.describe(kind, &m) });
            }
        }
        self.active.sort();

        // Learn only from pictures that are plainly fine.
        let healthy = [covered.into(), frozen, blurred, moved].iter().all(|&e| e != Present) && self.active.is_empty();
        if let (true, Some(b)) = (healthy, self.baseline.as_mut()) {
            *b += if sharp > *b { 0.2 } else { 0.02 } * (sharp - *b);
        }
        if self.reference.is_none() && !covered && frozen != Present {
            self.warm_up(&a, sharp);
        }
        self.prev = Some(a.into_owned());
        self.last = Some(m);
        changes
    }

    fn covered(&self, st: &Stats, loose: f32) -> bool {
        f32::from(st.spread()) < self.t.uniform_spread * loose || st.mean < self.t.dark_mean * loose
    }

    fn warm_up(&mut self, a: &Luma, sharp: f32) {
        let (pictures, sharpness) = &mut self.warmup;
        pictures.push(a.clone());
        sharpness.push(sharp);
        if pictures.len() >= self.t.reference_pictures as usize {
            // Per pixel, the median over the pictures: whoever moved is gone from it.
            let mut column = Vec::with_capacity(pictures.len());
            let data = (0..a.data.len()).map(|i| {
                column.clear();
                column.extend(pictures.iter().map(|p| p.data[i]));
                *column.select_nth_unstable(pictures.len() / 2).1
            }).collect();
            sharpness.sort_by(f32::total_cmp);
            self.baseline = Some(sharpness[sharpness.len() / 2]);
            self.adopt(Luma { width: a.width, height: a.height, data });
        }
    }

    fn adopt(&mut self, reference: Luma) {
        let structure = Structure::of(&reference);
        self.reference = Some((reference, structure));
        self.warmup = (Vec::new(), Vec::new());
        self.runs[2].0 = 0;
        self.runs[3].0 = 0;
    }

    /// The numbers behind a change. The alarm's kind already says what is wrong.
    fn describe(&self, kind: Kind, m: &Measurements) -> String {
        match kind {
            Kind::Covered => format!(
                "mean luma {:.1}, middle 90 % of pixels within {} levels, {:.0} % near black",
                m.stats.mean, m.stats.spread(), m.stats.dark_fraction * 100.0),
            Kind::Frozen => format!(
                "mean change from the previous picture {:.2} luma levels; {} pictures in a row unchanged",
                m.mad.unwrap_or(f32::NAN), self.runs[1].0),
            Kind::Blurred => {
                let normal = m.sharpness_baseline.unwrap_or(f32::NAN);
                format!("sharpness {:.2}, {:.0} % of this camera's normal {:.2}", m.sharpness, 100.0 * m.sharpness / normal, normal)
            }
            Kind::Moved => {
                let mut text = format!("similarity to the reference view {:.2} (alarm below {:.2})",
                    m.similarity.unwrap_or(f32::NAN), self.t.moved_similarity);
                if let Some(s) = m.shift.filter(|s| s.similarity >= self.t.moved_similarity) {
                    let way = |v: f32, pos: &str, neg: &str| format!("{:.0} % {}", v.abs() * 100.0, if v < 0.0 { neg } else { pos });
                    text += &format!("; it matches best with the scene shifted {} and {} (similarity {:.2})",
                        way(s.right, "right", "left"), way(s.down, "down", "up"), s.similarity);
                }
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = ANALYSIS_WIDTH as usize;
    const H: usize = ANALYSIS_HEIGHT as usize;

    /// splitmix64: deterministic, so every run sees the same pictures.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
        fn range(&mut self, lo: f32, hi: f32) -> f32 {
            lo + (hi - lo) * self.unit()
        }
        /// Roughly Gaussian: the sum of four uniforms, scaled.
        fn noise(&mut self, sigma: f32) -> f32 {
            ((0..4).map(|_| self.unit()).sum::<f32>() - 2.0) * sigma * 3f32.sqrt()
        }
    }

    /// A classroom: furniture, a lighting gradient and fine texture (carpet, toys), defined
    /// on a plane larger than the picture so the camera can be turned.
    struct Room {
        seed: u64,
        furniture: Vec<[f32; 5]>,
    }

    impl Room {
        fn new(seed: u64) -> Room {
            let mut rng = Rng(seed);
            let furniture = (0..40).map(|_| {
                let (x, y) = (rng.range(-80.0, 240.0), rng.range(-40.0, 130.0));
                [x, y, x + rng.range(6.0, 40.0), y + rng.range(6.0, 30.0), rng.range(30.0, 220.0)]
            }).collect();
            Room { seed, furniture }
        }

        fn at(&self, x: f32, y: f32) -> f32 {
            let mut v = 110.0 + 35.0 * (x * 0.04 + self.seed as f32).sin() * (y * 0.06).cos();
            for &[x0, y0, x1, y1, level] in &self.furniture {
                if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
                    v = level;
                }
            }
            let texture = Rng(self.seed ^ ((x.floor() as i64 as u64) << 32) ^ (y.floor() as i64 as u64)).unit();
            v + (texture - 0.5) * 24.0
        }

        /// The room as the camera sees it, with its content moved `right` pixels and each row
        /// shifted by `shear` pixels per row from the middle (a camera rotated a little).
        fn view(&self, right: f32, shear: f32) -> Vec<f32> {
            (0..W * H).map(|i| {
                let (x, y) = ((i % W) as f32, (i / W) as f32);
                self.at(x - right - shear * (y - H as f32 / 2.0), y)
            }).collect()
        }
    }

    /// A live camera on a room: children move between pictures, the light flickers slowly by
    /// ±15 %, and every picture has fresh sensor noise.
    struct Camera {
        rng: Rng,
        children: Vec<[f32; 4]>,
        t: u32,
    }

    #[derive(Default)]
    struct Shot {
        blur: usize,
        dim: bool,
        half_covered: bool,
    }

    impl Camera {
        fn new(seed: u64) -> Camera {
            let mut rng = Rng(seed);
            let children = (0..7).map(|i| {
                let r = if i == 0 { 20.0 } else { rng.range(5.0, 14.0) };
                [rng.range(0.0, W as f32), rng.range(0.0, H as f32), r, rng.range(20.0, 230.0)]
            }).collect();
            Camera { rng, children, t: 0 }
        }

        fn shoot(&mut self, view: &[f32], shot: Shot) -> Luma {
            let mut img = view.to_vec();
            for c in &mut self.children {
                c[0] = (c[0] + self.rng.range(-25.0, 25.0)).rem_euclid(W as f32);
                c[1] = (c[1] + self.rng.range(-15.0, 15.0)).rem_euclid(H as f32);
                for (i, v) in img.iter_mut().enumerate() {
                    let (dx, dy) = ((i % W) as f32 - c[0], (i / W) as f32 - c[1]);
                    if dx * dx + dy * dy < c[2] * c[2] {
                        *v = c[3];
                    }
                }
            }
            if shot.half_covered {
                img.iter_mut().enumerate().filter(|(i, _)| i % W < W / 2).for_each(|(i, v)| *v = 60.0 + (i / W) as f32 * 0.2);
            }
            if shot.blur > 0 {
                img = box_blur(&img, shot.blur);
            }
            let gain = (1.0 + 0.15 * (self.t as f32 * 0.37).sin()) * if shot.dim { 0.5 } else { 1.0 };
            self.t += 1;
            let data = img.iter().map(|&v| (v * gain + self.rng.noise(2.0)).round().clamp(0.0, 255.0) as u8).collect();
            Luma { width: W as u32, height: H as u32, data }
        }
    }

    fn box_blur(img: &[f32], r: usize) -> Vec<f32> {
        let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
            (0..W * H).map(|i| {
                let (x, y) = (i % W, i / W);
                let (c, n) = if horizontal { (x, W) } else { (y, H) };
                let (lo, hi) = (c.saturating_sub(r), (c + r).min(n - 1));
                (lo..=hi).map(|k| src[if horizontal { y * W + k } else { k * W + x }]).sum::<f32>() / (hi - lo + 1) as f32
            }).collect()
        };
        pass(&pass(img, true), false)
    }

    fn flat(mean: f32, sigma: f32, seed: u64) -> Luma {
        let mut rng = Rng(seed);
        let data = (0..W * H).map(|_| (mean + rng.noise(sigma)).round().clamp(0.0, 255.0) as u8).collect();
        Luma { width: W as u32, height: H as u32, data }
    }

    /// Feeds pictures and returns each change with the index of the picture that caused it.
    fn feed(det: &mut Detector, pictures: impl IntoIterator<Item = Luma>) -> Vec<(usize, Change)> {
        pictures.into_iter().enumerate().flat_map(|(i, p)| det.check(&p, true).into_iter().map(move |c| (i, c))).collect()
    }

    fn kinds(changes: &[(usize, Change)]) -> Vec<(usize, &'static str, Kind)> {
        changes.iter().map(|(i, c)| match c {
            Change::Raised { kind, .. } => (*i, "raised", *kind),
            Change::Cleared { kind, .. } => (*i, "cleared", *kind),
        }).collect()
    }

    /// A detector that has seen a minute of the busy room and adopted it as its reference.
    fn warmed_up(room: &Room, cam: &mut Camera) -> Detector {
        let mut det = Detector::new(Thresholds::default());
        let view = room.view(0.0, 0.0);
        assert!(feed(&mut det, (0..10).map(|_| cam.shoot(&view, Shot::default()))).is_empty());
        assert!(det.reference().is_some());
        det
    }

    /// Runs `bad` pictures of one condition between healthy ones; asserts the condition (and
    /// nothing else) is raised on the picture where it has persisted long enough, and cleared
    /// once healthy pictures have persisted long enough.
    fn raises_then_clears(kind: Kind, needed: usize, mut bad: impl FnMut(&mut Camera) -> Luma) {
        let (room, mut cam) = (Room::new(7), Camera::new(8));
        let mut det = warmed_up(&room, &mut cam);
        let changes = feed(&mut det, (0..5).map(|_| bad(&mut cam)).collect::<Vec<_>>());
        assert_eq!(kinds(&changes), [(needed - 1, "raised", kind)], "{changes:?} {:?}", det.last());
        assert_eq!(det.active(), [kind]);
        let view = room.view(0.0, 0.0);
        let changes = feed(&mut det, (0..4).map(|_| cam.shoot(&view, Shot::default())).collect::<Vec<_>>());
        assert_eq!(kinds(&changes), [(1, "cleared", kind)], "{changes:?} {:?}", det.last());
        assert!(det.active().is_empty());
    }


    #[test]
    fn busy_room_raises_nothing_in_200_checks_with_either_reference() {
        let (room, mut cam) = (Room::new(1), Camera::new(2));
        let view = room.view(0.0, 0.0);
        let mut auto = Detector::new(Thresholds::default());
        let mut confirmed = Detector::new(Thresholds::default());
        confirmed.set_reference(&cam.shoot(&view, Shot::default())).unwrap();
        let (mut lowest_similarity, mut lowest_sharpness) = (f32::MAX, f32::MAX);
        for i in 0..200 {
            let pic = cam.shoot(&view, Shot::default());
            for det in [&mut auto, &mut confirmed] {
                assert_eq!(det.check(&pic, true), [], "picture {i}: {:?}", det.last());
                let m = det.last().unwrap();
                lowest_similarity = lowest_similarity.min(m.similarity.unwrap_or(1.0));
                lowest_sharpness = lowest_sharpness.min(m.sharpness / m.sharpness_baseline.unwrap_or(m.sharpness));
            }
        }
        eprintln!("busy room: lowest similarity {lowest_similarity:.2}, lowest sharpness ratio {lowest_sharpness:.2}");
    }

    #[test]
    fn black_picture_raises_covered_and_clears_when_the_view_returns() {
        let mut seed = 100;
        raises_then_clears(Kind::Covered, 3, |_| { seed += 1; flat(3.0, 1.0, seed) });
    }

    #[test]
    fn hand_over_the_lens_raises_covered() {
        let mut seed = 200;
        raises_then_clears(Kind::Covered, 3, |_| { seed += 1; flat(90.0, 2.0, seed) });
    }

    #[test]
    fn black_picture_with_a_burned_in_clock_is_still_covered() {
        let mut pic = flat(16.0, 1.0, 5);
        pic.data.iter_mut().take(W * 4).enumerate().filter(|(i, _)| i.is_multiple_of(3)).for_each(|(_, v)| *v = 235);
        let st = stats(&pic);
        assert!(st.stddev > 12.0 && st.spread() < 12, "{st:?}");
        assert!(Detector::new(Thresholds::default()).covered(&st, 1.0));
    }

    #[test]
    fn frozen_picture_raises_frozen_and_clears_when_it_changes() {
        let room = Room::new(7);
        let still = Camera::new(99).shoot(&room.view(0.0, 0.0), Shot::default());
        // Picture 0 differs from the live one before it; 1, 2, 3 are identical to the one before.
        raises_then_clears(Kind::Frozen, 4, |_| still.clone());
    }

    #[test]
    fn frozen_picture_with_a_few_reencoded_blocks_is_still_frozen() {
        let still = Camera::new(99).shoot(&Room::new(7).view(0.0, 0.0), Shot::default());
        let mut rng = Rng(3);
        raises_then_clears(Kind::Frozen, 4, |_| {
            let mut p = still.clone();
            // 0.5 % of pixels off by one: MAD ≈ 0.01 between two such pictures.
            p.data.iter_mut().filter(|_| rng.unit() < 0.005).for_each(|v| *v = v.saturating_add(1));
            p
        });
    }

    #[test]
    fn still_room_with_sensor_noise_is_not_frozen() {
        // ±1 on every pixel (MAD ≈ 0.9) is what a live camera on an empty room looks like.
        let (room, mut cam) = (Room::new(7), Camera::new(8));
        let mut det = warmed_up(&room, &mut cam);
        let still = cam.shoot(&room.view(0.0, 0.0), Shot::default());
        let mut rng = Rng(4);
        let noisy = (0..10).map(|_| {
            let data = still.data.iter().map(|&v| (f32::from(v) + rng.range(-1.5, 1.5)).round().clamp(0.0, 255.0) as u8).collect();
            Luma { data, ..still.clone() }
        });
        assert_eq!(feed(&mut det, noisy.collect::<Vec<_>>()), []);
        assert!(det.last().unwrap().mad.unwrap() > 0.5);
    }

    #[test]
    fn a_stalled_camera_is_not_frozen_and_changes_nothing() {
        let (room, mut cam) = (Room::new(7), Camera::new(8));
        let mut det = warmed_up(&room, &mut cam);
        let stale = cam.shoot(&room.view(0.0, 0.0), Shot::default());
        for _ in 0..10 {
            assert_eq!(det.check(&stale, false), []);
        }
    }

    #[test]
    fn smeared_lens_raises_blurred_only() {
        let view = Room::new(7).view(0.0, 0.0);
        raises_then_clears(Kind::Blurred, 3, |cam| cam.shoot(&view, Shot { blur: 4, ..Shot::default() }));
    }

    #[test]
    fn camera_turned_by_15_percent_raises_moved_and_finds_the_shift() {
        let view = Room::new(7).view(0.15 * W as f32, 0.0);
        raises_then_clears(Kind::Moved, 3, |cam| cam.shoot(&view, Shot::default()));
        let (room, mut cam) = (Room::new(7), Camera::new(8));
        let shift = find_shift(&cam.shoot(&room.view(0.0, 0.0), Shot::default()), &cam.shoot(&view, Shot::default()));
        assert!((shift.right - 0.15).abs() <= 0.025 && shift.down.abs() < 0.05 && shift.similarity > 0.4, "{shift:?}");
    }

    #[test]
    fn camera_rolled_on_its_mount_raises_moved() {
        // Rows shifted progressively, up to 22 px at the top and bottom.
        let view = Room::new(7).view(0.0, 0.5);
        raises_then_clears(Kind::Moved, 3, |cam| cam.shoot(&view, Shot::default()));
    }

    #[test]
    fn camera_facing_another_room_raises_moved() {
        let view = Room::new(70).view(0.0, 0.0);
        raises_then_clears(Kind::Moved, 3, |cam| cam.shoot(&view, Shot::default()));
    }

    #[test]
    fn a_person_covering_half_the_picture_for_one_check_raises_nothing() {
        let (room, mut cam) = (Room::new(7), Camera::new(8));
        let mut det = warmed_up(&room, &mut cam);
        let view = room.view(0.0, 0.0);
        let shots = (0..20).map(|i| cam.shoot(&view, Shot { half_covered: i % 4 == 0, ..Shot::default() }));
        assert_eq!(feed(&mut det, shots.collect::<Vec<_>>()), []);
    }

    #[test]
    fn lights_dimmed_to_half_raise_nothing() {
        let (room, mut cam) = (Room::new(7), Camera::new(8));
        let mut det = warmed_up(&room, &mut cam);
        let view = room.view(0.0, 0.0);
        let shots = (0..30).map(|i| cam.shoot(&view, Shot { dim: (5..20).contains(&i), ..Shot::default() }));
        assert_eq!(feed(&mut det, shots.collect::<Vec<_>>()), []);
    }

    #[test]
    fn operator_cannot_confirm_a_black_view_and_a_new_view_clears_moved() {
        let (room, mut cam) = (Room::new(7), Camera::new(8));
        let mut det = warmed_up(&room, &mut cam);
        assert!(matches!(det.set_reference(&flat(3.0, 1.0, 1)), Err(ReferenceError::Featureless { .. })));
        let turned = room.view(30.0, 0.0);
        let changes = feed(&mut det, (0..3).map(|_| cam.shoot(&turned, Shot::default())).collect::<Vec<_>>());
        assert_eq!(kinds(&changes), [(2, "raised", Kind::Moved)]);
        det.set_reference(&cam.shoot(&turned, Shot::default())).unwrap();
        let changes = feed(&mut det, (0..2).map(|_| cam.shoot(&turned, Shot::default())).collect::<Vec<_>>());
        assert_eq!(kinds(&changes), [(1, "cleared", Kind::Moved)]);
    }

    #[test]
    fn measures_on_simple_pictures() {
        let black = stats(&flat(3.0, 1.0, 1));
        assert!(black.mean < 4.0 && black.spread() <= 4 && black.dark_fraction == 1.0, "{black:?}");
        let grey = stats(&flat(90.0, 2.0, 2));
        assert!((grey.stddev - 2.0).abs() < 0.3 && grey.spread() <= 8, "{grey:?}");
        let view = Room::new(3).view(0.0, 0.0);
        let mut cam = Camera::new(3);
        let (sharp, blurred) = (cam.shoot(&view, Shot::default()), cam.shoot(&view, Shot { blur: 4, ..Shot::default() }));
        assert!(sharpness(&blurred) < 0.4 * sharpness(&sharp));
        assert_eq!(mean_abs_diff(&sharp, &sharp), 0.0);
        assert_eq!(mean_abs_diff(&sharp, &sharp.downscale(80, 45)), f32::INFINITY);
        assert!(similarity(&sharp, &cam.shoot(&view, Shot { dim: true, ..Shot::default() })) > 0.4);
        assert!(similarity(&sharp, &cam.shoot(&Room::new(4).view(0.0, 0.0), Shot::default())) < 0.25);
    }

    #[test]
    fn downscale_averages_boxes_and_keeps_small_pictures() {
        let pic = Luma { width: 4, height: 2, data: vec![0, 2, 10, 20, 4, 6, 30, 40] };
        assert_eq!(pic.downscale(2, 1).data, [3, 25]);
        assert_eq!(pic.downscale(8, 2).data, [0, 0, 2, 2, 10, 10, 20, 20, 4, 4, 6, 6, 30, 30, 40, 40]);
        let hd = Luma { width: 1920, height: 1080, data: vec![77; 1920 * 1080] };
        let small = hd.for_analysis();
        assert_eq!((small.width, small.height), (ANALYSIS_WIDTH, ANALYSIS_HEIGHT));
        assert!(small.data.iter().all(|&v| v == 77));
    }

    #[test]
    fn thresholds_take_partial_overrides_and_reject_unknown_keys() {
        let t: Thresholds = toml::from_str("blur_ratio = 0.4\nconsecutive = 5").unwrap();
        assert_eq!(t, Thresholds { blur_ratio: 0.4, consecutive: 5, ..Thresholds::default() });
        assert!(toml::from_str::<Thresholds>("blur = 0.4").is_err());
        assert!(Thresholds::default().validate().is_ok());
        let err = Thresholds { clear_after: 0, ..Thresholds::default() }.validate().unwrap_err();
        assert!(err.contains("clear_after"), "{err}");
    }

    /// Cost figures quoted in the module comment; run with `--release --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run in release with --ignored --nocapture"]
    fn tamper_cost() {
        let (room, mut cam) = (Room::new(1), Camera::new(2));
        let mut det = warmed_up(&room, &mut cam);
        let pics: Vec<Luma> = (0..50).map(|_| cam.shoot(&room.view(0.0, 0.0), Shot::default())).collect();
        let start = std::time::Instant::now();
        for _ in 0..20 {
            for p in &pics {
                std::hint::black_box(det.check(p, true));
            }
        }
        eprintln!("check 160×90: {:?}", start.elapsed() / 1000);
        let moved = room.view(24.0, 0.0);
        let pics: Vec<Luma> = (0..50).map(|_| cam.shoot(&moved, Shot::default())).collect();
        let start = std::time::Instant::now();
        for p in &pics {
            std::hint::black_box(det.check(p, true));
        }
        eprintln!("check 160×90 of a moved view, with the shift search: {:?}", start.elapsed() / 50);
        let hd = Luma { width: 1920, height: 1080, data: (0..1920 * 1080).map(|i| (i * 7 % 251) as u8).collect() };
        let start = std::time::Instant::now();
        for _ in 0..20 {
            std::hint::black_box(hd.for_analysis());
        }
        eprintln!("downscale 1920×1080 → 160×90: {:?}", start.elapsed() / 20);
    }
}
