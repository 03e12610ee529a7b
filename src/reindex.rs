//! `cradle reindex`: rebuilds the segment index from the bucket alone.
//!
//! Every object whose key parses as a segment key is read, parsed (its own moov
//! carries the codec parameters and Cradle's metadata) and hashed, and its row is
//! upserted as `stored`. Objects that are not segments are reported, never touched.
//! [`read_segment`] — object to index row — is shared with the reconciler
//! (`retention::reconciler`), which re-indexes objects it finds without rows.

use futures::StreamExt;

use crate::db::retention::STATE_DELETING;
use crate::db::{Db, SegmentRow, STATE_STORED};
use crate::record::spool::row_from_bytes;
use crate::storage::{parse_segment_key, Storage, StorageError};

#[derive(Debug, Default)]
pub struct ReindexReport {
    pub objects: usize,
    pub indexed: usize,
    pub skipped: Vec<String>,
}

/// Why an object could not become an index row.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Storage could not be read: try again later.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// The object is not a Cradle segment (or disagrees with its key): it never will be.
    #[error("{0}")]
    NotSegment(String),
}

/// Reads object `key` and builds its index row (state `stored`), as the recorder
/// would have written it. The key is authoritative for identity: the object's own
/// metadata must name the same camera and start.
pub async fn read_segment(storage: &Storage, key: &str) -> Result<SegmentRow, ObjectError> {
    let Some((camera, start)) = parse_segment_key(key) else {
        return Err(ObjectError::NotSegment("not a segment key".to_owned()));
    };
    let data = storage.get(key).await?;
    let mut r = row_from_bytes(&data, Some(&camera)).map_err(ObjectError::NotSegment)?;
    if r.camera_id != camera.as_str() || r.start_us != start {
        return Err(ObjectError::NotSegment("object metadata disagrees with its key".to_owned()));
    }
    r.state = STATE_STORED.into();
    Ok(r)
}

pub async fn reindex(storage: &Storage, db: &Db) -> anyhow::Result<ReindexReport> {
    let objects = storage.list(None).await?;
    let mut report = ReindexReport { objects: objects.len(), ..Default::default() };
    let results: Vec<(String, Result<SegmentRow, ObjectError>)> = futures::stream::iter(objects)
        .map(|(key, _size)| async move {
            let row = read_segment(storage, &key).await;
            (key, row)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (key, row) in results {
        match row {
            Ok(row) => {
                // A row the sweeper has claimed stays its business: its object is going.
                if db.segment_state(&row.object_key).await?.as_deref() == Some(STATE_DELETING) {
                    report.skipped.push(format!("{key}: being deleted by the sweeper"));
                    continue;
                }
                db.upsert_segment(&row).await?;
                db.mark_stored(&row.object_key, crate::time::now_us()).await?;
                report.indexed += 1;
            }
            Err(e) => report.skipped.push(format!("{key}: {e}")),
        }
    }
    Ok(report)
}
