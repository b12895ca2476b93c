//! The `transcode` executor: reads the job's input video from the object store (only the
//! tenant's own objects) into a temporary file, transcodes it to a web-ready H.264 MP4 on a
//! blocking thread under a time limit (a stop flag ends FFmpeg's loop), stores the result with
//! the encoder chosen and why, and reports the input's duration for per-minute pricing. Bad
//! media fails the job as `permanent` with the reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gantry_codecs::MediaError;
use gantry_codecs::video::{TranscodeOptions, VideoLimits};
use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome, Payload, TranscodePayload,
    Usage,
};

use super::media_job::{read_input, run_blocking};
use super::{Executor, failed};
use crate::outputs::OutputStore;

/// Runs `transcode` jobs.
#[derive(Clone, Debug)]
pub struct TranscodeExecutor {
    outputs: OutputStore,
    limits: VideoLimits,
    time_limit: Duration,
}

impl TranscodeExecutor {
    /// Reads inputs from and writes outputs to `outputs`.
    pub fn new(outputs: OutputStore) -> Self {
        Self {
            outputs,
            limits: VideoLimits::default(),
            time_limit: Duration::from_secs(1500),
        }
    }
}

impl Executor for TranscodeExecutor {
    fn kind(&self) -> JobKind {
        JobKind::Transcode
    }

    fn run(&self, job: ClaimedJob, ctx: JobContext) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move {
            let Payload::Transcode(p) = &job.spec.body else {
                return failed(ErrorClass::Permanent, "not a transcode payload");
            };
            let stop = Arc::new(AtomicBool::new(false));
            let out = tokio::select! {
                out = this.transcode(&job, p, stop.clone()) => out,
                _ = ctx.cancel.cancelled() => failed(ErrorClass::Cancelled, "stopped"),
            };
            // Whatever ended the attempt, FFmpeg's loop stops at its next packet.
            stop.store(true, Ordering::Relaxed);
            out
        })
    }
}

impl TranscodeExecutor {
    async fn transcode(&self, job: &ClaimedJob, p: &TranscodePayload, stop: Arc<AtomicBool>) -> JobOutcome {
        let input = match read_input(&self.outputs, &job.spec, &p.input).await {
            Ok(b) => b,
            Err(out) => return out,
        };
        let opts = TranscodeOptions {
            crf: p.crf.unwrap_or(23),
            preset: p.preset.clone().unwrap_or_else(|| "medium".into()),
            max_height: p.max_height,
            max_fps: p.max_fps,
        };
        let (limits, secs, previews) = (self.limits, self.time_limit.as_secs(), p.previews);
        let flag = stop.clone();
        let work = move || -> Result<_, MediaError> {
            let dir = tempfile::tempdir().map_err(|e| MediaError::Internal(format!("scratch space: {e}")))?;
            let (src, dst) = (dir.path().join("input"), dir.path().join("output.mp4"));
            std::fs::write(&src, &input).map_err(|e| MediaError::Internal(format!("scratch space: {e}")))?;
            let report = gantry_codecs::video::transcode(&src, &dst, &opts, &limits, &flag, secs)?;
            let bytes = std::fs::read(&dst).map_err(|e| MediaError::Internal(format!("reading the output: {e}")))?;
            // The poster comes from the web-ready output, a tenth of the way in.
            let poster = if previews {
                Some(gantry_codecs::video::poster(
                    &dst,
                    0.1,
                    640,
                    gantry_codecs::ImageFormat::Jpeg,
                    &limits,
                )?)
            } else {
                None
            };
            Ok((report, bytes, poster))
        };
        let (report, bytes, poster) = match run_blocking(self.time_limit, work).await {
            Ok(r) => r,
            Err(out) => {
                stop.store(true, Ordering::Relaxed);
                return out;
            }
        };
        let poster_key = match poster {
            Some(p) => match self
                .outputs
                .put(&job.spec, "poster.jpg", Bytes::from(p.bytes), "image/jpeg")
                .await
            {
                Ok(r) => Some(r.object_key),
                Err(e) => return failed(ErrorClass::Retryable, format!("storing the poster: {e}")),
            },
            None => None,
        };
        match self
            .outputs
            .put(&job.spec, "output.mp4", Bytes::from(bytes), "video/mp4")
            .await
        {
            Ok(mut r) => {
                if let Some(k) = poster_key {
                    r.details.insert("poster".into(), k);
                }
                r.details.insert("encoder".into(), report.encoder.into());
                r.details.insert("encoder_reason".into(), report.encoder_reason.clone());
                r.details.insert("input_codec".into(), report.input_codec.clone());
                r.details.insert("audio".into(), report.audio.clone());
                r.details
                    .insert("size".into(), format!("{}x{}", report.width, report.height));
                JobOutcome::Succeeded(Completion {
                    output: Some(r),
                    usage: Some(Usage {
                        outputs: Some(1),
                        seconds: Some(report.duration_secs.ceil() as u32),
                        ..Default::default()
                    }),
                })
            }
            Err(e) => failed(ErrorClass::Retryable, format!("storing the result: {e}")),
        }
    }
}
