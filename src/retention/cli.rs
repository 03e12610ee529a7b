//! `cradle sweep` and `cradle hold …`: the sweeper and legal holds from the command
//! line, through the same functions (and the same refusals and audit entries, actor
//! `cli:USER`) as the server and the API.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::holds::{self, HoldError, HoldRequest};
use super::{Actor, Retention, SweepError, SweepOptions, SweepReport};
use crate::config::Config;
use crate::db::Db;
use crate::storage::Storage;
use crate::time::now_us;

#[derive(Args)]
pub struct SweepArgs {
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep at least this many days in this run (e.g. a cautious first sweep). It can
    /// only keep more: below the retention floor or `[retention] days` it is refused.
    #[arg(long)]
    older_than_days: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum HoldCmd {
    /// Place a hold: --json '{"camera_id":"room-1","start":"2026-03-02T08:00:00+08:00",
    /// "end":"2026-03-02T12:00:00+08:00","case_ref":"JD-2026-0042","reason":"parent complaint"}'.
    Add {
        #[arg(long)]
        json: String,
    },
    /// List holds (all, or --active only).
    List {
        #[arg(long)]
        active: bool,
    },
    /// Release a hold; its footage is then swept like any other once expired.
    Release {
        #[arg(long)]
        id: i64,
        #[arg(long)]
        reason: String,
    },
}

/// `cradle sweep`: exit 0, 2 when refused (nothing deleted), 1 on failure.
pub async fn sweep(config: Config, args: SweepArgs) -> anyhow::Result<ExitCode> {
    let db = Db::connect(&config.database_url).await?;
    let storage = Storage::from_config(&config.storage)?;
    let retention = Retention::new(db.clone(), storage, config);
    let opts = SweepOptions { dry_run: args.dry_run, older_than_days: args.older_than_days, ..Default::default() };
    let result = retention.sweep(now_us(), &opts, &Actor::cli()).await;
    db.close().await;
    match result {
        Ok(r) if args.json => {
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            print!("{}", summary(&r));
            Ok(ExitCode::SUCCESS)
        }
        Err(SweepError::Refused(m)) => {
            eprintln!("error: {m}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

/// The report as a table, one camera per line.
pub fn summary(r: &SweepReport) -> String {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    let mut s = format!(
        "sweep at {} (floor {} days: nothing ending after {} can go){}\n",
        r.now,
        r.floor_days,
        r.floor_cutoff,
        if r.dry_run { " — DRY RUN, nothing deleted" } else { "" }
    );
    s += &format!(
        "{:<20} {:>5} {:<28} {:>8} {:>14} {:>6}  {}\n",
        "camera", "days", "cutoff", verb, "bytes", "held", "deleted from … to (starts); oldest kept"
    );
    for (id, c) in &r.cameras {
        s += &format!(
            "{:<20} {:>5} {:<28} {:>8} {:>14} {:>6}  {} … {}; {}\n",
            id,
            c.retention_days,
            c.cutoff,
            c.deleted_segments,
            c.deleted_bytes,
            c.held_kept_segments,
            c.first_deleted.as_deref().unwrap_or("-"),
            c.last_deleted.as_deref().unwrap_or("-"),
            c.oldest_remaining.as_deref().unwrap_or("none"),
        );
    }
    s += &format!(
        "total: {verb} {} segments ({} bytes); {} expired segments kept under legal hold; {} finished from an earlier sweep; {} ms\n",
        r.deleted_segments, r.deleted_bytes, r.held_kept_segments, r.recovered_segments, r.duration_ms
    );
    s
}

/// `cradle hold …`: prints JSON; exit 2 when refused, 1 on failure.
pub async fn hold(config: Config, cmd: HoldCmd) -> anyhow::Result<ExitCode> {
    let db = Db::connect(&config.database_url).await?;
    let who = Actor::cli();
    let result: Result<serde_json::Value, HoldError> = async {
        Ok(match cmd {
            HoldCmd::Add { json } => {
                let req: HoldRequest =
                    serde_json::from_str(&json).map_err(|e| HoldError::Invalid(format!("--json: {e}")))?;
                let new = req.parse()?;
                if !holds::known_camera(&db, &config, &new.camera_id).await? {
                    return Err(HoldError::NotFound(format!(
                        "camera {:?} is not configured, was not added and has no footage",
                        new.camera_id.as_str()
                    )));
                }
                serde_json::to_value(holds::place_hold(&db, new, &who, now_us()).await?).expect("serialises")
            }
            HoldCmd::List { active } => serde_json::json!({ "holds": holds::list_holds(&db, active).await? }),
            HoldCmd::Release { id, reason } => {
                serde_json::to_value(holds::release_hold(&db, id, &reason, &who, now_us()).await?).expect("serialises")
            }
        })
    }
    .await;
    db.close().await;
    match result {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(HoldError::Db(e)) => Err(e.into()),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}
