//! Sweep benchmark: how long the retention sweeper takes, and how many SQL statements it
//! issues, on an index of a million segments — when 10 days expire, and when nothing
//! does (which must cost the same whatever the index's size). Run through
//! `bench/sweep.sh`, which starts PostgreSQL and writes bench/results/sweep.md.
//!
//!   cargo run --release --example sweep_bench -- --url sqlite:///tmp/x.db [--label NAME]
//!       [--cameras 100] [--days 100] [--per-day 100] [--sweep-days 10]
//!
//! The index is filled with multi-row INSERTs in transactions, and the sweeper runs
//! exactly as in the server ([`cradle::retention::Retention::sweep`], batches of 1000,
//! one audit entry per run) with a simulated `now`. The object store is an empty local
//! directory: every delete is an `unlink` that finds no file, which the sweeper counts
//! as deleted. So the times are the index's cost plus the sweeper's own, not S3's.

use std::time::Instant;

use cradle::config::{CameraId, Config};
use cradle::db::{Backend, Db};
use cradle::retention::{Actor, Retention, SweepOptions, SweepReport};
use sqlx::Row;

const DAY: i64 = 86_400_000_000;
/// 2026-01-01T00:00:00Z: the archive's first segment starts here.
const T0: i64 = 1_767_225_600_000_000;

struct Args {
    url: String,
    label: String,
    cameras: i64,
    days: i64,
    per_day: i64,
    sweep_days: i64,
}

fn args() -> Args {
    let mut a = Args { url: String::new(), label: String::new(), cameras: 100, days: 100, per_day: 100, sweep_days: 10 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        let n = || v.parse::<i64>().unwrap_or_else(|_| panic!("{k}: {v:?} is not a number"));
        match k.as_str() {
            "--url" => a.url = v.clone(),
            "--label" => a.label = v.clone(),
            "--cameras" => a.cameras = n(),
            "--days" => a.days = n(),
            "--per-day" => a.per_day = n(),
            "--sweep-days" => a.sweep_days = n(),
            _ => panic!("unknown option {k}"),
        }
    }
    assert!(!a.url.is_empty(), "--url is required");
    assert!(a.days >= 90 + a.sweep_days, "--days must cover the 90-day floor plus --sweep-days");
    if a.label.is_empty() {
        a.label = if a.url.starts_with("sqlite:") { "SQLite".into() } else { "PostgreSQL".into() };
    }
    a
}

