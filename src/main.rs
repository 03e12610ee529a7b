//! The `cradle` command: serve, check-config, reindex, camsim.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use cradle::app::App;
use cradle::config::Config;

#[derive(Parser)]
#[command(name = "cradle", version, about = "Always-armed recorder and live-view server for childcare centres")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record every configured camera and serve the API until SIGTERM/SIGINT.
    Serve {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
        /// Seed a demo centre and one account per role with generated passwords (printed,
        /// and written to DATA_DIR/demo-accounts.json). Never use it in production.
        #[arg(long)]
        demo: bool,
    },
    /// Administer the centre: classrooms, areas, cameras' placement, children,
    /// guardians, consent (the same rules and audit as the admin API).
    Centre {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        cmd: cradle::centre_cli::CentreCmd,
    },
    /// Check the audit log's hash chain.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Manage accounts (for bootstrap and scripts; the admin page does the same).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Validate a configuration file without starting (exit 0, or 2 with the reason).
    CheckConfig {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
    },
    /// Delete expired footage now (the server does it every [retention] sweep_minutes):
    /// segments older than their camera's retention and under no legal hold. Never
    /// anything younger than the retention floor.
    Sweep {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: cradle::retention::cli::SweepArgs,
    },
    /// Legal holds: footage kept whatever its age (add, list, release with a reason).
    Hold {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        cmd: cradle::retention::cli::HoldCmd,
    },
    /// Compare the index with storage now, every day of every camera (the server does it
    /// continuously, see [retention] reconcile_minutes): objects without rows are
    /// re-indexed, rows without objects reported. Exit 0, or 3 when footage is missing.
    Reconcile {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
        /// Leave objects written less than this many seconds ago (an upload racing its
        /// index row) for later; 0 when nothing is recording into this storage.
        #[arg(long, default_value_t = 60)]
        min_age_seconds: u64,
    },
    /// Evidence: the server's signing key.
    Evidence {
        #[command(subcommand)]
        cmd: EvidenceCmd,
    },
    /// Check an evidence export offline: the signature over the manifest with the
    /// centre's public key, then the file's size and SHA-256 against the manifest.
    /// Exit 0 when both hold; 1 with the reason otherwise. Needs no server or config.
    VerifyExport {
        /// The exported MP4.
        file: PathBuf,
        /// Its manifest (JSON), exactly as downloaded.
        manifest: PathBuf,
        /// The 64-byte Ed25519 signature of the manifest.
        signature: PathBuf,
        /// The centre's public key (PEM), obtained independently of the export.
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Rebuild the segment index from the objects in storage.
    Reindex {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
    },
    /// Serve simulated RTSP cameras (rtsp://LISTEN/cam1 … camN, and camK-h265), and
    /// clips of your own (--clip).
    Camsim {
        #[arg(long, default_value = "127.0.0.1:8554")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 4)]
        streams: usize,
        #[arg(long)]
        username: Option<String>,
        #[arg(long, env = "CRADLE_CAMSIM_PASSWORD")]
        password: Option<String>,
        /// Fault: the cameras' wall clock (NTP time in RTCP sender reports) is off by
        /// this many milliseconds.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        clock_offset_ms: i64,
        /// Fault: the cameras' RTP clock runs this many parts per million fast
        /// (negative: slow); 10000 is 1 %.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        rtp_clock_ppm: i64,
        /// Fault: every connection is dropped after playing for this many seconds.
        #[arg(long)]
        drop_after_secs: Option<f64>,
        /// Fault: the cameras' encoders freeze after playing for this many seconds: no
        /// more video, while the RTSP session and RTCP sender reports go on.
        #[arg(long)]
        freeze_after_secs: Option<f64>,
        /// Also serve rtsp://LISTEN/NAME, looping the Annex B file PATH (H.264, or H.265
        /// if it ends in .h265/.hevc) at 25 fps: IDR first, closed GOPs, no B-frames
        /// (see scripts/make-tamper-clips.sh). Read and checked at start. Repeatable.
        #[arg(long = "clip", value_name = "NAME=PATH")]
        clips: Vec<cradle::camsim::ExtraClip>,
    },
}

