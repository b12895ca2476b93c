//! The `csam_hash` executor: streams the job's input (only the tenant's own objects) to a
//! scratch file and has the shared [`Scanner`] hash it and match it against the abuse hash
//! lists the job names (every list when it names none). On a match the scanner acts — the input
//! and the job's files deleted, trust lowered, a moderation record, the job `blocked`;
//! otherwise the job succeeds with a `report.json` of the hashes. A file that cannot be hashed
//! fails; it is never reported clean.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gantry_queue::{
    ClaimedJob, Completion, CsamHashPayload, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome, Payload,
    ProgressHandle, Stage, Usage,
};
use prometheus_client::registry::Registry;

use super::media_job::download_input;
use super::{Executor, failed};
use crate::scan::{Disposition, Hashes, Scanner};

/// Runs `csam_hash` jobs.
#[derive(Clone, Debug)]
pub struct CsamHashExecutor {
    scanner: Scanner,
}

impl CsamHashExecutor {
    /// An executor hashing and matching through `scanner`.
    pub fn new(scanner: Scanner) -> Self {
        Self { scanner }
    }
}

impl Executor for CsamHashExecutor {
    fn kind(&self) -> JobKind {
        JobKind::CsamHash
    }

    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move {
            let Payload::CsamHash(p) = &job.spec.body else {
                return failed(ErrorClass::Permanent, "not a csam_hash payload");
            };
            tokio::select! {
                out = this.hash_and_match(&job, p, &ctx.progress) => out,
                _ = ctx.cancel.cancelled() => failed(ErrorClass::Cancelled, "stopped"),
            }
        })
    }

    fn register_metrics(&self, registry: &mut Registry) {
        self.scanner.register_metrics(registry);
    }
}

impl CsamHashExecutor {
    async fn hash_and_match(&self, job: &ClaimedJob, p: &CsamHashPayload, progress: &ProgressHandle) -> JobOutcome {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => return failed(ErrorClass::Retryable, format!("scratch space: {e}")),
        };
        let src = dir.path().join("input");
        progress.report(Stage::Downloading, None);
        if let Err(out) = download_input(self.scanner.outputs(), &job.spec, &p.input, &src, 2 << 30).await {
            return out;
        }
        // Unhashable media is never clean: the job fails with the reason. A video's frames
        // hashed so far are its progress, read twice a second.
        let done = Arc::new(AtomicU32::new(0));
        let report_hashing = async {
            loop {
                progress.report(Stage::Hashing, Some(done.load(Ordering::Relaxed) as f32 / 10.0));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let hashed = tokio::select! {
            h = self.scanner.hash_watched(&src, p.media.as_deref(), done.clone()) => h,
            never = report_hashing => never,
        };
        let hashes = match hashed {
            Ok(h) => h,
            Err(out) => return out,
        };
        progress.report(Stage::Scanning, None);
        let files = [(p.input.as_str(), &hashes)];
        let verdict = match self.scanner.check(&files, &p.lists).await {
            Ok(v) => v,
            Err(out) => return out,
        };
        match self.scanner.dispose(&verdict, &files).await {
            Err(out) => out,
            Ok(Disposition::Block(m)) => self.scanner.block(&job.spec, Some(&p.input), &m).await,
            Ok(Disposition::Review(m)) => match self.clean(job, &hashes, &verdict.checked).await {
                // The report a reviewer's clear releases; the input is what is held.
                JobOutcome::Succeeded(done) => self.scanner.hold(&job.spec, Some(&p.input), &files, &m, done).await,
                other => other,
            },
            Ok(Disposition::Log(m)) => match self.scanner.log_matches(&job.spec, &m).await {
                Ok(()) => self.clean(job, &hashes, &verdict.checked).await,
                Err(out) => out,
            },
            Ok(Disposition::Clean) => self.clean(job, &hashes, &verdict.checked).await,
        }
    }

    async fn clean(&self, job: &ClaimedJob, hashes: &Hashes, checked: &[String]) -> JobOutcome {
        let report = serde_json::json!({
            "verdict": "clean",
            "lists": checked,
            "hashes": hashes,
        });
        match self
            .scanner
            .outputs()
            .put(
                &job.spec,
                "report.json",
                Bytes::from(report.to_string()),
                "application/json",
            )
            .await
        {
            Ok(mut r) => {
                r.details.insert("verdict".into(), "clean".into());
                r.details.insert("media".into(), hashes.media.into());
                r.details.insert("lists".into(), checked.join(","));
                if let Some(h) = hashes.pdq.first() {
                    r.details.insert("pdq".into(), h.clone());
                }
                if let Some(q) = hashes.quality.first() {
                    r.details.insert("quality".into(), q.to_string());
                }
                JobOutcome::Succeeded(Completion {
                    output: Some(r),
                    usage: Some(Usage {
                        outputs: Some(0),
                        ..Default::default()
                    }),
                })
            }
            Err(e) => failed(ErrorClass::Retryable, format!("storing the report: {e}")),
        }
    }
}
