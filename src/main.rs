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
    },
    /// Validate a configuration file without starting (exit 0, or 2 with the reason).
    CheckConfig {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
    },
    /// Rebuild the segment index from the objects in storage.
    Reindex {
        #[arg(long, env = "CRADLE_CONFIG")]
        config: PathBuf,
    },
    /// Serve simulated RTSP cameras (rtsp://LISTEN/cam1 … camN, and camK-h265).
    Camsim {
        #[arg(long, default_value = "127.0.0.1:8554")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 4)]
        streams: usize,
        #[arg(long)]
        username: Option<String>,
        #[arg(long, env = "CRADLE_CAMSIM_PASSWORD")]
        password: Option<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
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

fn load(path: &PathBuf) -> Result<Config, ExitCode> {
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
                "{}: OK — {} cameras, listen {}, database {}, storage {}",
                config.display(),
                c.cameras.len(),
                c.listen,
                redact(&c.database_url),
                c.storage.url
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let app = App::build(c).await?;
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
        Command::Camsim { listen, streams, username, password } => {
            let l = tokio::net::TcpListener::bind(listen).await?;
            println!("camsim: rtsp://{}/cam1 … cam{streams} (H.264), camK-h265 (H.265)", l.local_addr()?);
            let shutdown = CancellationToken::new();
            tokio::spawn(on_signal(shutdown.clone()));
            cradle::camsim::serve(l, cradle::camsim::Options { streams, username, password }, shutdown).await?;
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
