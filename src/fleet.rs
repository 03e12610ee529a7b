//! The cameras being recorded, and starting, restarting and stopping them.
//!
//! Two sources, and the config file wins: the config file's `[[cameras]]` are fixed for
//! the run; cameras an admin added (API or `cradle centre camera-add`, stored in the
//! `cameras` table) start within seconds and restart when their settings change. A
//! table row whose id the config file also names is ignored while the file names it.
//! Nothing here stops recording a camera except the server's shutdown and the restart
//! that applies new connection settings (the recorder closes its segment first, so no
//! frame that arrived is lost).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::capture::{self, MainDb};
use crate::config::{CameraConfig, CameraId, RecordingConfig, SpoolConfig};
use crate::db::Db;
use crate::hub::{recorder_queue, CameraHub};
use crate::ingest;
use crate::record::spool::SpooledSegment;
use crate::record::uploader::SpoolStats;
use crate::record::Recorder;

/// Where a camera's settings come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[[cameras]]` in the config file: edited there, applied at restart.
    Config,
    /// Added by an admin; stored in the database, applied at once.
    Database,
}

/// What every camera's pipeline needs.
pub struct Starter {
    pub db: Db,
    pub recording: RecordingConfig,
    pub spool: SpoolConfig,
    pub spool_stats: Arc<SpoolStats>,
    pub done_tx: mpsc::Sender<SpooledSegment>,
    pub shutdown: CancellationToken,
}

struct Running {
    hub: Arc<CameraHub>,
    source: Source,
    stop: CancellationToken,
    ingest: JoinHandle<()>,
    recorder: JoinHandle<()>,
}

impl Running {
    /// Stops ingest and waits for the recorder to close the segment in progress.
    async fn finish(self) {
        self.stop.cancel();
        for (what, task) in [("ingest", self.ingest), ("recorder", self.recorder)] {
            if let Err(e) = task.await {
                warn!("camera {}: {what} task ended abnormally: {e}", self.hub.id());
            }
        }
    }
}

pub struct Fleet {
    running: RwLock<Vec<Running>>,
    /// `None` once shutdown began: nothing new starts.
    starter: Mutex<Option<Starter>>,
    config_ids: HashSet<CameraId>,
    /// One change (reconcile, shutdown) at a time.
    changing: tokio::sync::Mutex<()>,
}

impl Fleet {
    /// Starts the config file's cameras.
    pub fn start(config_cameras: &[CameraConfig], starter: Starter) -> Arc<Fleet> {
        let running = config_cameras.iter().map(|c| spawn(&starter, c.clone(), Source::Config)).collect();
        Arc::new(Fleet {
            running: RwLock::new(running),
            starter: Mutex::new(Some(starter)),
            config_ids: config_cameras.iter().map(|c| c.id.clone()).collect(),
            changing: tokio::sync::Mutex::new(()),
        })
    }

    /// Every camera being recorded, config file's first, in order.
    pub fn hubs(&self) -> Vec<Arc<CameraHub>> {
        self.running.read().unwrap().iter().map(|r| r.hub.clone()).collect()
    }

    pub fn hub(&self, id: &CameraId) -> Option<Arc<CameraHub>> {
        self.running.read().unwrap().iter().find(|r| r.hub.id() == id).map(|r| r.hub.clone())
    }

    pub fn source(&self, id: &CameraId) -> Option<Source> {
        self.running.read().unwrap().iter().find(|r| r.hub.id() == id).map(|r| r.source)
    }

    /// Whether the config file names this camera (so the database may not define it).
    pub fn in_config_file(&self, id: &CameraId) -> bool {
        self.config_ids.contains(id)
    }

    /// Brings the added cameras in line with the database: starts new rows and restarts
    /// cameras whose settings changed. Answers the ids started or restarted.
    pub async fn reconcile(&self, db: &Db) -> crate::centre::Result<Vec<CameraId>> {
        let _one_at_a_time = self.changing.lock().await;
        let wanted: Vec<CameraConfig> =
            db.added_cameras().await?.into_iter().filter(|c| !self.in_config_file(&c.id)).collect();
        let mut changed = Vec::new();
        for c in wanted {
            let current = self.hub(&c.id).map(|h| h.config.clone());
            if current.as_ref() == Some(&c) {
                continue;
            }
            if current.is_some() {
                let old = {
                    let mut running = self.running.write().unwrap();
                    let i = running.iter().position(|r| r.hub.id() == &c.id).expect("present above");
                    running.remove(i)
                };
                info!("camera {}: new settings; restarting its ingest", c.id);
                let why = "connection settings changed by an admin; reconnecting";
                if let Err(e) = db.insert_event(Some(c.id.as_str()), crate::time::now_us(), "settings_changed", why).await {
                    warn!("camera {}: cannot record the restart: {e}", c.id);
                }
                old.finish().await;
            } else {
                info!("camera {}: added by an admin; starting", c.id);
            }
            let new = match self.starter.lock().unwrap().as_ref() {
                Some(s) => spawn(s, c.clone(), Source::Database),
                None => break, // shutting down
            };
            self.running.write().unwrap().push(new);
            changed.push(c.id);
        }
        Ok(changed)
    }

    /// Shutdown: starts nothing more, stops every camera and waits for its recorder to
    /// close its segment. The uploader's queue closes when the last recorder is gone.
    pub async fn stop(&self) {
        let _one_at_a_time = self.changing.lock().await;
        drop(self.starter.lock().unwrap().take());
        let all: Vec<Running> = std::mem::take(&mut *self.running.write().unwrap());
        let mut finishing = tokio::task::JoinSet::new();
        for r in all {
            finishing.spawn(r.finish());
        }
        while finishing.join_next().await.is_some() {}
    }
}

fn spawn(s: &Starter, config: CameraConfig, source: Source) -> Running {
    let hub = CameraHub::new(config);
    let (tx, rx) = recorder_queue();
    let rec = Recorder::new(
        hub.clone(),
        MainDb::new(s.db.clone()),
        s.recording.clone(),
        s.spool.clone(),
        s.spool_stats.clone(),
        s.done_tx.clone(),
    );
    let stop = s.shutdown.child_token();
    Running {
        recorder: capture::spawn(rec.run(rx)),
        ingest: ingest::spawn(hub.clone(), tx, Some(s.db.clone()), stop.clone()),
        hub,
        source,
        stop,
    }
}
