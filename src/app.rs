//! Wiring: builds the pipeline from a config and runs it until shutdown.
//!
//! `App::build` does everything that can fail at start-up (bind, database, storage
//! configuration, spool recovery) so errors surface before anything runs;
//! `run_until_stopped` starts one ingest task and one recorder per camera, the
//! uploader and the HTTP server, and on shutdown stops them in the order that keeps
//! footage: ingest first, then recorders close their segments, then the uploader
//! drains the spool (bounded by a deadline so SIGTERM exits within 30 s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::db::Db;
use crate::fleet::{Fleet, Starter};
use crate::record::spool::{self, SpooledSegment};
use crate::record::uploader::{SpoolStats, Uploader};
use crate::storage::Storage;
use crate::time::{format_rfc3339, now_us};
use crate::camsim;

/// After the recorders stop, how long the uploader may keep draining the spool.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);
/// How often the server notes that it is alive in the life-sign file ([`crate::lifesign`]);
/// a crash's downtime starts at most this long before the crash.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often the same goes into the database (`server_runs.alive_us`).
const DB_HEARTBEAT: Duration = Duration::from_secs(60);
/// How often the database's added cameras are checked for new or changed ones when
/// nobody said they changed: the API and the CLI do ([`crate::cli_changes`]), and each
/// such word brings a check at once; this catches a CLI whose word could not reach us.
const RECONCILE_CAMERAS: Duration = Duration::from_secs(60);

pub struct App {
    config: Config,
    listener: TcpListener,
    camsim_listener: Option<TcpListener>,
    db: Db,
    storage: Storage,
    recovered: Vec<SpooledSegment>,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding server.listen {}", config.listen))?;
        let camsim_listener = match &config.demo {
            Some(d) => Some(
                TcpListener::bind(d.camsim_listen)
                    .await
                    .with_context(|| format!("binding demo.camsim_listen {}", d.camsim_listen))?,
            ),
            None => None,
        };
        let db = Db::connect(&config.database_url).await.context("opening the database (database.url)")?;
        let storage = Storage::from_config(&config.storage)
            .context("configuring storage")?
            .lock_retention_days(config.policy.floor_days);
        match storage.check_object_lock().await {
            Ok(()) => {}
            // The bucket said no: writing unlocked footage while the config promises
            // locked footage would be a silent downgrade. Refuse to start.
            Err(e @ crate::storage::StorageError::Config(_)) => return Err(e).context("checking S3 Object Lock"),
            // Unreachable: record into the spool anyway; a bucket without Object Lock
            // refuses the locked PUTs, which raises the upload alarms.
            Err(e) => warn!("storage {}: cannot check Object Lock now: {e}; footage waits in the spool", storage.description),
        }
        let (recovered, problems) = spool::recover(&config.spool.dir)
            .with_context(|| format!("recovering the spool in {}", config.spool.dir.display()))?;
        for p in &problems {
            warn!("spool: {p}");
        }
        if !recovered.is_empty() {
            info!(segments = recovered.len(), "recovered spooled segments; they upload first");
        }
        Ok(App { config, listener, camsim_listener, db, storage, recovered })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let App { config, listener, camsim_listener, db, storage, recovered } = self;
        let run_id = format!("{}-{}", now_us(), std::process::id());
        let started = now_us();
        audit_config_change(&db, &config).await.context("auditing the configuration")?;
        let life_sign = crate::lifesign::LifeSign::new(&config.data_dir);
        let last_sign = life_sign.last();
        let last_sign = last_sign.as_ref().map(|(run, at)| (run.as_str(), *at));
        for (dead, alive) in db.begin_server_run(&run_id, started, last_sign).await? {
            let detail = format!(
                "server run {dead} ended without a clean stop (crash, kill -9 or power loss); last alive {}",
                format_rfc3339(alive)
            );
            warn!("{detail}");
            db.insert_event(None, alive, "server_crashed", &detail).await?;
        }
        db.insert_event(None, started, "server_started", &format!("server run {run_id} started")).await?;
        if let Err(e) = storage.probe().await {
            warn!("storage {} unreachable at start: {e}; footage waits in the spool", storage.description);
        }

