//! The `upscale` executor: reads the job's input image from the object store (only the
//! tenant's own objects), makes it larger by one of two methods, re-encodes it without
//! metadata and stores the result:
//! - `lanczos3`: fast_image_resize on the CPU (2×, 4× or fit-within; alpha premultiplied);
//! - `neural`: the worker's super-resolution network, 4× (`crate::super_resolution`); an
//!   alpha channel is resized by Lanczos3 beside it.
//!
//! A job that names no method gets the network where this worker has one and the job asks for
//! 4×, else Lanczos3; the result's details say which ran and why (`method`, `method_reason`,
//! and `model`). Bad media, and `neural` on a worker without the network, fail the job as
//! `permanent` with the reason; the work runs on a blocking thread under a time limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gantry_codecs::{ImageFormat, ImageLimits, Resize};
use gantry_queue::{
    ClaimedJob, Completion, ErrorClass, HandlerFuture, JobContext, JobKind, JobOutcome, Payload, ProgressHandle, Stage,
    UpscaleMethod, UpscalePayload, Usage,
};

use tracing::Instrument as _;

use super::media_job::{read_input, run_blocking};
use super::{Executor, failed};
use crate::outputs::OutputStore;
use crate::super_resolution::Network;

/// Runs `upscale` jobs.
#[derive(Clone, Debug)]
pub struct UpscaleExecutor {
    outputs: OutputStore,
    limits: ImageLimits,
    time_limit: Duration,
    neural: Option<Arc<Network>>,
    neural_time_limit: Duration,
}

impl UpscaleExecutor {
    /// Reads inputs from and writes outputs to `outputs`.
    pub fn new(outputs: OutputStore) -> Self {
        Self {
            outputs,
            limits: ImageLimits::default(),
            time_limit: Duration::from_secs(60),
            neural: None,
            // The network on a CPU takes ~1.3 s per 128×128 tile on two cores.
            neural_time_limit: Duration::from_secs(900),
        }
    }

    /// Upscales by `network` where a job asks for `neural`, or names no method and asks for
    /// the network's scale.
    pub fn with_super_resolution(mut self, network: Arc<Network>) -> Self {
        self.neural = Some(network);
        self
    }
}

/// Largest input the network takes when the job names no method: on a CPU it costs ~1.3 s of
/// two cores per 128×128 tile, so 512×512 (~25 tiles) is about half a minute. Larger inputs
/// get Lanczos3 unless the job asks for `neural`.
pub const NEURAL_DEFAULT_MAX_PIXELS: u64 = 512 * 512;

/// Why a `w`×`h` input is too large for the network by default, if it is.
pub(crate) fn too_large_by_default(w: u32, h: u32) -> Option<String> {
    (u64::from(w) * u64::from(h) > NEURAL_DEFAULT_MAX_PIXELS).then(|| {
        format!(
            "default: a {w}x{h} input is over the {NEURAL_DEFAULT_MAX_PIXELS} pixels the network takes unless asked for"
        )
    })
}

/// Which method runs for `p` on a worker whose network (if any) has `network` = (name, scale),
/// and why; or why the job cannot run here.
pub(crate) fn choose_method(
    p: &UpscalePayload,
    network: Option<(&str, u32)>,
) -> Result<(UpscaleMethod, String), String> {
    let wants = |s: u32| p.scale.map(u32::from) == Some(s) && p.fit_within.is_none();
    match (p.method, network) {
        (Some(UpscaleMethod::Lanczos3), _) => Ok((UpscaleMethod::Lanczos3, "asked for".into())),
        (Some(UpscaleMethod::Neural), Some((name, s))) if wants(s) => {
            Ok((UpscaleMethod::Neural, format!("asked for; network {name}")))
        }
        (Some(UpscaleMethod::Neural), Some((name, s))) => {
            Err(format!("the network {name} upscales {s}x: give scale {s}"))
        }
        (Some(UpscaleMethod::Neural), None) => {
            Err("this worker has no super-resolution network (models/fetch.sh makes one; --sr-model names it)".into())
        }
        (None, Some((name, s))) if wants(s) => Ok((
            UpscaleMethod::Neural,
            format!("default: this worker has the network {name} and the job asks for {s}x"),
        )),
        (None, Some((name, s))) => Ok((
            UpscaleMethod::Lanczos3,
            format!("default: the network {name} upscales {s}x only, and the job asks for another size"),
        )),
        (None, None) => Ok((
            UpscaleMethod::Lanczos3,
            "default: this worker has no super-resolution network".into(),
        )),
    }
}

