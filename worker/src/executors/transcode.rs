//! The `transcode` executor: streams the job's input video from the object store (only the
//! tenant's own objects) into a scratch file, transcodes it on a blocking thread under a time
//! limit (a stop flag ends FFmpeg's loop) to a web-ready H.264 MP4 — NVENC where the worker's
//! start-up probe proved a session opens, NVDEC decoding on a real GPU, libx264 otherwise — and,
//! when asked, a VP9 WebM, a poster frame and a looping animated WebP. It stores the results
//! with the encoder and decoder chosen and why (also counted in `gantry_transcodes_total`), and
//! reports the input's duration for per-minute pricing. Bad media fails the job as `permanent`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gantry_codecs::MediaError;
use gantry_codecs::video::{AnimatedOptions, Container, HwPlan, TranscodeOptions, TranscodeReport, VideoLimits};
use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome, Payload, ProgressHandle,
    ResultRef, Stage, TranscodePayload, Usage,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use tracing::Instrument as _;

use super::media_job::{download_input, run_blocking};
use super::{Executor, failed};
use crate::gpu::GpuInventory;
use crate::outputs::OutputStore;

/// Labels of `gantry_transcodes_total`: bounded sets, never a job or tenant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TranscodeLabels {
    /// `mp4` or `webm`.
    pub container: String,
    /// `libx264`, `h264_nvenc`, `libvpx-vp9`.
    pub encoder: String,
    /// Why that encoder (`nvenc_proven`, `no_nvenc`, `nvenc_open_failed`, `vp9`).
    pub reason: String,
    /// `gpu` (NVDEC) or `cpu`.
    pub decode: String,
}

/// Runs `transcode` jobs.
#[derive(Clone, Debug)]
pub struct TranscodeExecutor {
    outputs: OutputStore,
    limits: VideoLimits,
    time_limit: Duration,
    /// The worker's GPUs, as read at start-up: each job's plan comes from the GPU it was
    /// placed on.
    gpus: Arc<OnceLock<GpuInventory>>,
    transcodes: Family<TranscodeLabels, Counter>,
}

impl TranscodeExecutor {
    /// Reads inputs from and writes outputs to `outputs`.
    pub fn new(outputs: OutputStore) -> Self {
        Self {
            outputs,
            limits: VideoLimits::default(),
            time_limit: Duration::from_secs(1500),
            gpus: Arc::new(OnceLock::new()),
            transcodes: Family::default(),
        }
    }

    /// The media plan of a job placed on GPU `placed` (see [`GpuInventory::hw_plan_for`]).
    fn hw(&self, placed: Option<u32>) -> HwPlan {
        match self.gpus.get() {
            Some(inv) => inv.hw_plan_for(placed),
            None => HwPlan::cpu("the GPU inventory was not read"),
        }
    }

    fn count(&self, container: &str, r: &TranscodeReport) {
        self.transcodes
            .get_or_create(&TranscodeLabels {
                container: container.into(),
                encoder: r.encoder.into(),
                reason: r.encoder_why.as_str().into(),
                decode: if r.decoder.ends_with("_cuvid") { "gpu" } else { "cpu" }.into(),
            })
            .inc();
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
                out = this.transcode(&job, p, stop.clone(), &ctx.progress) => out,
                _ = ctx.cancel.cancelled() => failed(ErrorClass::Cancelled, "stopped"),
            };
            // Whatever ended the attempt, FFmpeg's loop stops at its next packet.
            stop.store(true, Ordering::Relaxed);
            out
        })
    }

    fn set_gpus(&self, inventory: &GpuInventory) {
        let plan = inventory.hw_plan();
        tracing::info!(
            nvenc_gpu = ?plan.nvenc_gpu,
            nvdec_gpu = ?plan.cuvid_gpu,
            "transcode: {}",
            if plan.nvenc_gpu.is_some() { "NVENC proven" } else { plan.no_nvenc_reason.as_str() }
        );
        let _ = self.gpus.set(inventory.clone());
    }

    fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "gantry_transcodes",
            "Transcoded outputs, by container, encoder, why that encoder, and decode path",
            self.transcodes.clone(),
        );
    }
}

/// What one attempt made, on disk.
struct Made {
    mp4: TranscodeReport,
    webm: Option<TranscodeReport>,
    previews: bool,
}

