//! Proof of coverage over HTTP, for the admin, the operator and the regulator:
//!
//! - `GET /api/v1/coverage?from=RFC3339&to=RFC3339[&camera=ID][&format=csv]`: per camera
//!   and per day of the centre's calendar, seconds recorded and every gap with its
//!   cause ([`crate::coverage`]); the days overlapping `[from, to)`, at most
//!   [`MAX_DAYS`] of them.
//! - `GET /api/v1/armed`: whether the centre is armed now, and why not
//!   ([`crate::coverage::armed`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Auth, StatusReaders};
use super::{ApiError, AppState, Result};
use crate::coverage::{armed, days_overlapping, CameraCoverage, Cause, CoverageError, DayReport, Footage};
use crate::time::{format_rfc3339, now_us, parse_rfc3339, WallUs};

/// The longest range one request may cover: a quarter and a bit (a regulator's
/// "the last 90 days" fits, from any time of day).
pub const MAX_DAYS: i64 = 93;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/coverage", get(coverage)).route("/api/v1/armed", get(armed))
}

impl From<CoverageError> for ApiError {
    fn from(e: CoverageError) -> Self {
        ApiError::Internal(e.into())
    }
}

#[derive(Deserialize)]
struct CoverageQuery {
    from: Option<String>,
    to: Option<String>,
    camera: Option<String>,
    format: Option<String>,
}

/// An RFC 3339 instant from the query string. A `+` that was not written as `%2B`
/// arrives as a space; put it back rather than refuse a URL typed by hand.
fn instant(name: &str, value: Option<&str>) -> Result<WallUs> {
    let v = value.map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{name} is required: ?from=…&to=… as RFC 3339 times, e.g. from=2026-03-01T00:00:00%2B08:00"
        ))
    })?;
    parse_rfc3339(v).or_else(|_| parse_rfc3339(&v.replace(' ', "+"))).map_err(|e| {
        ApiError::BadRequest(format!("{name}: {e}; write e.g. 2026-03-01T00:00:00+08:00 (in a URL, + is %2B)"))
    })
}

async fn coverage(
    State(app): State<AppState>,
    _: Auth<StatusReaders>,
    Query(q): Query<CoverageQuery>,
) -> Result<Response> {
    let from = instant("from", q.from.as_deref())?;
    let to = instant("to", q.to.as_deref())?;
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    if to - from > MAX_DAYS * 86_400 * 1_000_000 {
        return Err(ApiError::BadRequest(format!(
            "the range is {:.1} days; ask for at most {MAX_DAYS} days at a time",
            (to - from) as f64 / 86_400e6
        )));
    }
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("format {other:?}: use json or csv"))),
    };
    let zone = app.db.centre().await?.time_zone;
    let now = now_us();
    let days = days_overlapping(zone.tz(), from, to)?;
    let ledger = &app.coverage;
    let cameras = match q.camera.as_deref() {
        Some(c) => {
            if !ledger.knows(c).await? {
                return Err(ApiError::NotFound(format!(
                    "no camera {c:?}: it is not configured and has no footage, events or ledger days"
                )));
            }
            vec![c.to_owned()]
        }
        None => ledger.cameras_in(&zone, &days).await?,
    };
    let snap = ledger.snapshot().await?;
    let mut report = Vec::with_capacity(cameras.len());
    for c in &cameras {
        let facts = ledger.facts(c, &snap).await?;
        let days = ledger.camera_days(&zone, &facts, &days, now, &snap.downtimes).await?;
        report.push(CameraCoverage { facts, days });
    }
    if csv {
        let name = match (days.first(), days.last()) {
            (Some(a), Some(b)) => format!("cradle-coverage-{}-{}.csv", a.key(), b.key()),
            _ => "cradle-coverage.csv".to_owned(),
        };
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            ],
            to_csv(&report),
        )
            .into_response());
    }
    let mut totals = Totals::default();
    let cams: Vec<Value> = report
        .iter()
        .map(|c| {
            let mut t = Totals::default();
            let days: Vec<Value> = c
                .days
                .iter()
                .map(|d| {
                    t.add(d);
                    day_json(d)
                })
                .collect();
            totals.merge(&t);
            json!({
                "id": c.facts.camera_id,
                "name": c.facts.name,
                "configured": c.facts.configured,
                "first_footage": c.facts.first_footage_us.map(format_rfc3339),
                "oldest_footage": c.facts.oldest_footage_us.map(format_rfc3339),
                "decommissioned_at": c.facts.decommissioned.as_ref().map(|d| format_rfc3339(d.0)),
                "totals": t.json(),
                "days": days,
            })
        })
        .collect();
    Ok(Json(json!({
        "from": format_rfc3339(from),
        "to": format_rfc3339(to),
        "time_zone": zone.name(),
        "generated_at": format_rfc3339(now),
        "causes": Cause::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "excused_causes": Cause::ALL.iter().filter(|c| c.excused()).map(|c| c.as_str()).collect::<Vec<_>>(),
        "cameras": cams,
        "totals": totals.json(),
    }))
    .into_response())
}

