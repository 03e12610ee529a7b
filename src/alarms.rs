//! Alarms: what threatens the armed state, persisted, acknowledged, and delivered.
//!
//! Anything that sees a cause (the watchdog, the reconciler, a decommission) calls
//! [`Alarms::raise`]; when the cause is gone it calls [`Alarms::clear`]. There is at most
//! one *live* (uncleared) alarm per camera and kind, so a watchdog that raises every
//! second makes one alarm, not thousands. An operator acknowledges with a note. An alarm
//! is over only when it is both cleared and acknowledged (MISSION: "the alarm stays
//! until an operator acknowledges it and the cause is gone"); rows are never deleted.
//!
//! Delivery: every raise, clear and acknowledgement is POSTed to the configured webhook
//! as JSON signed with HMAC-SHA256, retried with backoff; a raised alarm nobody has
//! acknowledged is sent again after `renotify_initial`, then twice as long each time up
//! to `renotify_max` (the schedule is persisted, so a restart does not reset it).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::AlarmsConfig;
use crate::db::{Db, DbError};
use crate::time::{format_rfc3339, now_us, WallUs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// The camera delivered no frame for `watchdog.no_frames`.
    NoFrames,
    /// Too many reconnects in a short window: the camera or the network is unstable.
    ReconnectStorm,
    /// Frames still flow, but far fewer per second than the camera's own baseline.
    FrameRateCollapse,
    /// Bytes per second far below the camera's baseline (a covered lens, a failing encoder).
    BitrateCollapse,
    /// The camera's clock (or its RTP clock rate) disagrees with the server's.
    ClockDrift,
    /// Uploads to object storage have been failing; footage waits in the spool.
    UploadFailing,
    /// The spool holds footage that has waited too long for upload.
    SpoolBacklog,
    /// The spool is full: new footage is being dropped.
    SpoolFull,
    /// At the current bytes per day the store cannot hold the retention floor.
    StorageForecast,
    /// Indexed footage whose object is gone from the store.
    FootageMissing,
    /// A camera recording for longer than the floor has less footage than the floor.
    RetentionShort,
    /// A camera was decommissioned (by an admin, with a reason).
    Decommissioned,
    /// Tamper: the picture is black or uniform (lens covered, painted, or no light).
    LensCovered,
    /// Tamper: frames flow but the picture does not change.
    PictureFrozen,
    /// Tamper: far less detail than the camera normally shows (defocused, smeared dome).
    PictureBlurred,
    /// Tamper: the view no longer matches the reference (the camera was turned or moved).
    CameraMoved,
}

pub const ALL_KINDS: [AlarmKind; 16] = [
    AlarmKind::NoFrames,
    AlarmKind::ReconnectStorm,
    AlarmKind::FrameRateCollapse,
    AlarmKind::BitrateCollapse,
    AlarmKind::ClockDrift,
    AlarmKind::UploadFailing,
    AlarmKind::SpoolBacklog,
    AlarmKind::SpoolFull,
    AlarmKind::StorageForecast,
    AlarmKind::FootageMissing,
    AlarmKind::RetentionShort,
    AlarmKind::Decommissioned,
    AlarmKind::LensCovered,
    AlarmKind::PictureFrozen,
    AlarmKind::PictureBlurred,
    AlarmKind::CameraMoved,
];

/// What the snapshot task's tamper checks raise.
pub const TAMPER_KINDS: [AlarmKind; 4] =
    [AlarmKind::LensCovered, AlarmKind::PictureFrozen, AlarmKind::PictureBlurred, AlarmKind::CameraMoved];

