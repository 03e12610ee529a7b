//! Export benchmark seed: turns one real recorded segment into an hour of footage in
//! another server's storage and index, so `bench/export.sh` can export an hour without
//! recording for an hour.
//!
//!   cargo run --release --example export_seed -- --from CONFIG --key OBJECT_KEY
//!       --to CONFIG --camera ID --start RFC3339 [--copies 60]
//!
//! `--from` is the recording server's config: the segment's bytes come from its storage
//! and its row from its index, and the bytes must match the row's SHA-256 and size.
//! `--to` is the benchmark server's config (Garage or a local folder, its own SQLite): copy i is put
//! at `segment_key(camera, start + i × duration)` with an index row that is the
//! original's but for camera, times and key (state `stored`, same SHA-256, bytes,
//! frames, codec, duration).
//!
//! The copies are back to back: each is exactly as long as the recorded duration
//! (`duration_90k`, rounded to whole microseconds), so the export places the next
//! copy's first frame where the previous copy's last frame ends. That is what the
//! export checks (every object whole, against the index's SHA-256) and uses (the
//! index's start plus the recorded frame durations); it never decodes, so the same
//! picture every minute costs what an hour of different pictures would.
//!
//! Prints one JSON object on stdout: the range planted and what one copy holds.

use std::path::PathBuf;

use bytes::Bytes;
use cradle::config::{CameraId, Config};
use cradle::db::{Db, SegmentRow, STATE_STORED};
use cradle::storage::{segment_key, Storage};
use cradle::time::{format_rfc3339, now_us, parse_rfc3339, ticks_to_us};
use sha2::{Digest, Sha256};

struct Args {
    from: PathBuf,
    key: String,
    to: PathBuf,
    camera: CameraId,
    start_us: i64,
    copies: i64,
}

fn args() -> anyhow::Result<Args> {
    let (mut from, mut key, mut to, mut camera, mut start, mut copies) = (None, None, None, None, None, 60);
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| anyhow::anyhow!("{k} needs a value"))?;
        match k.as_str() {
            "--from" => from = Some(PathBuf::from(v)),
            "--key" => key = Some(v),
            "--to" => to = Some(PathBuf::from(v)),
            "--camera" => camera = Some(CameraId::parse(&v).map_err(|e| anyhow::anyhow!("--camera: {e}"))?),
            "--start" => start = Some(parse_rfc3339(&v).map_err(|e| anyhow::anyhow!("--start: {e}"))?),
            "--copies" => copies = v.parse().map_err(|_| anyhow::anyhow!("--copies: {v:?} is not a number"))?,
            _ => anyhow::bail!("unknown option {k} (see the comment at the top of bench/export_seed.rs)"),
        }
    }
    fn need<T>(v: Option<T>, name: &str) -> anyhow::Result<T> {
        v.ok_or_else(|| anyhow::anyhow!("{name} is required"))
    }
    anyhow::ensure!(copies > 0, "--copies must be at least 1");
    Ok(Args {
        from: need(from, "--from")?,
        key: need(key, "--key")?,
        to: need(to, "--to")?,
        camera: need(camera, "--camera")?,
        start_us: need(start, "--start")?,
        copies,
    })
}

/// The config's index and storage, as the server opens them.
async fn open(path: &std::path::Path) -> anyhow::Result<(Db, Storage)> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = Db::connect(&config.database_url).await?;
    let storage = Storage::from_config(&config.storage)?;
    Ok((db, storage))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let (src_db, src_storage) = open(&a.from).await?;
    let row = src_db
        .segment_by_key(&a.key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{}: no segment {} in its index", a.from.display(), a.key))?;
    anyhow::ensure!(row.state == STATE_STORED, "segment {} is {:?}, not stored", a.key, row.state);
    let data: Bytes = src_storage.get(&a.key).await?;
    let sha = hex::encode(Sha256::digest(&data));
    anyhow::ensure!(
        sha == row.sha256 && data.len() as i64 == row.bytes,
        "segment {} does not match its index row ({} bytes, SHA-256 {sha}; indexed {} bytes, {})",
        a.key,
        data.len(),
        row.bytes,
        row.sha256
    );
    src_db.close().await;

    let (db, storage) = open(&a.to).await?;
    let step = ticks_to_us(row.duration_90k);
    anyhow::ensure!(step > 0, "segment {} has no duration", a.key);
    let started = std::time::Instant::now();
    for i in 0..a.copies {
        let start_us = a.start_us + i * step;
        let key = segment_key(&a.camera, start_us);
        storage.put_bytes(&key, data.clone()).await?;
        let copy = SegmentRow {
            camera_id: a.camera.to_string(),
            start_us,
            end_us: start_us + step,
            object_key: key.clone(),
            run_id: "bench-export-seed".into(),
            state: STATE_STORED.into(),
            ..row.clone()
        };
        db.upsert_segment(&copy).await?;
        db.mark_stored(&key, now_us()).await?;
    }
    let put_secs = started.elapsed().as_secs_f64();
    db.close().await;

    let end_us = a.start_us + a.copies * step;
    println!(
        "{}",
        serde_json::json!({
            "source_key": a.key,
            "source_start": format_rfc3339(row.start_us),
            "source_end": format_rfc3339(row.end_us),
            "copies": a.copies,
            "camera": a.camera.as_str(),
            "start": format_rfc3339(a.start_us),
            "end": format_rfc3339(end_us),
            "segment_us": step,
            "segment_index_span_us": row.end_us - row.start_us,
            "segment_bytes": row.bytes,
            "segment_frames": row.frames,
            "segment_duration_90k": row.duration_90k,
            "codec": row.codec,
            "sha256": row.sha256,
            "total_bytes": row.bytes * a.copies,
            "total_frames": row.frames * a.copies,
            "put_seconds": put_secs,
            "storage": storage.description,
        })
    );
    Ok(())
}
