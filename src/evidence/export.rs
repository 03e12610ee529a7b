//! Exports: one camera's range of an approved request → one MP4 (remuxed from the
//! stored segments, never re-encoded) + a manifest (JSON) + the server's Ed25519
//! signature of the manifest's exact bytes.
//!
//! Files live in `DATA_DIR/exports/ID/`: `export.mp4`, `manifest.json`,
//! `manifest.sig`. A job runs one at a time (exports are I/O-bound; two would halve
//! each other's speed and double the disk needed). Creating an export places a legal
//! hold on its range first, so the sweeper cannot take footage the export is reading;
//! the hold stays until an admin closes the case. Every source segment is read whole
//! and must match the index's SHA-256, so an export is made only from footage that is
//! provably what was recorded. A failure (storage down, a full disk, an altered
//! segment) leaves the export `failed` with the reason, its partial files removed, and
//! touches no footage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::keys::Signer;
use super::mp4;
use super::source::Sources;
use super::{audit_request, parse_range, EvidenceError};
use crate::audit::Action;
use crate::auth::{Principal, Role};
use crate::db::evidence::{ExportRow, RequestRow};
use crate::db::{Db, SegmentRow};
use crate::gaps::find_gaps;
use crate::retention::holds::{self, Actor, NewHold};
use crate::time::{format_compact, format_rfc3339, now_us, WallUs};

/// The longest range one export may cover (a day of 4 Mbit/s is ~43 GB).
pub const MAX_EXPORT_HOURS: i64 = 24;
/// Segments fetched ahead of the one being staged (each is held in memory: ~30 MB for a
/// minute at 4 Mbit/s).
const FETCH_AHEAD: usize = 3;

/// An export as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ExportView {
    pub id: String,
    pub request_id: i64,
    pub camera_id: String,
    pub start: String,
    pub end: String,
    /// pending | ready | failed
    pub state: String,
    pub error: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    pub actual_start: Option<String>,
    pub actual_end: Option<String>,
    pub hold_id: Option<i64>,
    pub file_name: String,
    pub file_url: String,
    pub manifest_url: String,
    pub signature_url: String,
}

impl From<&ExportRow> for ExportView {
    fn from(e: &ExportRow) -> ExportView {
        let base = format!("/api/v1/evidence/exports/{}", e.id);
        ExportView {
            id: e.id.clone(),
            request_id: e.request_id,
            camera_id: e.camera_id.clone(),
            start: format_rfc3339(e.start_us),
            end: format_rfc3339(e.end_us),
            state: e.state.clone(),
            error: e.error.clone(),
            created_by: e.created_by.clone(),
            created_at: format_rfc3339(e.created_at_us),
            finished_at: e.finished_at_us.map(format_rfc3339),
            bytes: e.bytes,
            sha256: e.sha256.clone(),
            actual_start: e.actual_start_us.map(format_rfc3339),
            actual_end: e.actual_end_us.map(format_rfc3339),
            hold_id: e.hold_id,
            file_name: file_name(e),
            file_url: format!("{base}/file"),
            manifest_url: format!("{base}/manifest"),
            signature_url: format!("{base}/signature"),
        }
    }
}

/// The MP4's name for the person who downloads it (and inside the manifest).
pub fn file_name(e: &ExportRow) -> String {
    format!("cradle-{}-{}-{}.mp4", e.camera_id, format_compact(e.start_us), e.id)
}

/// `POST /api/v1/evidence/requests/{id}/exports`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewExport {
    /// Required when the request names several cameras.
    #[serde(default)]
    pub camera_id: Option<String>,
    /// Default: the request's range.
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
}

/// Who the manifest says made it.
#[derive(Clone, Debug, Serialize)]
pub struct ServerIdentity {
    /// The centre's name.
    pub centre: String,
    pub hostname: String,
    pub software: String,
    /// SHA-256 of the signing key's SubjectPublicKeyInfo (DER), hex.
    pub public_key_sha256: String,
}

pub struct Exporter {
    db: Db,
    sources: Arc<Sources>,
    signer: Arc<Signer>,
    dir: PathBuf,
    one_at_a_time: Semaphore,
}