impl AlarmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::NoFrames => "no_frames",
            AlarmKind::ReconnectStorm => "reconnect_storm",
            AlarmKind::FrameRateCollapse => "frame_rate_collapse",
            AlarmKind::BitrateCollapse => "bitrate_collapse",
            AlarmKind::ClockDrift => "clock_drift",
            AlarmKind::UploadFailing => "upload_failing",
            AlarmKind::SpoolBacklog => "spool_backlog",
            AlarmKind::SpoolFull => "spool_full",
            AlarmKind::StorageForecast => "storage_forecast",
            AlarmKind::FootageMissing => "footage_missing",
            AlarmKind::RetentionShort => "retention_short",
            AlarmKind::Decommissioned => "decommissioned",
            AlarmKind::LensCovered => "lens_covered",
            AlarmKind::PictureFrozen => "picture_frozen",
            AlarmKind::PictureBlurred => "picture_blurred",
            AlarmKind::CameraMoved => "camera_moved",
        }
    }

    pub fn parse(s: &str) -> Option<AlarmKind> {
        ALL_KINDS.into_iter().find(|k| k.as_str() == s)
    }

    /// True when a live alarm of this kind means footage is not being recorded or kept
    /// (the centre is not armed), rather than a risk or a degradation. Tamper alarms do
    /// not: the camera is still recorded (what it recorded is the evidence of the
    /// tampering), and darkness at night reads as a covered lens by design.
    pub fn breaks_armed(self) -> bool {
        matches!(
            self,
            AlarmKind::NoFrames | AlarmKind::SpoolFull | AlarmKind::FootageMissing | AlarmKind::RetentionShort
        )
    }
}

/// An alarm as stored and as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Alarm {
    pub id: i64,
    pub camera_id: Option<String>,
    pub kind: String,
    /// `raised` (cause present, nobody acknowledged), `acknowledged` (cause present),
    /// `cleared` (cause gone, not yet acknowledged) or `closed` (both).
    pub state: &'static str,
    pub detail: String,
    pub raised_at: String,
    pub updated_at: String,
    pub cleared_at: Option<String>,
    pub clear_detail: Option<String>,
    pub acknowledged_at: Option<String>,
    pub acknowledged_by: Option<String>,
    pub ack_note: Option<String>,
    pub notify_count: i64,
    pub breaks_armed: bool,
    /// The picture the alarm was raised on (tamper alarms):
    /// `/api/v1/alarms/{id}/snapshot.jpg`.
    pub snapshot: Option<String>,
    #[serde(skip)]
    pub raised_at_us: WallUs,
    #[serde(skip)]
    pub notified_at_us: Option<WallUs>,
}

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("no alarm {0}")]
    NotFound(i64),
    #[error("alarm {id} was already acknowledged by {by} at {at}")]
    AlreadyAcknowledged { id: i64, by: String, at: String },
    #[error("{0}")]
    Db(#[from] DbError),
}

/// Which alarms to list.
#[derive(Clone, Debug, Default)]
pub struct AlarmQuery {
    /// Only alarms that are not over (not both cleared and acknowledged).
    pub open_only: bool,
    pub camera: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<i64>,
}

macro_rules! columns {
    () => {
        "id, camera_id, kind, detail, raised_at_us, updated_at_us, cleared_at_us, clear_detail, \
         acked_at_us, acked_by, ack_note, notified_at_us, notify_count, \
         (SELECT s.alarm_id FROM alarm_snapshots s WHERE s.alarm_id = alarms.id) AS snapshot_of"
    };
}