#[derive(Subcommand)]
enum EvidenceCmd {
    /// Print the evidence-signing public key (PEM SubjectPublicKeyInfo), creating the
    /// key pair in DATA_DIR/keys/ if there is none yet (as the server does).
    PublicKey {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Exit 0 when the chain is intact (prints its length and head hash), 1 naming the
    /// first bad entry when a row was edited, removed or reordered.
    Verify {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create an account; the password is read from standard input (first line).
    Add {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        username: String,
        /// admin, operator, parent, investigator, regulator or committee.
        #[arg(long)]
        role: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Set a new password (read from standard input) and end the account's sessions.
    SetPassword {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        username: String,
    },
    /// List accounts.
    List {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
    },
}

/// Tells glibc's allocator to keep freed memory a while instead of handing it back at
/// once. By default a thread's arena returns its free top to the kernel as soon as it
/// passes 128 KiB (`madvise(MADV_DONTNEED)`), so the capture thread, which frees a
/// batch's frames and allocates the next batch's every half second, gave back a few
/// hundred KiB every few seconds and faulted the same pages in again (~600 page faults a
/// minute for one camera, ~6% of that thread's CPU). Up to 8 MiB of free top stays with
/// each arena now; allocations up to 4 MiB (any frame, a GOP's staging buffer) come from
/// the arenas, larger ones (a segment read for upload) from `mmap` and go straight back.
/// Fixing either threshold turns off glibc's own adjustment of both, hence both.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // webrtc-rs warns about every normal connection set-up (DTLS server name,
                // ICE pinging before the first candidate pair); its errors still show.
                "info,sqlx=warn,rtc_dtls=error,rtc_ice=error".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::CheckConfig { config } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            println!(
                "{}: OK — {} camera(s), listen {}, database {}, storage {}",
                config.display(),
                c.cameras.len(),
                c.listen,
                redact(&c.database_url),
                c.storage.url
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config, demo } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let data_dir = c.data_dir.clone();
            let app = App::build(c).await?;
            if demo {
                let accounts = cradle::demo::seed(app.db(), app.config()).await?;
                cradle::demo::announce(&accounts, &data_dir)?;
            }
            let shutdown = CancellationToken::new();
            tokio::spawn(on_signal(shutdown.clone()));
            app.run_until_stopped(shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reindex { config } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let db = cradle::db::Db::connect(&c.database_url).await?;
            let storage = cradle::storage::Storage::from_config(&c.storage)?;
            let r = cradle::reindex::reindex(&storage, &db).await?;
            for s in &r.skipped {
                eprintln!("skipped {s}");
            }
            println!("reindex: {} objects, {} segments indexed, {} skipped", r.objects, r.indexed, r.skipped.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconcile { config, min_age_seconds } => match load(&config) {
            Ok(c) => cradle::retention::reconciler::cli(c, std::time::Duration::from_secs(min_age_seconds)).await,
            Err(code) => Ok(code),
        },
        Command::Sweep { config, args } => match load(&config) {
            Ok(c) => cradle::retention::cli::sweep(c, args).await,
            Err(code) => Ok(code),
        },
        Command::Hold { config, cmd } => match load(&config) {
            Ok(c) => cradle::retention::cli::hold(c, cmd).await,
            Err(code) => Ok(code),
        },
        Command::User { cmd } => user_command(cmd).await,
        Command::Evidence { cmd: EvidenceCmd::PublicKey { config } } => match load(&config) {
            Ok(c) => {
                let signer = cradle::evidence::keys::Signer::load_or_create(&c.data_dir)?;
                print!("{}", signer.public_key_pem());
                Ok(ExitCode::SUCCESS)
            }
            Err(code) => Ok(code),
        },
        Command::VerifyExport { file, manifest, signature, public_key } => {
            match cradle::evidence::verify::verify_export(&file, &manifest, &signature, &public_key) {
                Ok(v) => {
                    println!(
                        "OK: signature valid (key sha256 {}); file {} bytes, sha256 {} as the manifest says\n\
                         case {}, camera {}, {} – {}",
                        v.key_sha256, v.bytes, v.sha256, v.case_ref, v.camera, v.start, v.end
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("NOT VERIFIED: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Centre { config, cmd } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let db = cradle::db::Db::connect(&c.database_url).await?;
            let actor = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
            let result = cradle::centre_cli::run(&db, &c, &actor, cmd).await;
            if *db.watch_cameras().borrow() > 0 {
                if let Err(e) = cradle::cli_changes::announce(&c.data_dir) {
                    eprintln!(
                        "warning: cannot tell a running server about the change ({e}); it notices within a minute"
                    );
                }
            }
            db.close().await;
            Ok(match result {
                Ok(v) => {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    ExitCode::SUCCESS
                }
                Err(f) => {
                    eprintln!("error: {}", f.message);
                    ExitCode::from(f.code)
                }
            })
        }
        Command::Audit { cmd: AuditCmd::Verify { config } } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let db = cradle::db::Db::connect(&c.database_url).await?;
            let verdict = cradle::audit::verify(&db).await?;
            db.close().await;
            Ok(match verdict {
                cradle::audit::Verdict::Intact { entries, head } => {
                    println!("audit log intact: {entries} entries, head {head}");
                    ExitCode::SUCCESS
                }
                cradle::audit::Verdict::Broken { seq, id, reason } => {
                    eprintln!("audit log BROKEN at entry seq {seq} (id {id}): {reason}");
                    ExitCode::from(1)
                }
            })
        }
        Command::Camsim { listen, streams, username, password, clock_offset_ms, rtp_clock_ppm, drop_after_secs, freeze_after_secs, clips } => {
            let faults = cradle::camsim::Faults {
                clock_offset_ms,
                rtp_clock_ppm,
                drop_after: drop_after_secs.map(|s| std::time::Duration::from_secs_f64(s.max(0.1))),
                freeze_after: freeze_after_secs.map(|s| std::time::Duration::from_secs_f64(s.max(0.1))),
            };
            let names: Vec<(String, PathBuf)> = clips.iter().map(|c| (c.name.clone(), c.path.clone())).collect();
            let opts = cradle::camsim::Options { streams, username, password, faults, extra: clips };
            // Clips are read and checked before the port opens: a bad file fails at once.
            let camsim = cradle::camsim::Camsim::build(opts)?;
            let l = tokio::net::TcpListener::bind(listen).await?;
            println!("camsim: rtsp://{}/cam1 … cam{streams} (H.264), camK-h265 (H.265)", l.local_addr()?);
            for (name, path) in names {
                println!("camsim: rtsp://{}/{name} ← {}", l.local_addr()?, path.display());
            }
            let shutdown = CancellationToken::new();
            tokio::spawn(on_signal(shutdown.clone()));
            camsim.run(l, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn on_signal(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
    token.cancel();
}

async fn user_command(cmd: UserCmd) -> anyhow::Result<ExitCode> {
    use cradle::api::auth::{create_account, CreateError};
    let config = match &cmd {
        UserCmd::Add { config, .. } | UserCmd::SetPassword { config, .. } | UserCmd::List { config } => config,
    };
    let c = match load(config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let db = cradle::db::Db::connect(&c.database_url).await?;
    let actor = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
    let code = match cmd {
        UserCmd::Add { username, role, display_name, .. } => {
            let pw = read_password()?;
            match create_account(&db, &username, display_name.as_deref(), &role, pw).await {
                Ok(u) => {
                    cli_audit(&db, &actor, cradle::audit::Action::AccountCreated, &u.username, serde_json::json!({ "role": u.role })).await?;
                    println!("created account {:?} with role {}", u.username, u.role);
                    ExitCode::SUCCESS
                }
                Err(CreateError::Db(e)) => return Err(e.into()),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        UserCmd::SetPassword { username, .. } => {
            let Some(u) = db.user_by_name(&username).await? else {
                eprintln!("error: no account {username:?}");
                return Ok(ExitCode::from(2));
            };
            let pw = read_password()?;
            if let Err(e) = cradle::auth::check_password(&pw) {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
            let hash = tokio::task::spawn_blocking(move || cradle::auth::hash_password(&pw)).await?;
            let ended = db.set_password(u.id, &hash, cradle::time::now_us(), None).await?;
            cli_audit(&db, &actor, cradle::audit::Action::PasswordChanged, &u.username, serde_json::json!({ "sessions_ended": ended })).await?;
            println!("password of {:?} changed; {ended} session(s) ended", u.username);
            ExitCode::SUCCESS
        }
        UserCmd::List { .. } => {
            for u in db.list_users().await? {
                let state = if u.disabled_at_us.is_some() { "disabled" } else { "active" };
                println!("{:<24} {:<13} {:<8} {}", u.username, u.role, state, u.display_name);
            }
            ExitCode::SUCCESS
        }
    };
    db.close().await;
    Ok(code)
}

async fn cli_audit(
    db: &cradle::db::Db,
    actor: &str,
    action: cradle::audit::Action,
    target: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let entry = cradle::audit::NewEntry {
        actor: Some(actor.to_owned()),
        actor_role: Some("cli".into()),
        action,
        target: Some(target.to_owned()),
        addr: None,
        detail,
    };
    cradle::audit::append(db, entry).await?;
    Ok(())
}

/// The first line of standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!pw.is_empty(), "no password on standard input");
    Ok(pw)
}

/// Hides a password in a database URL before printing it.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