        // The clock of the periodic jobs below (and the watchdog's, the snapshots').
        tokio::spawn(crate::pulse::drive());
        let mut aux = JoinSet::new();
        if let Some(l) = camsim_listener {
            let n = config.demo.as_ref().map(|d| d.simulated_cameras).unwrap_or(0);
            let token = shutdown.clone();
            info!("demo: simulated cameras at rtsp://{}/cam1..cam{n}", l.local_addr()?);
            aux.spawn(async move {
                let opts = camsim::Options::new(n);
                if let Err(e) = camsim::serve(l, opts, token).await {
                    warn!("camsim: {e:#}");
                }
            });
        }
        {
            // The life-sign file every HEARTBEAT, the database every DB_HEARTBEAT (see
            // crate::lifesign for why not the database every time).
            let (db, run_id) = (db.clone(), run_id.clone());
            let mut beats = 0u64;
            let mut file_failing = false;
            aux.spawn(crate::pulse::every(HEARTBEAT, shutdown.clone(), move || {
                let now = now_us();
                match life_sign.beat(&run_id, now) {
                    Ok(()) => file_failing = false,
                    Err(e) if !std::mem::replace(&mut file_failing, true) => warn!("heartbeat: cannot write the life-sign file: {e}"),
                    Err(_) => {}
                }
                // While the file cannot be written, the database is the only record.
                let to_db = file_failing || beats.is_multiple_of((DB_HEARTBEAT.as_secs() / HEARTBEAT.as_secs()).max(1));
                beats += 1;
                let (db, run_id) = (db.clone(), run_id.clone());
                async move {
                    if to_db {
                        if let Err(e) = db.heartbeat(&run_id, now).await {
                            warn!("heartbeat: {e}");
                        }
                    }
                }
            }));
        }

        let spool_stats = Arc::new(SpoolStats::default());
        let (done_tx, done_rx) = mpsc::channel(1024);
        let uploader = Uploader {
            storage: storage.clone(),
            db: db.clone(),
            stats: spool_stats.clone(),
            drain_deadline: DRAIN_DEADLINE,
        };
        let uploader_task = tokio::spawn(uploader.run(recovered, done_rx));

        crate::capture::set_batch(config.recording.batch);
        // A camera read every 2.5 s must look neither silent to the no-frames alarm nor
        // jerky to the frame-rate windows: a quarter of either at most.
        let watchdog = &config.watchdog;
        let longest = (watchdog.no_frames / 4).min(watchdog.rate_window / 4).min(crate::capture::LONGEST_SLEEP);
        crate::capture::set_longest_sleep(longest);
        let fleet = Fleet::start(
            &config.cameras,
            Starter {
                db: db.clone(),
                recording: config.recording.clone(),
                spool: config.spool.clone(),
                spool_stats: spool_stats.clone(),
                done_tx,
                shutdown: shutdown.clone(),
            },
        );
        // Cameras added by an admin: now, whenever this process or the CLI (which writes
        // the database directly, then tells us through crate::cli_changes) changes one,
        // and once a minute for changes nobody told us about.
        aux.spawn(crate::cli_changes::watch(config.data_dir.clone(), db.clone(), shutdown.clone()));
        {
            let (fleet, db, stop) = (fleet.clone(), db.clone(), shutdown.clone());
            let mut changes = db.watch_cameras();
            aux.spawn(async move {
                loop {
                    changes.mark_unchanged();
                    if let Err(e) = fleet.reconcile(&db).await {
                        warn!("cameras added by admins: {e}");
                    }
                    tokio::select! {
                        _ = crate::pulse::after(RECONCILE_CAMERAS) => {}
                        Ok(()) = changes.changed() => {}
                        _ = stop.cancelled() => return,
                    }
                }
            });
        }

        // The proof of coverage: closes the days that ended into the ledger now, then
        // every few minutes, so the sweeper below never outruns it.
        let coverage = Arc::new(crate::coverage::Ledger::new(db.clone(), Some(fleet.clone()), &config));
        {
            let ledger = coverage.clone();
            aux.spawn(crate::pulse::every(crate::coverage::LEDGER_PASS, shutdown.clone(), move || {
                let ledger = ledger.clone();
                async move { ledger.pass(now_us()).await }
            }));
        }

        // Expired footage: now (which also finishes a sweep a crash interrupted), then
        // every [retention] sweep_minutes. Aborted at shutdown like a crash: safe.
        let retention = Arc::new(crate::retention::Retention::new(db.clone(), storage.clone(), config.clone()));
        {
            let retention = retention.clone();
            let sweeps = crate::pulse::every(config.retention.sweep_interval, shutdown.clone(), move || {
                let retention = retention.clone();
                async move {
                    let opts = crate::retention::SweepOptions::default();
                    if let Err(e) = retention.sweep(now_us(), &opts, &crate::retention::Actor::system()).await {
                        warn!("sweep: {e}");
                    }
                }
            });
            // Not before the ledger has kept the days whose footage a sweep may delete.
            let ledger = coverage.clone();
            aux.spawn(async move {
                ledger.wait_first_pass().await;
                sweeps.await
            });
        }

