//! `cradle reindex`: rebuilds the segment index from the bucket alone.
//!
//! Every object whose key parses as a segment key is read, parsed (its own moov
//! carries the codec parameters and Cradle's metadata) and hashed, and its row is
//! upserted as `stored`. Objects that are not segments are reported, never touched.

use futures::StreamExt;

use crate::db::{Db, STATE_STORED};
use crate::record::spool::row_from_bytes;
use crate::storage::{parse_segment_key, Storage};

#[derive(Debug, Default)]
pub struct ReindexReport {
    pub objects: usize,
    pub indexed: usize,
    pub skipped: Vec<String>,
}

pub async fn reindex(storage: &Storage, db: &Db) -> anyhow::Result<ReindexReport> {
    let objects = storage.list(None).await?;
    let mut report = ReindexReport { objects: objects.len(), ..Default::default() };
    let results: Vec<(String, Result<crate::db::SegmentRow, String>)> = futures::stream::iter(objects)
        .map(|(key, _size)| async move {
            let Some((camera, start)) = parse_segment_key(&key) else {
                return (key, Err("not a segment key".to_owned()));
            };
            let row = match storage.get(&key).await {
                Ok(data) => row_from_bytes(&data, Some(&camera)),
                Err(e) => Err(e.to_string()),
            };
            let row = row.and_then(|mut r| {
                // The key is authoritative for identity; the metadata must agree with it.
                if r.camera_id != camera.as_str() || r.start_us != start {
                    return Err("object metadata disagrees with its key".to_owned());
                }
                r.state = STATE_STORED.into();
                Ok(r)
            });
            (key, row)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (key, row) in results {
        match row {
            Ok(row) => {
                db.upsert_segment(&row).await?;
                db.mark_stored(&row.object_key, crate::time::now_us()).await?;
                report.indexed += 1;
            }
            Err(e) => report.skipped.push(format!("{key}: {e}")),
        }
    }
    Ok(report)
}