/// The neural path: decode, the network on the RGB (an alpha channel resized by Lanczos3
/// beside it), encode.
fn upscale_neural(
    network: &Network,
    bytes: &[u8],
    format: Option<ImageFormat>,
    quality: Option<u8>,
    limits: &ImageLimits,
) -> Result<gantry_codecs::Encoded, gantry_codecs::MediaError> {
    let s = network.scale();
    let scale = u8::try_from(s).unwrap_or(u8::MAX);
    // Refuse an output over the limits before decoding anything.
    let (_, w0, h0) = gantry_codecs::dimensions(bytes, limits)?;
    let _ = Resize::Scale(scale).target(w0, h0, limits)?;
    let d = gantry_codecs::decode(bytes, limits)?;
    let (w, h) = (d.image.width() * s, d.image.height() * s);
    let internal = |e: crate::super_resolution::SrError| gantry_codecs::MediaError::Internal(e.to_string());
    let rgb = network
        .get()
        .map_err(internal)?
        .upscale(&d.image.to_rgb8())
        .map_err(internal)?;
    let out = if d.image.color().has_alpha() {
        let alpha = gantry_codecs::resize(&d.image, w, h)?.to_rgba8();
        let mut rgba = image::RgbaImage::new(w, h);
        for ((o, c), a) in rgba.pixels_mut().zip(rgb.pixels()).zip(alpha.pixels()) {
            *o = image::Rgba([c.0[0], c.0[1], c.0[2], a.0[3]]);
        }
        image::DynamicImage::ImageRgba8(rgba)
    } else {
        image::DynamicImage::ImageRgb8(rgb)
    };
    gantry_codecs::encode(&out, format.unwrap_or(d.format), quality)
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
        let network = self.neural.as_deref().map(|n| (n.name(), n.scale()));
        let (mut method, mut why) = match choose_method(p, network) {
            Ok(m) => m,
            Err(e) => return failed(ErrorClass::Permanent, e),
        };
        // A default choice of the network stands only for inputs it finishes in reasonable
        // time (a bad header is reported by the resize below).
        if method == UpscaleMethod::Neural
            && p.method.is_none()
            && let Ok((_, w, h)) = gantry_codecs::dimensions(&input, &self.limits)
            && let Some(reason) = too_large_by_default(w, h)
        {
            (method, why) = (UpscaleMethod::Lanczos3, reason);
        }
        let (limits, quality) = (self.limits, p.quality);
        let input_len = input.len();
        progress.report(Stage::Upscaling, None);
        let done = match (method, self.neural.clone()) {
            (UpscaleMethod::Neural, Some(network)) => {
                let work = move || upscale_neural(&network, &input, format, quality, &limits);
                let span = tracing::info_span!("upscale.neural", input_bytes = input_len);
                run_blocking(self.neural_time_limit, work).instrument(span).await
            }
            _ => {
                let work = move || gantry_codecs::upscale(&input, size, format, quality, &limits);
                let span = tracing::info_span!("upscale.resize", input_bytes = input_len);
                run_blocking(self.time_limit, work).instrument(span).await
            }
        };
        let encoded = match done {
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
            Ok(mut r) => {
                r.details.insert("method".into(), method.as_str().into());
                r.details.insert("method_reason".into(), why);
                if let (UpscaleMethod::Neural, Some(n)) = (method, &self.neural) {
                    r.details.insert("model".into(), n.name().into());
                }
                JobOutcome::Succeeded(Completion {
                    output: Some(r),
                    usage: Some(Usage {
                        outputs: Some(1),
                        pixels: Some(u64::from(w) * u64::from(h)),
                        ..Default::default()
                    }),
                })
            }
            Err(e) => failed(ErrorClass::Retryable, format!("storing the result: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(scale: Option<u8>, fit: Option<[u32; 2]>, method: Option<UpscaleMethod>) -> UpscalePayload {
        UpscalePayload {
            input: "inputs/t/x.png".into(),
            scale,
            fit_within: fit,
            method,
            ..Default::default()
        }
    }

    #[test]
    fn the_network_runs_by_default_for_its_own_scale_only() {
        let net = Some(("esrgan-thick-x4", 4));
        let (m, why) = choose_method(&job(Some(4), None, None), net).expect("runs");
        assert_eq!(m, UpscaleMethod::Neural);
        assert!(why.starts_with("default:") && why.contains("esrgan-thick-x4"), "{why}");
        for p in [job(Some(2), None, None), job(None, Some([64, 64]), None)] {
            let (m, why) = choose_method(&p, net).expect("runs");
            assert_eq!(m, UpscaleMethod::Lanczos3);
            assert!(why.contains("upscales 4x only"), "{why}");
        }
        let (m, why) = choose_method(&job(Some(4), None, None), None).expect("runs");
        assert_eq!(m, UpscaleMethod::Lanczos3);
        assert!(why.contains("no super-resolution network"), "{why}");
    }

    #[test]
    fn large_inputs_get_the_network_only_when_asked() {
        assert_eq!(too_large_by_default(512, 512), None);
        assert_eq!(too_large_by_default(128, 128), None);
        let why = too_large_by_default(1024, 768).expect("too large");
        assert!(why.contains("1024x768") && why.contains("unless asked for"), "{why}");
    }

    #[test]
    fn an_asked_for_method_is_kept_or_refused_with_the_reason() {
        let net = Some(("esrgan-thick-x4", 4));
        let lanczos = choose_method(&job(Some(4), None, Some(UpscaleMethod::Lanczos3)), net).expect("runs");
        assert_eq!(lanczos, (UpscaleMethod::Lanczos3, "asked for".into()));
        let neural = choose_method(&job(Some(4), None, Some(UpscaleMethod::Neural)), net).expect("runs");
        assert_eq!(neural.0, UpscaleMethod::Neural);
        let e = choose_method(&job(Some(4), None, Some(UpscaleMethod::Neural)), None).expect_err("no network");
        assert!(e.contains("no super-resolution network"), "{e}");
        let e = choose_method(&job(Some(2), None, Some(UpscaleMethod::Neural)), net).expect_err("wrong scale");
        assert!(e.contains("give scale 4"), "{e}");
    }
}