fn secs(us: i64) -> f64 {
    us as f64 / 1e6
}

fn footage_name(f: Footage) -> &'static str {
    match f {
        Footage::None => "none",
        Footage::Kept => "kept",
        Footage::PartlyExpired => "partly_expired",
        Footage::Expired => "expired",
    }
}

fn by_cause(d: &DayReport) -> BTreeMap<&'static str, i64> {
    let mut m = BTreeMap::new();
    for g in &d.account.gaps {
        *m.entry(g.cause.as_str()).or_default() += g.end_us - g.start_us;
    }
    m
}

fn day_json(d: &DayReport) -> Value {
    let a = &d.account;
    json!({
        "date": d.day.key(),
        "start": format_rfc3339(d.day.start_us),
        "end": format_rfc3339(d.day.end_us),
        "until": format_rfc3339(a.end_us),
        "span_seconds": secs(a.end_us - a.start_us),
        "recorded_seconds": secs(a.recorded_us),
        "gap_seconds": secs(a.gap_us),
        "excused_seconds": secs(a.excused_us),
        "coverage_percent": a.coverage_percent(),
        "closed": d.closed,
        "source": if d.from_ledger { "ledger" } else { "index" },
        "segments": d.segments,
        "footage": footage_name(d.footage),
        "footage_expired": matches!(d.footage, Footage::Expired | Footage::PartlyExpired),
        "gap_seconds_by_cause": by_cause(d).into_iter().map(|(k, v)| (k, secs(v))).collect::<BTreeMap<_, _>>(),
        "gaps": a.gaps.iter().map(|g| json!({
            "start": format_rfc3339(g.start_us),
            "end": format_rfc3339(g.end_us),
            "seconds": secs(g.end_us - g.start_us),
            "cause": g.cause.as_str(),
            "detail": g.detail,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Default)]
struct Totals {
    span_us: i64,
    recorded_us: i64,
    gap_us: i64,
    excused_us: i64,
    by_cause: BTreeMap<&'static str, i64>,
}

impl Totals {
    fn add(&mut self, d: &DayReport) {
        let a = &d.account;
        self.span_us += a.end_us - a.start_us;
        self.recorded_us += a.recorded_us;
        self.gap_us += a.gap_us;
        self.excused_us += a.excused_us;
        for (k, v) in by_cause(d) {
            *self.by_cause.entry(k).or_default() += v;
        }
    }

    fn merge(&mut self, o: &Totals) {
        self.span_us += o.span_us;
        self.recorded_us += o.recorded_us;
        self.gap_us += o.gap_us;
        self.excused_us += o.excused_us;
        for (k, v) in &o.by_cause {
            *self.by_cause.entry(k).or_default() += v;
        }
    }

    fn json(&self) -> Value {
        let expected = self.span_us - self.excused_us;
        json!({
            "span_seconds": secs(self.span_us),
            "recorded_seconds": secs(self.recorded_us),
            "gap_seconds": secs(self.gap_us),
            "excused_seconds": secs(self.excused_us),
            "coverage_percent": (expected > 0).then(|| (self.recorded_us as f64 * 100.0 / expected as f64 * 1000.0).round() / 1000.0),
            "gap_seconds_by_cause": self.by_cause.iter().map(|(k, v)| (*k, secs(*v))).collect::<BTreeMap<_, _>>(),
        })
    }
}

/// The CSV columns, in order (README, "Proof of coverage").
pub const CSV_COLUMNS: [&str; 13] = [
    "camera_id",
    "date",
    "row",
    "start",
    "end",
    "seconds",
    "cause",
    "detail",
    "recorded_seconds",
    "gap_seconds",
    "excused_seconds",
    "coverage_percent",
    "footage",
];

/// One `day` row per camera-day (start/end: the accounted span), then one `gap` row per
/// gap. RFC 4180: CRLF line ends, fields quoted when they hold a comma, quote or line
/// break.
fn to_csv(report: &[CameraCoverage]) -> String {
    let mut out = String::new();
    line(&mut out, CSV_COLUMNS.iter().map(|s| s.to_string()));
    for c in report {
        for d in &c.days {
            let a = &d.account;
            line(
                &mut out,
                [
                    text(&c.facts.camera_id),
                    d.day.key(),
                    "day".into(),
                    format_rfc3339(a.start_us),
                    format_rfc3339(a.end_us),
                    secs(a.end_us - a.start_us).to_string(),
                    String::new(),
                    String::new(),
                    secs(a.recorded_us).to_string(),
                    secs(a.gap_us).to_string(),
                    secs(a.excused_us).to_string(),
                    a.coverage_percent().map(|p| p.to_string()).unwrap_or_default(),
                    footage_name(d.footage).into(),
                ],
            );
            for g in &a.gaps {
                line(
                    &mut out,
                    [
                        text(&c.facts.camera_id),
                        d.day.key(),
                        "gap".into(),
                        format_rfc3339(g.start_us),
                        format_rfc3339(g.end_us),
                        secs(g.end_us - g.start_us).to_string(),
                        g.cause.as_str().into(),
                        text(&g.detail),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ],
                );
            }
        }
    }
    out
}

/// Free text for a spreadsheet: a leading `=`, `+`, `-` or `@` would be read as a
/// formula (camera error messages are not ours to trust), so it gets a `'` first.
fn text(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

fn line(out: &mut String, fields: impl IntoIterator<Item = String>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&f);
        }
    }
    out.push_str("\r\n");
}

async fn armed(State(app): State<AppState>, _: Auth<StatusReaders>) -> Result<Json<Value>> {
    let now = now_us();
    let zone = app.db.centre().await?.time_zone;
    let floor_days = app.config.policy.floor_days;
    let snap = app.coverage.snapshot().await?;
    let hubs = app.fleet.hubs();
    let cameras = armed::cameras_now(&app.coverage, &zone, &hubs, now, &snap, floor_days).await?;
    let live = app.alarms.all_live().await?;
    let no_frames = app.config.watchdog.no_frames.as_micros() as i64;
    let v = armed::verdict(&cameras, &live, floor_days, no_frames, now);
    Ok(Json(json!({
        "armed": v.armed,
        "reasons": v.reasons,
        "checked_at": format_rfc3339(now),
        "profile": app.config.policy.profile.name(),
        "floor_days": floor_days,
        "retention_days": app.config.retention.days,
        "no_frames_seconds": app.config.watchdog.no_frames.as_secs_f64(),
        "time_zone": zone.name(),
        "cameras": v.cameras,
        "live_alarms": live.iter().map(|a| json!({
            "id": a.id, "camera_id": a.camera_id, "kind": a.kind, "breaks_armed": a.breaks_armed,
            "raised_at": a.raised_at, "detail": a.detail,
        })).collect::<Vec<_>>(),
        "storage": super::storage_health(&app),
        "spool": {
            "backlog_segments": app.spool.segments(),
            "backlog_bytes": app.spool.bytes(),
            "uploaded_segments": app.spool.uploaded_segments.load(Ordering::Relaxed),
            "upload_failures": app.spool.upload_failures.load(Ordering::Relaxed),
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let mut s = String::new();
        line(&mut s, ["a".into(), "b,c".into(), "say \"hi\"".into(), "two\nlines".into(), text("=HYPERLINK(1)")]);
        assert_eq!(s, "a,\"b,c\",\"say \"\"hi\"\"\",\"two\nlines\",'=HYPERLINK(1)\r\n");
    }

    #[test]
    fn a_plus_sent_unencoded_is_put_back() {
        let a = instant("from", Some("2026-03-01T00:00:00 08:00")).unwrap();
        assert_eq!(a, instant("from", Some("2026-03-01T00:00:00+08:00")).unwrap());
        assert!(matches!(instant("from", None), Err(ApiError::BadRequest(m)) if m.contains("required")));
        assert!(matches!(instant("to", Some("yesterday")), Err(ApiError::BadRequest(m)) if m.starts_with("to:")));
    }
}