fn alarm_from(r: &sqlx::any::AnyRow) -> Result<Alarm, sqlx::Error> {
    let cleared: Option<i64> = r.try_get("cleared_at_us")?;
    let acked: Option<i64> = r.try_get("acked_at_us")?;
    let kind: String = r.try_get("kind")?;
    let raised: i64 = r.try_get("raised_at_us")?;
    Ok(Alarm {
        id: r.try_get("id")?,
        camera_id: r.try_get("camera_id")?,
        state: match (cleared.is_some(), acked.is_some()) {
            (false, false) => "raised",
            (false, true) => "acknowledged",
            (true, false) => "cleared",
            (true, true) => "closed",
        },
        breaks_armed: AlarmKind::parse(&kind).is_some_and(AlarmKind::breaks_armed),
        kind,
        detail: r.try_get("detail")?,
        raised_at: format_rfc3339(raised),
        updated_at: format_rfc3339(r.try_get("updated_at_us")?),
        cleared_at: cleared.map(format_rfc3339),
        clear_detail: r.try_get("clear_detail")?,
        acknowledged_at: acked.map(format_rfc3339),
        acknowledged_by: r.try_get("acked_by")?,
        ack_note: r.try_get("ack_note")?,
        notify_count: r.try_get("notify_count")?,
        snapshot: r.try_get::<Option<i64>, _>("snapshot_of")?.map(|id| format!("/api/v1/alarms/{id}/snapshot.jpg")),
        raised_at_us: raised,
        notified_at_us: r.try_get("notified_at_us")?,
    })
}

/// What happened to an alarm, as the webhook receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Raised,
    Renotify,
    Cleared,
    Acknowledged,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Raised => "raised",
            Event::Renotify => "renotify",
            Event::Cleared => "cleared",
            Event::Acknowledged => "acknowledged",
        }
    }
}

/// The handle every part of the server raises, clears and reads alarms through.
#[derive(Clone)]
pub struct Alarms {
    db: Db,
    inner: Arc<Inner>,
}

struct Inner {
    cfg: AlarmsConfig,
    /// Serialises raise/clear so "at most one live alarm per camera and kind" holds
    /// within this process without a database-specific upsert.
    lock: tokio::sync::Mutex<()>,
    http: Option<http_client::Client>,
    /// Where this server says it is, in webhook bodies (its public URL or listen address).
    origin: String,
    /// Wakes the re-notifier when an alarm is raised: it sleeps until the next
    /// re-notification is due, and a new alarm may be due before that.
    raised: tokio::sync::Notify,
}

impl Alarms {
    pub fn new(db: Db, cfg: AlarmsConfig, origin: String) -> Alarms {
        let http = cfg.webhook_url.as_ref().map(|_| {
            http_client::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client for the alarm webhook")
        });
        let raised = tokio::sync::Notify::new();
        Alarms { db, inner: Arc::new(Inner { cfg, lock: tokio::sync::Mutex::new(()), http, origin, raised }) }
    }

    /// Raises an alarm of `kind` for `camera` (None: server-wide), or refreshes the
    /// detail of the live one. Returns the alarm when it is new.
    pub async fn raise(&self, camera: Option<&str>, kind: AlarmKind, detail: &str) -> Result<Option<Alarm>, DbError> {
        self.raise_with(camera, kind, detail, None).await
    }

    /// [`Alarms::raise`] with the picture that shows the cause (a JPEG and when its
    /// keyframe arrived), kept with a new alarm.
    pub async fn raise_with_snapshot(
        &self,
        camera: &str,
        kind: AlarmKind,
        detail: &str,
        jpeg: &[u8],
        taken_us: WallUs,
    ) -> Result<Option<Alarm>, DbError> {
        self.raise_with(Some(camera), kind, detail, Some((jpeg, taken_us))).await
    }

