//! The `upscale` executor: reads the job's input image from the object store (only the
//! tenant's own objects), resizes it on the CPU with fast_image_resize (2×, 4× or fit-within;
//! Lanczos3, alpha premultiplied), re-encodes it without metadata and stores the result.
//! Bad media fails the job as `permanent` with the reason; decoding runs on a blocking thread
//! under a time limit. AI upscaling by a remote model is a `generate` job.

use std::time::Duration;

use bytes::Bytes;
use gantry_codecs::{ImageFormat, ImageLimits, MediaError, Resize};
use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome, Payload, UpscalePayload, Usage,
};

use super::Executor;
use crate::outputs::{OutputError, OutputStore};

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

fn failed(class: ErrorClass, message: impl Into<String>) -> JobOutcome {
    JobOutcome::Failed {
        class,
        message: message.into(),
    }
}

/// Whether `key` is one of `tenant`'s objects (its jobs' outputs, or its uploads).
pub fn owned_by(key: &str, tenant: &str) -> bool {
    let ok = |prefix: &str| {
        key.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(tenant))
            .is_some_and(|r| r.starts_with('/'))
    };
    !key.split('/').any(|p| p == ".." || p == ".") && (ok("jobs/") || ok("inputs/"))
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
                out = this.upscale(&job, p) => out,
                _ = ctx.cancel.cancelled() => failed(ErrorClass::Cancelled, "stopped"),
            }
        })
    }
}

impl UpscaleExecutor {
    async fn upscale(&self, job: &ClaimedJob, p: &UpscalePayload) -> JobOutcome {
        if !owned_by(&p.input, &job.spec.tenant) {
            return failed(ErrorClass::Permanent, "the input is not one of this tenant's objects");
        }
        let size = match (p.scale, p.fit_within) {
            (Some(s), None) => Resize::Scale(s),
            (None, Some([w, h])) => Resize::FitWithin(w, h),
            _ => return failed(ErrorClass::Permanent, "give either scale (2 or 4) or fit_within"),
        };
        let format = match p.format.as_deref().map(ImageFormat::parse).transpose() {
            Ok(f) => f,
            Err(e) => return failed(ErrorClass::Permanent, e.to_string()),
        };
        let input = match self.outputs.get(&p.input).await {
            Ok(b) => b,
            Err(OutputError::Store(object_store::Error::NotFound { .. })) => {
                return failed(ErrorClass::Permanent, "the input object does not exist");
            }
            Err(e) => return failed(ErrorClass::Retryable, format!("reading the input: {e}")),
        };
        let (limits, quality) = (self.limits, p.quality);
        let work = tokio::task::spawn_blocking(move || gantry_codecs::upscale(&input, size, format, quality, &limits));
        let encoded = match tokio::time::timeout(self.time_limit, work).await {
            Ok(Ok(Ok(e))) => e,
            Ok(Ok(Err(e))) => {
                let class = if e.is_permanent() {
                    ErrorClass::Permanent
                } else {
                    ErrorClass::Retryable
                };
                return failed(class, e.to_string());
            }
            Ok(Err(_)) => return failed(ErrorClass::Retryable, "the resize thread failed"),
            Err(_) => {
                return failed(
                    ErrorClass::Permanent,
                    MediaError::Timeout(self.time_limit.as_secs()).to_string(),
                );
            }
        };
        let name = format!("output.{}", encoded.format.extension());
        let (w, h) = (encoded.width, encoded.height);
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

#[cfg(test)]
mod tests {
    use super::owned_by;

    #[test]
    fn only_the_tenants_own_objects() {
        assert!(owned_by("jobs/t1/01ABC/output-0.png", "t1"));
        assert!(owned_by("inputs/t1/photo.jpg", "t1"));
        assert!(!owned_by("jobs/t10/01ABC/output-0.png", "t1"));
        assert!(!owned_by("jobs/t2/01ABC/output-0.png", "t1"));
        assert!(!owned_by("jobs/t1/../t2/x.png", "t1"));
        assert!(!owned_by("t1/x.png", "t1"));
    }
}