impl TranscodeExecutor {
    async fn transcode(
        &self,
        job: &ClaimedJob,
        p: &TranscodePayload,
        stop: Arc<AtomicBool>,
        progress: &ProgressHandle,
    ) -> JobOutcome {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => return failed(ErrorClass::Retryable, format!("scratch space: {e}")),
        };
        let src = dir.path().join("input");
        progress.report(Stage::Downloading, None);
        if let Err(out) = download_input(&self.outputs, &job.spec, &p.input, &src, self.limits.max_input_bytes).await {
            return out;
        }
        let mp4 = TranscodeOptions {
            crf: p.crf.unwrap_or(23),
            preset: p.preset.clone().unwrap_or_else(|| "medium".into()),
            max_height: p.max_height,
            max_fps: p.max_fps,
            container: Container::Mp4,
            hw: self.hw(job.gpu),
        };
        let (limits, secs, want_webm, previews) = (self.limits, self.time_limit.as_secs(), p.webm, p.previews);
        let (flag, work_dir) = (stop.clone(), dir.path().to_owned());
        // How far along each output is (thousandths of the input), read twice a second.
        let done = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let watched = done.clone();
        let work = move || -> Result<Made, MediaError> {
            let d = work_dir.as_path();
            let mp4_report = gantry_codecs::video::transcode_watched(
                &src,
                &d.join("output.mp4"),
                &mp4,
                &limits,
                &flag,
                secs,
                &watched[0],
            )?;
            let webm = if want_webm {
                let opts = TranscodeOptions {
                    container: Container::WebM,
                    ..mp4.clone()
                };
                Some(gantry_codecs::video::transcode_watched(
                    &src,
                    &d.join("output.webm"),
                    &opts,
                    &limits,
                    &flag,
                    secs,
                    &watched[1],
                )?)
            } else {
                None
            };
            if previews {
                // Previews come from the web-ready output: a poster a tenth of the way in, and
                // the first three seconds as a looping WebP.
                let out = d.join("output.mp4");
                let poster = gantry_codecs::video::poster(&out, 0.1, 640, gantry_codecs::ImageFormat::Jpeg, &limits)?;
                std::fs::write(d.join("poster.jpg"), poster.bytes)
                    .map_err(|e| MediaError::Internal(format!("writing the poster: {e}")))?;
                gantry_codecs::video::animated_webp(
                    &out,
                    &d.join("preview.webp"),
                    &AnimatedOptions::default(),
                    &limits,
                    &flag,
                    secs,
                )?;
            }
            Ok(Made {
                mp4: mp4_report,
                webm,
                previews,
            })
        };
        let outputs = if want_webm { 2 } else { 1 };
        let report_encoding = async {
            loop {
                let sum: u32 = done.iter().take(outputs).map(|d| d.load(Ordering::Relaxed)).sum();
                progress.report(Stage::Encoding, Some(sum as f32 / (outputs as f32 * 10.0)));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let made = tokio::select! {
            made = run_blocking(self.time_limit, work).instrument(tracing::info_span!("transcode.ffmpeg")) => made,
            never = report_encoding => never,
        };
        progress.report(Stage::Uploading, None);
        let made = match made {
            Ok(r) => r,
            Err(out) => {
                stop.store(true, Ordering::Relaxed);
                return out;
            }
        };
        self.count("mp4", &made.mp4);
        if let Some(w) = &made.webm {
            self.count("webm", w);
        }
        let mut extra = Vec::new();
        if made.webm.is_some() {
            extra.push(("webm", "output.webm", "video/webm"));
        }
        if made.previews {
            extra.push(("poster", "poster.jpg", "image/jpeg"));
            extra.push(("preview", "preview.webp", "image/webp"));
        }
        let mut details = Vec::new();
        for (label, name, content_type) in extra {
            match self.store(job, dir.path(), name, content_type).await {
                Ok(r) => details.push((label, r.object_key)),
                Err(out) => return out,
            }
        }
        let mut r = match self.store(job, dir.path(), "output.mp4", "video/mp4").await {
            Ok(r) => r,
            Err(out) => return out,
        };
        let report = &made.mp4;
        for (label, key) in details {
            r.details.insert(label.into(), key);
        }
        r.details.insert("encoder".into(), report.encoder.into());
        r.details.insert("encoder_reason".into(), report.encoder_reason.clone());
        r.details.insert("decoder".into(), report.decoder.clone());
        r.details.insert("decoder_reason".into(), report.decoder_reason.clone());
        r.details.insert("input_codec".into(), report.input_codec.clone());
        r.details.insert("audio".into(), report.audio.clone());
        r.details
            .insert("size".into(), format!("{}x{}", report.width, report.height));
        JobOutcome::Succeeded(Completion {
            output: Some(r),
            usage: Some(Usage {
                outputs: Some(1 + u32::from(made.webm.is_some())),
                seconds: Some(report.duration_secs.ceil() as u32),
                ..Default::default()
            }),
        })
    }

    /// Stores the scratch file `name` as the job's output of that name.
    async fn store(
        &self,
        job: &ClaimedJob,
        dir: &Path,
        name: &str,
        content_type: &str,
    ) -> Result<ResultRef, JobOutcome> {
        // Streamed from the scratch file: a long video never sits in memory whole.
        self.outputs
            .put_file(&job.spec, name, &dir.join(name), content_type)
            .await
            .map_err(|e| failed(ErrorClass::Retryable, format!("storing {name}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::tests::gpu;
    use crate::gpu::{InventorySource, NvencStatus};

    #[test]
    fn each_job_decodes_and_encodes_on_the_gpu_it_was_placed_on() {
        let store = OutputStore::open("memory://").expect("store");
        let t = TranscodeExecutor::new(store);
        assert_eq!(t.hw(Some(0)).cuvid_gpu, None, "no inventory read yet: the CPU");
        let unavailable = NvencStatus::Unavailable {
            reason: "unsupported device".into(),
        };
        t.set_gpus(&GpuInventory {
            source: InventorySource::Nvml,
            gpus: vec![
                gpu(0, "NVIDIA H100", unavailable),
                gpu(1, "NVIDIA L4", NvencStatus::Proven),
                gpu(2, "NVIDIA L4", NvencStatus::Proven),
            ],
            cpu_only_reason: None,
        });
        for (placed, nvenc, nvdec) in [(0, None, Some(0)), (1, Some(1), Some(1)), (2, Some(2), Some(2))] {
            let hw = t.hw(Some(placed));
            assert_eq!((hw.nvenc_gpu, hw.cuvid_gpu), (nvenc, nvdec), "placed on GPU {placed}");
        }
    }
}
