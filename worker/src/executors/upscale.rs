//! The `upscale` executor: reads the job's input image from the object store (only the
//! tenant's own objects), resizes it on the CPU with fast_image_resize (2×, 4× or fit-within;
//! Lanczos3, alpha premultiplied), re-encodes it without metadata and stores the result.
//! Bad media fails the job as `permanent` with the reason; decoding runs on a blocking thread
//! under a time limit. AI upscaling by a remote model is a `generate` job.

use std::time::Duration;

use bytes::Bytes;
use gantry_codecs::{ImageFormat, ImageLimits, Resize};
use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome, Payload, ProgressHandle, Stage,
    UpscalePayload, Usage,
};

use tracing::Instrument as _;

use super::media_job::{read_input, run_blocking};
use super::{Executor, failed};
use crate::outputs::OutputStore;

/// Runs `upscale` jobs.
#[derive(Clone, Debug)]
pub struct UpscaleExecutor {
    outputs: OutputStore,
    limits: ImageLimits,
    time_limit: Duration,
}

impl UpscaleExecutor {
    /// Reads inputs from and writes outputs to `outputs`.
    pub fn new(outputs: OutputStore) -> Self {
        Self {
            outputs,
            limits: ImageLimits::default(),
            time_limit: Duration::from_secs(60),
        }
    }
}

impl Executor for UpscaleExecutor {
    fn kind(&self) -> JobKind {
        JobKind::Upscale
    }

    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move {
            let Payload::Upscale(p) = &job.spec.body else {
                return failed(ErrorClass::Permanent, "not an upscale payload");
            };
            tokio::select! {
                out = this.upscale(&job, p, &ctx.progress) => out,
                _ = ctx.cancel.cancelled() => failed(ErrorClass::Cancelled, "stopped"),
            }
        })
    }
}

impl UpscaleExecutor {
    async fn upscale(&self, job: &ClaimedJob, p: &UpscalePayload, progress: &ProgressHandle) -> JobOutcome {
        let size = match (p.scale, p.fit_within) {
            (Some(s), None) => Resize::Scale(s),
            (None, Some([w, h])) => Resize::FitWithin(w, h),
            _ => return failed(ErrorClass::Permanent, "give either scale (2 or 4) or fit_within"),
        };
        let format = match p.format.as_deref().map(ImageFormat::parse).transpose() {
            Ok(f) => f,
            Err(e) => return failed(ErrorClass::Permanent, e.to_string()),
        };
        let max_bytes = self.limits.max_input_bytes as u64;
        progress.report(Stage::Downloading, None);
        let input = match read_input(&self.outputs, &job.spec, &p.input, max_bytes).await {
            Ok(b) => b,
            Err(out) => return out,
        };
        let (limits, quality) = (self.limits, p.quality);
        let input_len = input.len();
        let work = move || gantry_codecs::upscale(&input, size, format, quality, &limits);
        let span = tracing::info_span!("upscale.resize", input_bytes = input_len);
        progress.report(Stage::Upscaling, None);
        let encoded = match run_blocking(self.time_limit, work).instrument(span).await {
            Ok(e) => e,
            Err(out) => return out,
        };
        let name = format!("output.{}", encoded.format.extension());
        let (w, h) = (encoded.width, encoded.height);
        progress.report(Stage::Uploading, None);
        match self
            .outputs
            .put(
                &job.spec,
                &name,
                Bytes::from(encoded.bytes),
                encoded.format.content_type(),
            )
            .await
        {
            Ok(r) => JobOutcome::Succeeded(Completion {
                output: Some(r),
                usage: Some(Usage {
                    outputs: Some(1),
                    pixels: Some(u64::from(w) * u64::from(h)),
                    ..Default::default()
                }),
            }),
            Err(e) => failed(ErrorClass::Retryable, format!("storing the result: {e}")),
        }
    }
}
