//! The release gate: wraps the executors that make media (generate, upscale, transcode) so
//! that every file under a successful job's folder — outputs, posters, previews — is hashed and
//! matched against every abuse hash list before the result is released to the platform.
//!
//! - No match: the result is released, its details saying `scan=clean`, how many files were
//!   scanned and against which list versions.
//! - A sure match: the job's files (and, for upscale and transcode, the input they were made
//!   from) are taken down (preserved, sealed, where the category says; deleted), the scanner
//!   records and counts the event with the prompt's SHA-256, lowers the user's trust, a report
//!   is made where the category reports, and the job ends `blocked` (nothing is released, the
//!   reservation refunded).
//! - Only near matches (a list's review band): nothing is released; the job is held in status
//!   `review` with an item in the review queue, until a reviewer clears (released) or confirms
//!   (taken down) it.
//! - A file that cannot be hashed: it is never released as clean. The job's files are deleted
//!   and the attempt fails with the reason (`permanent` for bad media, `retryable` for ours).
//!
//! The scan is the tenant's setting, carried by the job (`scan_outputs`, on by default).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome, JobSpec, Payload,
};
use prometheus_client::registry::Registry;
use tracing::Instrument as _;

use super::{Executor, failed};
use crate::gpu::GpuInventory;
use crate::scan::{Disposition, Hashes, Scanner};

/// Largest output the gate downloads to hash.
const MAX_OUTPUT_BYTES: u64 = 4 << 30;

/// An executor whose successful results are scanned before release.
pub struct Scanned {
    inner: Arc<dyn Executor>,
    scanner: Scanner,
}

impl std::fmt::Debug for Scanned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanned")
            .field("kind", &self.inner.kind())
            .finish_non_exhaustive()
    }
}

impl Scanned {
    /// Gates `inner`'s results behind `scanner`.
    pub fn new(inner: impl Executor, scanner: Scanner) -> Self {
        Self {
            inner: Arc::new(inner),
            scanner,
        }
    }
}

impl Executor for Scanned {
    fn kind(&self) -> JobKind {
        self.inner.kind()
    }

    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        let (inner, scanner) = (self.inner.clone(), self.scanner.clone());
        Box::pin(async move {
            let spec = job.spec.clone();
            let (cancel, progress) = (ctx.cancel.clone(), ctx.progress.clone());
            let out = inner.run(job, ctx).await;
            let JobOutcome::Succeeded(done) = out else {
                return out;
            };
            if !spec.scan_outputs {
                return JobOutcome::Succeeded(done);
            }
            progress.report(gantry_queue::Stage::Scanning, None);
            let span = tracing::info_span!("scan", kind = %spec.kind());
            tokio::select! {
                out = release(&scanner, &spec, done).instrument(span) => out,
                _ = cancel.cancelled() => failed(ErrorClass::Cancelled, "stopped while scanning the outputs"),
            }
        })
    }

    fn set_gpus(&self, inventory: &GpuInventory) {
        self.inner.set_gpus(inventory);
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.inner.register_metrics(registry);
        self.scanner.register_metrics(registry);
    }
}

/// What a file's name says it holds: `image`, `video`, `None` to sniff; files that are not
/// media (the manifest, reports) are skipped.
fn media_of(key: &str) -> Option<Option<&'static str>> {
    let ext = key
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "json" | "txt" => None,
        "png" | "jpg" | "jpeg" | "webp" | "gif" | "bmp" => Some(Some("image")),
        "mp4" | "webm" | "mov" | "mkv" | "m4v" => Some(Some("video")),
        _ => Some(None),
    }
}

/// The input a job made its outputs from (deleted with them on a match).
fn input_of(spec: &JobSpec) -> Option<&str> {
    match &spec.body {
        Payload::Upscale(p) => Some(&p.input),
        Payload::Transcode(p) => Some(&p.input),
        _ => None,
    }
}