impl Exporter {
    pub fn new(db: Db, sources: Arc<Sources>, signer: Arc<Signer>, data_dir: &Path) -> Exporter {
        Exporter { db, sources, signer, dir: data_dir.join("exports"), one_at_a_time: Semaphore::new(1) }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub fn sources(&self) -> &Arc<Sources> {
        &self.sources
    }

    pub fn files(&self, id: &str) -> ExportFiles {
        let dir = self.dir.join(id);
        ExportFiles { mp4: dir.join("export.mp4"), manifest: dir.join("manifest.json"), signature: dir.join("manifest.sig"), dir }
    }

    /// Exports left `pending` by a crash or a stop become `failed` (their partial files
    /// removed): the requester makes a new one.
    pub async fn recover(&self) -> Result<(), crate::db::DbError> {
        for e in self.db.pending_exports().await? {
            let _ = std::fs::remove_dir_all(self.files(&e.id).dir);
            self.db.fail_export(&e.id, now_us(), "the server stopped while this export was being made; export again").await?;
            warn!(export = %e.id, "an export interrupted by a stop is marked failed");
        }
        Ok(())
    }

    /// Checks and records a new export of an approved request, places its legal hold,
    /// and starts the job. The caller checked that `who` may see the request.
    pub async fn create(
        self: &Arc<Self>,
        who: &Principal,
        request: &RequestRow,
        body: NewExport,
        now: WallUs,
    ) -> Result<ExportRow, EvidenceError> {
        if who.role != Role::Admin && request.requested_by != who.username {
            return Err(EvidenceError::Forbidden("only the requester or an admin exports from a request".into()));
        }
        match super::effective_state(request, now) {
            "approved" => {}
            s => return Err(EvidenceError::Forbidden(format!("evidence request {} is {s}: nothing can be exported", request.id))),
        }
        let camera = match (&body.camera_id, request.camera_ids.as_slice()) {
            (Some(c), cams) if cams.contains(c) => c.clone(),
            (Some(c), _) => {
                return Err(EvidenceError::Forbidden(format!("camera {c:?} is not part of evidence request {}", request.id)))
            }
            (None, [only]) => only.clone(),
            (None, _) => return Err(EvidenceError::Invalid("camera_id: required, the request names several cameras".into())),
        };
        let (start_us, end_us) = match (&body.start, &body.end) {
            (None, None) => (request.start_us, request.end_us),
            (Some(s), Some(e)) => parse_range(s, e)?,
            _ => return Err(EvidenceError::Invalid("give both start and end, or neither (the whole approved range)".into())),
        };
        if start_us < request.start_us || end_us > request.end_us {
            return Err(EvidenceError::Forbidden(format!(
                "{} – {} is outside the approved range {} – {}",
                format_rfc3339(start_us),
                format_rfc3339(end_us),
                format_rfc3339(request.start_us),
                format_rfc3339(request.end_us)
            )));
        }
        if end_us - start_us > MAX_EXPORT_HOURS * 3_600_000_000 {
            return Err(EvidenceError::Invalid(format!("an export covers at most {MAX_EXPORT_HOURS} hours; export in parts")));
        }
        let mut row = ExportRow {
            id: new_id(),
            request_id: request.id,
            camera_id: camera.clone(),
            start_us,
            end_us,
            state: "pending".into(),
            error: None,
            created_by: who.username.clone(),
            created_at_us: now,
            finished_at_us: None,
            bytes: None,
            sha256: None,
            actual_start_us: None,
            actual_end_us: None,
            hold_id: None,
        };
        self.db.insert_evidence_export(&row).await?;
        let camera_id = crate::config::CameraId::parse(&camera).map_err(EvidenceError::Invalid)?;
        let hold = holds::place_hold(
            &self.db,
            NewHold {
                camera_id,
                start_us,
                end_us,
                case_ref: request.case_ref.clone(),
                reason: format!("evidence export {} of request {}: {}", row.id, request.id, request.reason),
            },
            &Actor::user(who),
            now,
        )
        .await?;
        self.db.set_export_hold(&row.id, hold.hold.id).await?;
        row.hold_id = Some(hold.hold.id);
        audit_request(
            &self.db,
            who,
            Action::ExportCreated,
            request,
            serde_json::json!({
                "export_id": row.id, "camera_id": camera, "export_start": format_rfc3339(start_us),
                "export_end": format_rfc3339(end_us), "hold_id": hold.hold.id,
            }),
        )
        .await?;
        let me = self.clone();
        let (job, req) = (row.clone(), request.clone());
        tokio::spawn(async move {
            let _turn = me.one_at_a_time.acquire().await.expect("never closed");
            let started = std::time::Instant::now();
            match me.make(&job, &req).await {
                Ok(done) => info!(export = %job.id, bytes = done.bytes, secs = started.elapsed().as_secs_f64(), "export ready"),
                Err(e) => {
                    warn!(export = %job.id, "export failed: {e}");
                    let _ = std::fs::remove_dir_all(me.files(&job.id).dir);
                    if let Err(e) = me.db.fail_export(&job.id, now_us(), &e).await {
                        warn!(export = %job.id, "cannot record the failure: {e}");
                    }
                }
            }
        });
        Ok(row)
    }

    /// The job: fetch and check the segments, mux, hash, write the manifest, sign.
    async fn make(&self, job: &ExportRow, request: &RequestRow) -> Result<Made, String> {
        let files = self.files(&job.id);
        std::fs::create_dir_all(&files.dir).map_err(|e| format!("cannot create {}: {e}", files.dir.display()))?;
        let segments: Vec<SegmentRow> = self
            .db
            .segments_between(&job.camera_id, job.start_us, job.end_us)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|s| s.state != "deleting")
            .collect();
        if segments.is_empty() {
            return Err(format!(
                "camera {} has no footage between {} and {}",
                job.camera_id,
                format_rfc3339(job.start_us),
                format_rfc3339(job.end_us)
            ));
        }
        // Each source, checked against the index, into a file beside the export (an
        // hour is ~2 GB: not for memory), with its sample table.
        // Fetching (and hashing) the next segments overlaps staging this one: a few
        // segments in flight, in order, so the GETs, the hashing and the disk keep each
        // other busy instead of taking turns.
        let mut tables = Vec::with_capacity(segments.len());
        let mut src_paths = Vec::with_capacity(segments.len());
        let sources = self.sources.clone();
        let mut fetched = futures::stream::iter(segments.iter().cloned().map(|s| {
            let sources = sources.clone();
            async move { sources.whole(&s).await.map_err(|e| e.to_string()) }
        }))
        .buffered(FETCH_AHEAD);
        let mut i = 0usize;
        while let Some(data) = fetched.next().await {
            let data = data?;
            let key = &segments[i].object_key;
            let path = files.dir.join(format!("source-{i:05}.mp4"));
            let (table, path) = tokio::task::spawn_blocking(move || -> Result<_, String> {
                let table = crate::record::fmp4::sample_table(&data).map_err(|e| e.to_string())?;
                std::fs::write(&path, &data).map_err(|e| format!("writing {}: {e}", path.display()))?;
                Ok((table, path))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("segment {key}: {e}"))?;
            tables.push(table);
            src_paths.push(path);
            i += 1;
        }
        drop(fetched);
        let inputs: Vec<mp4::Input<'_>> =
            segments.iter().zip(&tables).map(|(s, t)| mp4::Input { start_us: s.start_us, table: t }).collect();
        let plan = mp4::plan(&inputs, job.start_us, job.end_us).map_err(|e| e.to_string())?;
        let facts = PlanFacts::of(&plan);
        // Write the MP4, hashing as it goes; fsync before it counts.
        let mp4_path = files.mp4.clone();
        let (bytes, sha256) = tokio::task::spawn_blocking(move || write_mp4(&plan, &src_paths, &mp4_path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("writing the export: {e}"))?;
        for i in 0..segments.len() {
            let _ = std::fs::remove_file(files.dir.join(format!("source-{i:05}.mp4")));
        }
        // The gaps inside the exported range, with their recorded causes.
        let now = now_us();
        let spans: Vec<(WallUs, WallUs)> = segments.iter().map(|s| (s.start_us, s.end_us)).collect();
        let events = self.db.events_between(&job.camera_id, job.start_us - 60_000_000, job.end_us).await.map_err(|e| e.to_string())?;
        let gaps = find_gaps(job.start_us, job.end_us, now, &spans, &events);
        let centre = self.db.centre().await.map(|c| c.name).unwrap_or_default();
        let used: Vec<&SegmentRow> = facts.sources.iter().filter_map(|&i| segments.get(i)).collect();
        let manifest = Manifest {
            format: "cradle-evidence-manifest/1",
            export_id: &job.id,
            case_ref: &request.case_ref,
            reason: &request.reason,
            request: ManifestRequest {
                id: request.id,
                requested_by: &request.requested_by,
                requested_at: format_rfc3339(request.requested_at_us),
                approved_by: request.decided_by.as_deref().unwrap_or(""),
                approved_at: request.decided_at_us.map(format_rfc3339).unwrap_or_default(),
                approval_note: request.decision_note.as_deref(),
                expires_at: request.expires_at_us.map(format_rfc3339).unwrap_or_default(),
            },
            exported_by: &job.created_by,
            camera: &job.camera_id,
            requested_range: Range { start: format_rfc3339(job.start_us), end: format_rfc3339(job.end_us) },
            actual_range: Range { start: format_rfc3339(facts.actual_start_us), end: format_rfc3339(facts.actual_end_us) },
            file: ManifestFile {
                name: file_name(job),
                bytes,
                sha256: &sha256,
                duration_seconds: facts.duration_90k as f64 / 90_000.0,
                frames: facts.frames,
                codecs: facts.codecs.clone(),
                timeline: "position t in the file is actual_range.start + t; gaps are held as the last frame",
            },
            segments: used
                .iter()
                .map(|s| ManifestSegment {
                    key: &s.object_key,
                    sha256: &s.sha256,
                    bytes: s.bytes,
                    start: format_rfc3339(s.start_us),
                    end: format_rfc3339(s.end_us),
                })
                .collect(),
            gaps: gaps
                .iter()
                .map(|g| ManifestGap {
                    start: format_rfc3339(g.start_us),
                    end: format_rfc3339(g.end_us),
                    seconds: (g.end_us - g.start_us) as f64 / 1e6,
                    cause: &g.cause,
                })
                .collect(),
            server: ServerIdentity {
                centre,
                hostname: hostname(),
                software: format!("cradle {}", env!("CARGO_PKG_VERSION")),
                public_key_sha256: self.signer.fingerprint(),
            },
            created_at: format_rfc3339(now),
            signature: "Ed25519 (RFC 8032) over this file's exact bytes, in the .sig file beside it",
        };
        let mut text = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        text.push(b'\n');
        let sig = self.signer.sign(&text);
        write_synced(&files.manifest, &text).map_err(|e| format!("writing the manifest: {e}"))?;
        write_synced(&files.signature, &sig).map_err(|e| format!("writing the signature: {e}"))?;
        self.db
            .finish_export(&job.id, now_us(), bytes as i64, &sha256, (facts.actual_start_us, facts.actual_end_us))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Made { bytes })
    }
}

struct Made {
    bytes: u64,
}

pub struct ExportFiles {
    pub dir: PathBuf,
    pub mp4: PathBuf,
    pub manifest: PathBuf,
    pub signature: PathBuf,
}

/// What the manifest needs from the plan (the plan itself moves into the writer).
struct PlanFacts {
    actual_start_us: WallUs,
    actual_end_us: WallUs,
    duration_90k: u64,
    frames: u64,
    codecs: Vec<String>,
    sources: Vec<usize>,
}

impl PlanFacts {
    fn of(p: &mp4::Plan) -> PlanFacts {
        PlanFacts {
            actual_start_us: p.actual_start_us,
            actual_end_us: p.actual_end_us,
            duration_90k: p.duration_90k,
            frames: p.frames,
            codecs: p.codecs.clone(),
            sources: p.sources_used.clone(),
        }
    }
}

/// Writes the planned MP4 from the source files, returning its size and SHA-256 (hex).
fn write_mp4(plan: &mp4::Plan, sources: &[PathBuf], out: &Path) -> std::io::Result<(u64, String)> {
    let maps = sources
        .iter()
        .map(|p| {
            let f = std::fs::File::open(p)?;
            // SAFETY: the files are ours, written above and never changed while mapped.
            unsafe { memmap2::Mmap::map(&f) }
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let slices: Vec<&[u8]> = maps.iter().map(|m| &m[..]).collect();
    let f = std::fs::File::create(out)?;
    let mut w = HashingWriter { inner: std::io::BufWriter::with_capacity(1 << 20, f), sha: Sha256::new(), bytes: 0 };
    plan.write_to(&slices, &mut w)?;
    let HashingWriter { inner, sha, bytes } = w;
    let f = inner.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok((bytes, hex::encode(sha.finalize())))
}

struct HashingWriter<W: Write> {
    inner: W,
    sha: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

// ---- the manifest ---------------------------------------------------------------------

#[derive(Serialize)]
struct Manifest<'a> {
    format: &'static str,
    export_id: &'a str,
    case_ref: &'a str,
    reason: &'a str,
    request: ManifestRequest<'a>,
    exported_by: &'a str,
    camera: &'a str,
    requested_range: Range,
    actual_range: Range,
    file: ManifestFile<'a>,
    segments: Vec<ManifestSegment<'a>>,
    gaps: Vec<ManifestGap<'a>>,
    server: ServerIdentity,
    created_at: String,
    signature: &'static str,
}

#[derive(Serialize)]
struct ManifestRequest<'a> {
    id: i64,
    requested_by: &'a str,
    requested_at: String,
    approved_by: &'a str,
    approved_at: String,
    approval_note: Option<&'a str>,
    expires_at: String,
}

#[derive(Serialize)]
struct Range {
    start: String,
    end: String,
}

#[derive(Serialize)]
struct ManifestFile<'a> {
    name: String,
    bytes: u64,
    sha256: &'a str,
    duration_seconds: f64,
    frames: u64,
    codecs: Vec<String>,
    timeline: &'static str,
}

#[derive(Serialize)]
struct ManifestSegment<'a> {
    key: &'a str,
    sha256: &'a str,
    bytes: i64,
    start: String,
    end: String,
}

#[derive(Serialize)]
struct ManifestGap<'a> {
    start: String,
    end: String,
    seconds: f64,
    cause: &'a str,
}