/// Inserts days `[from, to)` of every camera, `per_day` back-to-back segments a day.
async fn load(db: &Db, a: &Args, from: i64, to: i64) -> anyhow::Result<u64> {
    const ROWS_PER_STATEMENT: usize = 1000;
    let len = DAY / a.per_day;
    let mut rows = Vec::new();
    for c in 0..a.cameras {
        let cam = CameraId::parse(&format!("cam-{c:03}")).unwrap();
        for i in from * a.per_day..to * a.per_day {
            rows.push((cam.clone(), T0 + i * len));
        }
    }
    let mut tx = db.pool().begin().await?;
    for (n, chunk) in rows.chunks(ROWS_PER_STATEMENT).enumerate() {
        let mut sql = String::from(
            "INSERT INTO segments (camera_id, start_us, end_us, duration_90k, bytes, frames, codec, object_key, sha256, run_id, drift_us, state) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 5;
            sql += &format!(
                "{}(${}, ${}, ${}, {}, 1000000, 1500, 'avc1.640028', ${}, ${}, 'bench', 0, 'stored')",
                if i == 0 { "" } else { ", " },
                b + 1,
                b + 2,
                b + 3,
                len * 9 / 100,
                b + 4,
                b + 5
            );
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (cam, start) in chunk {
            q = q
                .bind(cam.as_str().to_owned())
                .bind(*start)
                .bind(*start + len)
                .bind(cradle::storage::segment_key(cam, *start))
                .bind("0000000000000000000000000000000000000000000000000000000000000000");
        }
        q.execute(&mut *tx).await?;
        if n % 50 == 49 {
            tx.commit().await?;
            tx = db.pool().begin().await?;
        }
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

async fn explain(db: &Db, sql: &str) -> anyhow::Result<Vec<String>> {
    let (prefix, col) = match db.backend {
        Backend::Sqlite => ("EXPLAIN QUERY PLAN ", 3),
        Backend::Postgres => ("EXPLAIN ", 0),
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{prefix}{sql}"))).fetch_all(db.pool()).await?;
    Ok(rows.iter().map(|r| r.try_get::<String, _>(col).unwrap_or_default()).collect())
}

struct Measured {
    what: String,
    index_rows: i64,
    runs: Vec<SweepReport>,
    secs: Vec<f64>,
}

async fn measure(r: &Retention, what: &str, now: i64, repeats: usize) -> anyhow::Result<Measured> {
    let index_rows = r.db.count_segments().await?;
    let mut m = Measured { what: what.into(), index_rows, runs: Vec::new(), secs: Vec::new() };
    for _ in 0..repeats {
        let t = Instant::now();
        let report = r.sweep(now, &SweepOptions::default(), &Actor::system()).await?;
        m.secs.push(t.elapsed().as_secs_f64());
        m.runs.push(report);
    }
    Ok(m)
}

fn row(label: &str, m: &Measured) -> String {
    let mut secs = m.secs.clone();
    secs.sort_by(f64::total_cmp);
    let median = secs[secs.len() / 2];
    let r = &m.runs[m.secs.iter().position(|s| *s == median).unwrap()];
    let per = if r.deleted_segments > 0 {
        format!("{:.4}", r.statements as f64 / r.deleted_segments as f64)
    } else {
        "–".into()
    };
    let rate = if r.deleted_segments > 0 { format!("{:.0}", r.deleted_segments as f64 / median) } else { "–".into() };
    format!(
        "| {label} | {} | {} | {:.3} s{} | {} | {} | {} | {} | {rate} |",
        m.index_rows,
        m.what,
        median,
        if secs.len() > 1 { format!(" (min {:.3}, max {:.3}, n={})", secs[0], secs[secs.len() - 1], secs.len()) } else { String::new() },
        r.deleted_segments,
        r.statements,
        r.batches,
        per,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let scratch = tempfile::tempdir()?;
    let store = scratch.path().join("empty-store");
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n[database]\nurl = \"{}\"\n[storage]\nurl = \"file://{}\"\n[retention]\ndays = 90\nsweep_batch = 1000\n",
        scratch.path().display(),
        a.url,
        store.display()
    );
    let config = Config::parse(&text, std::path::Path::new("bench.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = Db::connect(&a.url).await?;
    anyhow::ensure!(db.count_segments().await? == 0, "the database at --url must be empty");
    let storage = cradle::storage::Storage::from_config(&config.storage)?;
    let retention = Retention::new(db.clone(), storage, config);
    let analyze = || async {
        // PostgreSQL's autovacuum would have analysed a table this size; a bench that
        // loads and sweeps within a minute must do it itself. SQLite is left as Cradle
        // leaves it in production: never analysed.
        if db.backend == Backend::Postgres {
            sqlx::query("ANALYZE segments").execute(db.pool()).await?;
        }
        anyhow::Ok(())
    };
    let mut out = Vec::new();
    let mut log = |s: String| {
        eprintln!("{s}");
        out.push(s);
    };

    let small_days = a.sweep_days;
    let t = Instant::now();
    let n = load(&db, &a, 0, small_days).await?;
    analyze().await?;
    log(format!("<!-- {}: loaded {n} rows in {:.1} s -->", a.label, t.elapsed().as_secs_f64()));
    // Nothing has expired: `now` is 90 days after the first segment started.
    let nothing_small = measure(&retention, "nothing expired", T0 + 90 * DAY, 5).await?;
    let t = Instant::now();
    let n = load(&db, &a, small_days, a.days).await?;
    analyze().await?;
    log(format!("<!-- {}: loaded {n} more rows in {:.1} s -->", a.label, t.elapsed().as_secs_f64()));
    let nothing_big = measure(&retention, "nothing expired", T0 + 90 * DAY, 5).await?;
    let now = T0 + (90 + a.sweep_days) * DAY;
    let sweep = measure(&retention, &format!("{} days expired", a.sweep_days), now, 1).await?;
    let after = measure(&retention, "nothing expired (right after)", now, 5).await?;

    let expected = a.cameras * a.sweep_days * a.per_day;
    anyhow::ensure!(sweep.runs[0].deleted_segments as i64 == expected, "deleted {} of {expected}", sweep.runs[0].deleted_segments);
    anyhow::ensure!(db.count_segments().await? == a.cameras * a.days * a.per_day - expected);
    for m in [&nothing_small, &nothing_big, &after] {
        log(row(&a.label, m));
    }
    log(row(&a.label, &sweep));

    log(String::new());
    log(format!("{} query plans (index `segments_camera_start` is (camera_id, start_us)):", a.label));
    log(String::new());
    log("```".into());
    let scan = format!(
        "SELECT id FROM segments WHERE camera_id = 'cam-001' AND start_us >= {} AND start_us <= {} \
         AND end_us <= {} AND state = 'stored' ORDER BY start_us LIMIT 1000",
        i64::MIN,
        now - 90 * DAY,
        now - 90 * DAY
    );
    log("-- the per-camera range scan".into());
    for l in explain(&db, &scan).await? {
        log(l);
    }
    log("-- the camera skip-scan".into());
    let skip = "WITH RECURSIVE cams(id) AS (SELECT MIN(camera_id) FROM segments UNION ALL \
                SELECT (SELECT MIN(s.camera_id) FROM segments s WHERE s.camera_id > cams.id) FROM cams WHERE cams.id IS NOT NULL) \
                SELECT id FROM cams WHERE id IS NOT NULL";
    for l in explain(&db, skip).await? {
        log(l);
    }
    log("```".into());
    println!("{}", out.join("\n"));
    db.close().await;
    Ok(())
}