    /// The JPEG kept with alarm `id`, and when it was taken.
    pub async fn snapshot(&self, id: i64) -> Result<Option<(Vec<u8>, WallUs)>, DbError> {
        let row = sqlx::query("SELECT jpeg, taken_us FROM alarm_snapshots WHERE alarm_id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| -> Result<_, sqlx::Error> { Ok((r.try_get("jpeg")?, r.try_get("taken_us")?)) }).transpose()?)
    }

    async fn raise_with(
        &self,
        camera: Option<&str>,
        kind: AlarmKind,
        detail: &str,
        snapshot: Option<(&[u8], WallUs)>,
    ) -> Result<Option<Alarm>, DbError> {
        let now = now_us();
        let _g = self.inner.lock.lock().await;
        if let Some(live) = self.live(camera, kind).await? {
            if live.detail != detail {
                sqlx::query("UPDATE alarms SET detail = $1, updated_at_us = $2 WHERE id = $3")
                    .bind(detail)
                    .bind(now)
                    .bind(live.id)
                    .execute(self.db.pool())
                    .await?;
            }
            return Ok(None);
        }
        let row = sqlx::query(concat!(
            "INSERT INTO alarms (camera_id, kind, detail, raised_at_us, updated_at_us, notified_at_us, notify_count)
             VALUES ($1, $2, $3, $4, $4, $4, 1) RETURNING ", columns!(), ""))
        .bind(camera)
        .bind(kind.as_str())
        .bind(detail)
        .bind(now)
        .fetch_one(self.db.pool())
        .await?;
        let mut alarm = alarm_from(&row)?;
        if let Some((jpeg, taken)) = snapshot {
            sqlx::query("INSERT INTO alarm_snapshots (alarm_id, taken_us, jpeg) VALUES ($1, $2, $3)")
                .bind(alarm.id)
                .bind(taken)
                .bind(jpeg.to_vec())
                .execute(self.db.pool())
                .await?;
            alarm.snapshot = Some(format!("/api/v1/alarms/{}/snapshot.jpg", alarm.id));
        }
        drop(_g);
        // One re-notifier: a raise while it is busy leaves a permit for its next wait.
        self.inner.raised.notify_one();
        warn!(camera = camera.unwrap_or("-"), kind = kind.as_str(), "alarm raised: {detail}");
        self.deliver(Event::Raised, &alarm);
        Ok(Some(alarm))
    }

    /// Clears the live alarm of `kind` for `camera`, if there is one: the cause is gone.
    pub async fn clear(&self, camera: Option<&str>, kind: AlarmKind, detail: &str) -> Result<Option<Alarm>, DbError> {
        let now = now_us();
        let _g = self.inner.lock.lock().await;
        let Some(live) = self.live(camera, kind).await? else { return Ok(None) };
        let row = sqlx::query(concat!(
            "UPDATE alarms SET cleared_at_us = $1, clear_detail = $2 WHERE id = $3 RETURNING ", columns!(), ""))
        .bind(now)
        .bind(detail)
        .bind(live.id)
        .fetch_one(self.db.pool())
        .await?;
        let alarm = alarm_from(&row)?;
        drop(_g);
        info!(camera = camera.unwrap_or("-"), kind = kind.as_str(), "alarm cleared: {detail}");
        self.deliver(Event::Cleared, &alarm);
        Ok(Some(alarm))
    }

    /// The live (uncleared) alarm of `kind` for `camera`.
    pub async fn live(&self, camera: Option<&str>, kind: AlarmKind) -> Result<Option<Alarm>, DbError> {
        let row = match camera {
            Some(c) => {
                sqlx::query(concat!(
                    "SELECT ", columns!(), " FROM alarms WHERE camera_id = $1 AND kind = $2 AND cleared_at_us IS NULL
                     ORDER BY id DESC LIMIT 1"))
                .bind(c)
                .bind(kind.as_str())
                .fetch_optional(self.db.pool())
                .await?
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ", columns!(), " FROM alarms WHERE camera_id IS NULL AND kind = $1 AND cleared_at_us IS NULL
                     ORDER BY id DESC LIMIT 1"))
                .bind(kind.as_str())
                .fetch_optional(self.db.pool())
                .await?
            }
        };
        Ok(row.as_ref().map(alarm_from).transpose()?)
    }

    /// Every live alarm (cause still present), oldest first.
    pub async fn all_live(&self) -> Result<Vec<Alarm>, DbError> {
        let rows = sqlx::query(concat!("SELECT ", columns!(), " FROM alarms WHERE cleared_at_us IS NULL ORDER BY id"))
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(alarm_from).collect::<Result<_, _>>()?)
    }

    pub async fn get(&self, id: i64) -> Result<Option<Alarm>, DbError> {
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM alarms WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.as_ref().map(alarm_from).transpose()?)
    }

    /// Alarms newest first.
    pub async fn list(&self, q: &AlarmQuery) -> Result<Vec<Alarm>, DbError> {
        let mut sql = concat!("SELECT ", columns!(), " FROM alarms WHERE 1 = 1").to_owned();
        let mut binds: Vec<String> = Vec::new();
        if q.open_only {
            sql.push_str(" AND (cleared_at_us IS NULL OR acked_at_us IS NULL)");
        }
        for (col, v) in [("camera_id", &q.camera), ("kind", &q.kind)] {
            if let Some(v) = v {
                binds.push(v.clone());
                sql.push_str(&format!(" AND {col} = ${}", binds.len()));
            }
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len() + 1));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.bind(q.limit.unwrap_or(500).clamp(1, 5000)).fetch_all(self.db.pool()).await?;
        Ok(rows.iter().map(alarm_from).collect::<Result<_, _>>()?)
    }

    /// An operator acknowledges an alarm with a note. The alarm stays (state
    /// `acknowledged`) until its cause is gone.
    pub async fn acknowledge(&self, id: i64, by: &str, note: &str) -> Result<Alarm, AckError> {
        let now = now_us();
        let _g = self.inner.lock.lock().await;
        let a = self.get(id).await?.ok_or(AckError::NotFound(id))?;
        if let (Some(by), Some(at)) = (a.acknowledged_by, a.acknowledged_at) {
            return Err(AckError::AlreadyAcknowledged { id, by, at });
        }
        let row = sqlx::query(concat!(
            "UPDATE alarms SET acked_at_us = $1, acked_by = $2, ack_note = $3 WHERE id = $4 AND acked_at_us IS NULL
             RETURNING ", columns!(), ""))
        .bind(now)
        .bind(by)
        .bind(note)
        .bind(id)
        .fetch_one(self.db.pool())
        .await
        .map_err(DbError::from)?;
        let alarm = alarm_from(&row).map_err(DbError::from)?;
        drop(_g);
        self.deliver(Event::Acknowledged, &alarm);
        if alarm.kind == AlarmKind::Decommissioned.as_str() {
            // Its acknowledgement is what closes a decommission's alarm; the watchdog
            // looks at decommissions when a camera changes, and this counts as one.
            self.db.cameras_changed();
        }
        Ok(alarm)
    }

    /// Sends again every raised alarm nobody has acknowledged whose next notification is
    /// due: `renotify_initial` after the previous one, doubling up to `renotify_max`.
    pub async fn renotify_due(&self) -> Result<usize, DbError> {
        Ok(self.renotify_pass().await?.0)
    }

    /// [`Alarms::renotify_due`], and when the next re-notification falls due (None: no
    /// unacknowledged alarm is live).
    async fn renotify_pass(&self) -> Result<(usize, Option<WallUs>), DbError> {
        let now = now_us();
        let live = self.all_live().await?;
        let mut sent = 0;
        let mut next_due: Option<WallUs> = None;
        for a in live.into_iter().filter(|a| a.acknowledged_at.is_none()) {
            let last = a.notified_at_us.unwrap_or(a.raised_at_us);
            let due = last + renotify_delay(&self.inner.cfg, a.notify_count).as_micros() as i64;
            if now < due {
                next_due = Some(next_due.map_or(due, |n| n.min(due)));
                continue;
            }
            let row = sqlx::query(concat!(
                "UPDATE alarms SET notified_at_us = $1, notify_count = notify_count + 1 WHERE id = $2 RETURNING ", columns!(), ""))
            .bind(now)
            .bind(a.id)
            .fetch_one(self.db.pool())
            .await?;
            let a = alarm_from(&row)?;
            warn!(camera = a.camera_id.as_deref().unwrap_or("-"), kind = a.kind, "alarm still unacknowledged: {}", a.detail);
            self.deliver(Event::Renotify, &a);
            sent += 1;
            let due = now + renotify_delay(&self.inner.cfg, a.notify_count).as_micros() as i64;
            next_due = Some(next_due.map_or(due, |n| n.min(due)));
        }
        Ok((sent, next_due))
    }

    /// Runs [`Alarms::renotify_due`] until `stop`: whenever the next re-notification falls
    /// due or an alarm is raised, and at least every [`RENOTIFY_RECHECK`] (an alarm
    /// acknowledged or raised by another process sharing the database).
    pub async fn run_renotifier(self, stop: CancellationToken) {
        loop {
            let wait = match self.renotify_pass().await {
                Ok((_, Some(due))) => Duration::from_micros((due - now_us()).max(0) as u64).min(RENOTIFY_RECHECK),
                Ok((_, None)) => RENOTIFY_RECHECK,
                Err(e) => {
                    warn!("alarm re-notification: {e}");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(100))) => {}
                _ = self.inner.raised.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Posts the event to the webhook in the background, retrying with backoff. Delivery
    /// never blocks whoever raised the alarm.
    fn deliver(&self, event: Event, alarm: &Alarm) {
        let (Some(http), Some(url), Some(secret)) =
            (self.inner.http.clone(), self.inner.cfg.webhook_url.clone(), self.inner.cfg.webhook_secret.clone())
        else {
            return;
        };
        let body = serde_json::to_vec(&serde_json::json!({
            "event": event.as_str(),
            "origin": self.inner.origin,
            "sent_at": format_rfc3339(now_us()),
            "alarm": alarm,
        }))
        .expect("alarm serialises");
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            for attempt in 1..=WEBHOOK_ATTEMPTS {
                let ts = (now_us() / 1_000_000).to_string();
                let req = http
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .header("x-cradle-event", event.as_str())
                    .header("x-cradle-timestamp", &ts)
                    .header("x-cradle-signature", sign(&secret, &ts, &body))
                    .body(body.clone());
                match req.send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => warn!("alarm webhook {url}: HTTP {} (attempt {attempt} of {WEBHOOK_ATTEMPTS})", r.status()),
                    Err(e) => warn!("alarm webhook {url}: {e} (attempt {attempt} of {WEBHOOK_ATTEMPTS})"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
            warn!("alarm webhook {url}: gave up on a {} notification after {WEBHOOK_ATTEMPTS} attempts", event.as_str());
        });
    }
}

const WEBHOOK_ATTEMPTS: u32 = 8;

/// `sha256=HEX(HMAC-SHA256(secret, "{timestamp}.{body}"))`: the receiver recomputes it
/// with the shared secret, and rejects old timestamps to stop replays.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The re-notifier looks at the alarms at least this often, due or not.
const RENOTIFY_RECHECK: Duration = Duration::from_secs(60);

/// The wait after the `count`-th notification before the next one.
fn renotify_delay(cfg: &AlarmsConfig, count: i64) -> Duration {
    let doublings = (count - 1).clamp(0, 20) as u32;
    cfg.renotify_initial.saturating_mul(1 << doublings).min(cfg.renotify_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alarms on a fresh SQLite store (kept while the directory lives) with this
    /// re-notification schedule.
    async fn sqlite_alarms(renotify_initial: Duration, renotify_max: Duration) -> (tempfile::TempDir, Alarms) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/a.db", dir.path().display())).await.unwrap();
        let cfg = AlarmsConfig { renotify_initial, renotify_max, ..Default::default() };
        (dir, Alarms::new(db, cfg, "test".into()))
    }

    /// The schedule end to end on a real (SQLite) store: one live alarm per camera and
    /// kind, re-sent only when due, with the delay doubling, and never after an
    /// acknowledgement.
    #[tokio::test]
    async fn unacknowledged_alarms_are_sent_again_with_backoff_until_acknowledged() {
        let (_dir, alarms) = sqlite_alarms(Duration::from_millis(500), Duration::from_secs(60)).await;
        let a = alarms.raise(Some("cam"), AlarmKind::NoFrames, "no frame for 11 s").await.unwrap().unwrap();
        assert_eq!(a.state, "raised");
        assert!(alarms.raise(Some("cam"), AlarmKind::NoFrames, "no frame for 12 s").await.unwrap().is_none());
        assert_eq!(alarms.live(Some("cam"), AlarmKind::NoFrames).await.unwrap().unwrap().detail, "no frame for 12 s");
        assert_eq!(alarms.renotify_due().await.unwrap(), 0, "not yet due");
        tokio::time::sleep(Duration::from_millis(550)).await;
        assert_eq!(alarms.renotify_due().await.unwrap(), 1);
        assert_eq!(alarms.get(a.id).await.unwrap().unwrap().notify_count, 2);
        // The next one waits twice as long.
        tokio::time::sleep(Duration::from_millis(550)).await;
        assert_eq!(alarms.renotify_due().await.unwrap(), 0, "the second wait is 1 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(alarms.renotify_due().await.unwrap(), 1);
        alarms.acknowledge(a.id, "op", "camera unplugged by cleaner").await.unwrap();
        assert!(matches!(alarms.acknowledge(a.id, "op", "again").await, Err(AckError::AlreadyAcknowledged { .. })));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(alarms.renotify_due().await.unwrap(), 0, "acknowledged alarms are not re-sent");
        let closed = alarms.clear(Some("cam"), AlarmKind::NoFrames, "frames again").await.unwrap().unwrap();
        assert_eq!(closed.state, "closed");
        // The cause coming back is a new alarm.
        let b = alarms.raise(Some("cam"), AlarmKind::NoFrames, "no frame for 10 s").await.unwrap().unwrap();
        assert_ne!(a.id, b.id);
    }

    /// The running re-notifier wakes for an alarm raised while it sleeps, and again when
    /// its next re-notification falls due: not at its one-minute recheck.
    #[tokio::test]
    async fn the_renotifier_wakes_when_an_alarm_is_raised_and_when_it_falls_due() {
        let (_dir, alarms) = sqlite_alarms(Duration::from_millis(300), Duration::from_millis(300)).await;
        let stop = CancellationToken::new();
        let runner = tokio::spawn(alarms.clone().run_renotifier(stop.clone()));
        // No alarm: the runner now sleeps for its recheck (a minute).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let a = alarms.raise(None, AlarmKind::UploadFailing, "storage down").await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(1400)).await;
        let count = alarms.get(a.id).await.unwrap().unwrap().notify_count;
        stop.cancel();
        runner.await.unwrap();
        // Sent at the raise, then every 300 ms: 1 + about 4 re-notifications in 1.4 s.
        assert!((3..=6).contains(&count), "notify_count {count} after 1.4 s at one re-notification per 300 ms");
    }

    #[test]
    fn kinds_round_trip() {
        for k in ALL_KINDS {
            assert_eq!(AlarmKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AlarmKind::parse("nope"), None);
    }

    #[test]
    fn renotify_backs_off_to_the_cap() {
        let cfg = AlarmsConfig {
            renotify_initial: Duration::from_secs(300),
            renotify_max: Duration::from_secs(3600),
            ..Default::default()
        };
        let d: Vec<u64> = (1..=6).map(|c| renotify_delay(&cfg, c).as_secs()).collect();
        assert_eq!(d, [300, 600, 1200, 2400, 3600, 3600]);
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // RFC 4231-style check against an independently computed value
        // (python3 -c 'import hmac,hashlib;print(hmac.new(b"k",b"1.{}",hashlib.sha256).hexdigest())').
        assert_eq!(
            sign("k", "1", b"{}"),
            "sha256=3dd49b2593d0f9a349e9e71c4bde3e2b862c2be4003fe9b4ba81332029310158"
        );
    }
}
