//! Choosing and opening the video encoder. H.264 goes to NVENC (`h264_nvenc`) only when the
//! caller's [`HwPlan`] names a GPU on which the worker's probe proved an encode session opens,
//! and falls back to libx264 when NVENC still refuses here; VP9 (WebM) is libvpx-vp9. The
//! choice comes with a bounded reason class (a metric label) and the full reason (the result).

use ffmpeg_next as ff;

use super::{Container, TranscodeOptions};
use crate::error::MediaError;

/// What the worker knows about its GPUs, for one transcode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HwPlan {
    /// Encode with NVENC on this GPU (its probe proved a session opens).
    pub nvenc_gpu: Option<u32>,
    /// Decode with NVDEC on this GPU.
    pub cuvid_gpu: Option<u32>,
    /// Why there is no NVENC GPU, for the report (`CPU-only mode: …`, `GPU 0: …`).
    pub no_nvenc_reason: String,
}

/// Why an encoder was chosen: a bounded set, used as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncoderWhy {
    /// NVENC proven by the probe and opened.
    NvencProven,
    /// No GPU with a proven NVENC session (CPU-only, or NVENC unavailable: H100/H200).
    NoNvenc,
    /// The probe passed but opening NVENC for this job failed.
    NvencOpenFailed,
    /// VP9 was asked for (CPU only).
    Vp9,
}

impl EncoderWhy {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EncoderWhy::NvencProven => "nvenc_proven",
            EncoderWhy::NoNvenc => "no_nvenc",
            EncoderWhy::NvencOpenFailed => "nvenc_open_failed",
            EncoderWhy::Vp9 => "vp9",
        }
    }
}

/// An opened encoder and why it is the one.
pub(crate) struct Chosen {
    pub encoder: ff::encoder::Video,
    pub codec: ff::Codec,
    pub name: &'static str,
    pub why: EncoderWhy,
    pub reason: String,
}

/// What the encoder is set up with.
pub(crate) struct Setup {
    pub size: (u32, u32),
    pub time_base: ff::Rational,
    pub fps: f64,
    pub global_header: bool,
}

/// NVENC's preset (p1 fastest … p7 best) for an x264 preset name.
fn nvenc_preset(x264: &str) -> &'static str {
    match x264 {
        "ultrafast" => "p1",
        "superfast" => "p2",
        "veryfast" | "faster" => "p3",
        "fast" | "medium" => "p4",
        "slow" => "p5",
        "slower" => "p6",
        _ => "p7",
    }
}

/// libvpx's `cpu-used` (0 best … 8 fastest) for an x264 preset name.
fn vpx_speed(x264: &str) -> &'static str {
    match x264 {
        "ultrafast" => "8",
        "superfast" => "7",
        "veryfast" => "6",
        "faster" => "5",
        "fast" | "medium" => "4",
        "slow" => "2",
        "slower" => "1",
        _ => "0",
    }
}

fn open(
    name: &str,
    setup: &Setup,
    opts: ff::Dictionary,
    threads: ff::codec::threading::Config,
) -> Result<(ff::encoder::Video, ff::Codec), String> {
    let codec = ff::encoder::find_by_name(name).ok_or_else(|| format!("this FFmpeg has no {name}"))?;
    let mut ctx = ff::codec::context::Context::new_with_codec(codec);
    ctx.set_threading(threads);
    let mut enc = ctx.encoder().video().map_err(|e| format!("{name}: {e}"))?;
    enc.set_width(setup.size.0);
    enc.set_height(setup.size.1);
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(setup.time_base);
    enc.set_frame_rate(Some(ff::Rational::new((setup.fps * 1000.0).round() as i32, 1000)));
    if setup.global_header {
        enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    }
    let opened = enc.open_with(opts).map_err(|e| format!("{name} did not open: {e}"))?;
    Ok((opened, codec))
}

/// Opens the encoder for `container` as `plan` allows.
pub(crate) fn choose(container: Container, opts: &TranscodeOptions, setup: &Setup) -> Result<Chosen, MediaError> {
    let cpu_threads = super::threads();
    if container == Container::WebM {
        let mut d = ff::Dictionary::new();
        // Constant quality: x264's 0..=51 scale mapped onto VP9's 0..=63, no bitrate cap.
        d.set("crf", &((u32::from(opts.crf) * 63).div_ceil(51)).min(63).to_string());
        d.set("b", "0");
        d.set("deadline", "good");
        d.set("cpu-used", vpx_speed(&opts.preset));
        d.set("row-mt", "1");
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get().min(16));
        d.set("threads", &threads.to_string());
        let (encoder, codec) = open("libvpx-vp9", setup, d, cpu_threads).map_err(MediaError::Internal)?;
        return Ok(Chosen {
            encoder,
            codec,
            name: "libvpx-vp9",
            why: EncoderWhy::Vp9,
            reason: "cpu: VP9 WebM asked for (libvpx-vp9)".into(),
        });
    }
    let (why, reason) = match opts.hw.nvenc_gpu {
        Some(gpu) => {
            let mut d = ff::Dictionary::new();
            d.set("preset", nvenc_preset(&opts.preset));
            d.set("rc", "vbr");
            d.set("cq", &opts.crf.to_string());
            d.set("b", "0");
            d.set("gpu", &gpu.to_string());
            match open("h264_nvenc", setup, d, ff::codec::threading::Config::default()) {
                Ok((encoder, codec)) => {
                    return Ok(Chosen {
                        encoder,
                        codec,
                        name: "h264_nvenc",
                        why: EncoderWhy::NvencProven,
                        reason: format!("gpu {gpu}: NVENC proven by the worker's probe"),
                    });
                }
                Err(e) => (
                    EncoderWhy::NvencOpenFailed,
                    format!("cpu: NVENC on GPU {gpu} refused this job: {e}"),
                ),
            }
        }
        None => (
            EncoderWhy::NoNvenc,
            format!("cpu: {}", opts.hw.no_nvenc_reason_or_default()),
        ),
    };
    let mut d = ff::Dictionary::new();
    d.set("crf", &opts.crf.to_string());
    d.set("preset", &opts.preset);
    let (encoder, codec) = open("libx264", setup, d, cpu_threads).map_err(MediaError::Internal)?;
    Ok(Chosen {
        encoder,
        codec,
        name: "libx264",
        why,
        reason,
    })
}

impl HwPlan {
    /// CPU only, because `reason`.
    pub fn cpu(reason: impl Into<String>) -> Self {
        Self {
            nvenc_gpu: None,
            cuvid_gpu: None,
            no_nvenc_reason: reason.into(),
        }
    }

    fn no_nvenc_reason_or_default(&self) -> &str {
        if self.no_nvenc_reason.is_empty() {
            "no GPU with a proven NVENC session"
        } else {
            &self.no_nvenc_reason
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_map_onto_nvenc_and_vpx() {
        assert_eq!(nvenc_preset("medium"), "p4");
        assert_eq!(nvenc_preset("veryslow"), "p7");
        assert_eq!(vpx_speed("ultrafast"), "8");
        assert_eq!(EncoderWhy::NoNvenc.as_str(), "no_nvenc");
    }
}