/// Scans every media file under the job's folder; releases `done` when all are clean, holds it
/// for review on a near match, takes the content down on a sure one.
async fn release(scanner: &Scanner, spec: &JobSpec, mut done: Completion) -> JobOutcome {
    let started = Instant::now();
    let kind = spec.kind();
    let scanned = scan(scanner, spec).await;
    let disposed = match &scanned {
        Ok((files, v)) => {
            let refs: Vec<crate::scan::Scanned<'_>> = files.iter().map(|(k, h)| (k.as_str(), h)).collect();
            Some(scanner.dispose(v, &refs).await)
        }
        Err(_) => None,
    };
    let verdict = match &disposed {
        Some(Ok(Disposition::Clean | Disposition::Log(_))) => "clean",
        Some(Ok(Disposition::Review(_))) => "review",
        Some(Ok(Disposition::Block(_))) => "blocked",
        Some(Err(_)) | None => "unhashable",
    };
    scanner.count_scan(kind.as_str(), verdict, started.elapsed());
    let (files, v) = match scanned {
        Ok(x) => x,
        Err(out) => return discard(scanner, spec, out).await,
    };
    let refs: Vec<crate::scan::Scanned<'_>> = files.iter().map(|(k, h)| (k.as_str(), h)).collect();
    match disposed {
        Some(Ok(Disposition::Block(m))) => scanner.block(spec, input_of(spec), &m).await,
        Some(Ok(Disposition::Review(m))) => scanner.hold(spec, input_of(spec), &refs, &m, done).await,
        Some(Ok(d)) => {
            if let Disposition::Log(m) = &d
                && let Err(out) = scanner.log_matches(spec, m).await
            {
                return out;
            }
            if let Some(r) = done.output.as_mut() {
                r.details.insert("scan".into(), "clean".into());
                r.details.insert("scanned_files".into(), files.len().to_string());
                r.details.insert("scan_lists".into(), v.checked.join(","));
            }
            JobOutcome::Succeeded(done)
        }
        Some(Err(out)) => out,
        None => failed(ErrorClass::Retryable, "the scan did not finish"),
    }
}

/// Hashes every media file of the job and matches them all. Returns each file's key and hashes.
async fn scan(scanner: &Scanner, spec: &JobSpec) -> Result<(Vec<(String, Hashes)>, crate::scan::Verdict), JobOutcome> {
    let objects = scanner
        .outputs()
        .list_job(spec)
        .await
        .map_err(|e| failed(ErrorClass::Retryable, format!("listing the job's outputs: {e}")))?;
    let dir = tempfile::tempdir().map_err(|e| failed(ErrorClass::Retryable, format!("scratch space: {e}")))?;
    let mut all: Vec<(String, Hashes)> = Vec::new();
    for (i, (key, _size)) in objects.iter().enumerate() {
        let Some(media) = media_of(key) else { continue };
        let path = dir.path().join(format!("output-{i}"));
        scanner
            .outputs()
            .download(key, &path, MAX_OUTPUT_BYTES)
            .await
            .map_err(|e| failed(ErrorClass::Retryable, format!("reading {}: {e}", name_of(key))))?;
        let hashes = scanner.hash(&path, media).await.map_err(|out| match out {
            JobOutcome::Failed { class, message } => failed(
                class,
                format!(
                    "output {} could not be hashed, so it is not released: {message}",
                    name_of(key)
                ),
            ),
            other => other,
        })?;
        remove(&path);
        all.push((key.clone(), hashes));
    }
    let refs: Vec<crate::scan::Scanned<'_>> = all.iter().map(|(k, h)| (k.as_str(), h)).collect();
    let verdict = scanner.check(&refs, &[]).await?;
    Ok((all, verdict))
}

/// Deletes the job's files when a scan could not finish: nothing unscanned is left to release.
async fn discard(scanner: &Scanner, spec: &JobSpec, out: JobOutcome) -> JobOutcome {
    match scanner.outputs().delete_job(spec).await {
        Ok(n) => {
            tracing::warn!(job_id = %spec.id, kind = %spec.kind(), deleted = n, "outputs withheld: the scan did not finish")
        }
        Err(e) => tracing::error!(job_id = %spec.id, error = %e, "deleting unscanned outputs failed"),
    }
    out
}

fn name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::media_of;

    #[test]
    fn media_by_extension() {
        assert_eq!(media_of("jobs/t/1/output-0.PNG"), Some(Some("image")));
        assert_eq!(media_of("jobs/t/1/output.webm"), Some(Some("video")));
        assert_eq!(media_of("jobs/t/1/manifest.json"), None);
        assert_eq!(media_of("jobs/t/1/output-0.bin"), Some(None));
        assert_eq!(media_of("jobs/t/1/noext"), Some(None));
    }
}