        let alarms = crate::alarms::Alarms::new(
            db.clone(),
            config.alarms.clone(),
            config.public_url.as_ref().map(|u| u.to_string()).unwrap_or_else(|| format!("http://{}", config.listen)),
        );
        aux.spawn(alarms.clone().run_renotifier(shutdown.clone()));
        // The watchdog: every camera's state and the alarms for what threatens recording.
        aux.spawn(
            crate::watchdog::Watchdog {
                fleet: fleet.clone(),
                alarms: alarms.clone(),
                db: db.clone(),
                spool: spool_stats.clone(),
                config: Arc::new(config.clone()),
                storage_description: storage.description.clone(),
            }
            .run(shutdown.clone()),
        );
        // Index against bucket: now, then every [retention] reconcile_minutes (see
        // retention::reconciler for what each pass covers).
        {
            let reconciler = Arc::new(crate::retention::reconciler::Reconciler::new(
                db.clone(),
                storage.clone(),
                Some(alarms.clone()),
                config.retention.reconcile_interval,
            ));
            aux.spawn(crate::pulse::every(config.retention.reconcile_interval, shutdown.clone(), move || {
                let reconciler = reconciler.clone();
                async move {
                    match reconciler.pass(now_us(), crate::retention::reconciler::Scope::Periodic).await {
                        Ok(r) => {
                            for e in &r.errors {
                                warn!("reconcile: could not compare {e}");
                            }
                        }
                        Err(e) => warn!("reconcile: {e:#}"),
                    }
                }
            }));
        }
        // Evidence: the signing key (created at first start), and exports a stop
        // interrupted marked failed.
        let signer = crate::evidence::keys::Signer::load_or_create(&config.data_dir)?;
        info!(key = %signer.path.display(), fingerprint = %signer.fingerprint(), "evidence-signing key (Ed25519)");
        let sources = Arc::new(crate::evidence::source::Sources::new(storage.clone(), config.spool.dir.clone()));
        let exporter = Arc::new(crate::evidence::export::Exporter::new(db.clone(), sources, Arc::new(signer), &config.data_dir));
        exporter.recover().await?;
        // Snapshots and tamper checks: every [snapshots] interval, one camera at a time.
        let snapshots = crate::snapshot::service::Snapshots::new(db.clone(), alarms.clone(), &config.snapshots);
        aux.spawn(snapshots.clone().run(fleet.clone(), shutdown.clone()));
        let live = crate::live::Live::new(config.live.clone(), config.policy.clone(), db.clone(), fleet.clone());
        aux.spawn(live.clone().guard(shutdown.clone()));
        let state = AppState {
            exporter,
            snapshots,
            live: live.clone(),
            alarms: alarms.clone(),
            config: Arc::new(config.clone()),
            fleet: fleet.clone(),
            db: db.clone(),
            spool: spool_stats,
            storage_description: storage.description.clone(),
            started_us: started,
            auth: api::auth::shared(&config),
            retention,
            coverage,
        };
        info!(
            "Cradle listening on http://{} — {} cameras, storage {}, database {}",
            listener.local_addr()?,
            fleet.hubs().len(),
            storage.description,
            if db.backend == crate::db::Backend::Sqlite { "SQLite" } else { "PostgreSQL" }
        );
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
        });

        shutdown.cancelled().await;
        live.stop_all().await;
        info!("stopping: closing segments in progress");
        fleet.stop().await;
        info!("recorders stopped; draining the spool");
        let _ = uploader_task.await;
        let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
        aux.abort_all();
        let stopped = now_us();
        db.insert_event(None, stopped, "server_stopped", &format!("server run {run_id} stopped cleanly")).await?;
        db.end_server_run(&run_id, stopped).await?;
        db.close().await;
        info!("stopped");
        Ok(())
    }
}

/// Appends a `config_changed` audit entry when the configuration file differs from the
/// one the previous run started with (by SHA-256 of its text): the config decides what
/// is recorded, so a change to it is an event a regulator may ask about. The entry holds
/// the hash, the camera ids and the storage URL — never the text (it may hold secrets).
async fn audit_config_change(db: &Db, config: &Config) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let text = std::fs::read(&config.path).with_context(|| format!("reading {}", config.path.display()))?;
    let sha = hex::encode(Sha256::digest(&text));
    let q = crate::audit::AuditQuery { action: Some("config_changed".into()), limit: Some(1), ..Default::default() };
    let last = crate::audit::list(db, &q).await?;
    let previous = last.first().and_then(|e| e.detail["sha256"].as_str().map(str::to_owned));
    if previous.as_deref() == Some(sha.as_str()) {
        return Ok(());
    }
    let cameras: Vec<&str> = config.cameras.iter().map(|c| c.id.as_str()).collect();
    let entry = crate::audit::NewEntry {
        actor: Some("system".into()),
        actor_role: None,
        action: crate::audit::Action::ConfigChanged,
        target: Some(config.path.display().to_string()),
        addr: None,
        detail: serde_json::json!({
            "sha256": sha,
            "previous_sha256": previous,
            "cameras": cameras,
            "storage": config.storage.url,
        }),
    };
    crate::audit::append(db, entry).await?;
    info!("configuration {} is new or changed since the last run (audited)", config.path.display());
    Ok(())
}
