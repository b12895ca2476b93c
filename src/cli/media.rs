//! `gantry media`: the worker's media steps on local files, for operators and benchmarks.

use std::path::PathBuf;

use anyhow::Context;
use std::sync::atomic::AtomicBool;

use gantry_codecs::video::{
    AnimatedOptions, Container, TranscodeOptions, VideoLimits, animated_webp, probe, transcode,
};
use gantry_codecs::{ImageFormat, ImageLimits, MediaError, Resize};
use gantry_worker::gpu::GpuMode;

#[derive(Debug, clap::Subcommand)]
pub enum MediaCommand {
    /// Resize an image as an upscale job would: 2x, 4x, or fit within a box.
    Upscale {
        /// Input image (PNG, JPEG, WebP; the format is read from the bytes).
        input: PathBuf,
        /// Output file.
        output: PathBuf,
        /// 2 or 4.
        #[arg(long, conflicts_with = "fit")]
        scale: Option<u8>,
        /// Fit within WIDTHxHEIGHT instead.
        #[arg(long)]
        fit: Option<String>,
        /// png, jpeg or webp (default: the output's extension, else the input's format).
        #[arg(long)]
        format: Option<String>,
        /// JPEG quality 1..=100.
        #[arg(long)]
        quality: Option<u8>,
    },
    /// Transcode a video as a transcode job would: web-ready H.264 MP4 with +faststart (NVENC
    /// where this host's probe proves it, else libx264), or VP9 WebM when OUTPUT ends in .webm.
    Transcode {
        /// Input video.
        input: PathBuf,
        /// Output: .mp4 (H.264 + AAC) or .webm (VP9 + Opus).
        output: PathBuf,
        /// x264 CRF 0..=51.
        #[arg(long, default_value_t = 23)]
        crf: u8,
        /// x264 preset.
        #[arg(long, default_value = "medium")]
        preset: String,
        /// Largest output height.
        #[arg(long)]
        max_height: Option<u32>,
        /// Largest output frame rate.
        #[arg(long)]
        max_fps: Option<u32>,
        /// Also write a looping animated WebP of the first 3 seconds here.
        #[arg(long)]
        preview: Option<PathBuf>,
        /// GPUs: auto (NVML and the NVENC probe, as a worker does) or none.
        #[arg(long, default_value = "auto")]
        gpus: String,
    },
    /// What a worker would decide about a file: format, size, orientation, limits.
    Probe {
        /// The file.
        file: PathBuf,
    },
}

fn usage(e: MediaError) -> anyhow::Error {
    super::UsageError(e.to_string()).into()
}

pub async fn run(c: MediaCommand) -> anyhow::Result<()> {
    let limits = ImageLimits::default();
    match c {
        MediaCommand::Upscale {
            input,
            output,
            scale,
            fit,
            format,
            quality,
        } => {
            let size = match (scale, fit) {
                (Some(s), None) => Resize::Scale(s),
                (None, Some(f)) => {
                    let (w, h) = f
                        .split_once('x')
                        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                        .ok_or_else(|| super::UsageError(format!("--fit {f}: expected WIDTHxHEIGHT")))?;
                    Resize::FitWithin(w, h)
                }
                _ => return Err(super::UsageError("give --scale 2|4 or --fit WxH".into()).into()),
            };
            let format = match format {
                Some(f) => Some(ImageFormat::parse(&f).map_err(usage)?),
                None => output
                    .extension()
                    .and_then(|e| e.to_str())
                    .and_then(|e| ImageFormat::parse(e).ok()),
            };
            let bytes = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let started = std::time::Instant::now();
            let e = tokio::task::spawn_blocking(move || gantry_codecs::upscale(&bytes, size, format, quality, &limits))
                .await?
                .map_err(usage)?;
            std::fs::write(&output, &e.bytes).with_context(|| format!("writing {}", output.display()))?;
            println!(
                "{} -> {} {}x{} {} ({} bytes, {:.1} ms)",
                input.display(),
                output.display(),
                e.width,
                e.height,
                e.format.content_type(),
                e.bytes.len(),
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        MediaCommand::Transcode {
            input,
            output,
            crf,
            preset,
            max_height,
            max_fps,
            preview,
            gpus,
        } => {
            let mode: GpuMode = gpus.parse().map_err(|e| super::UsageError(format!("--gpus: {e}")))?;
            let hw = tokio::task::spawn_blocking(move || gantry_worker::gpu::discover(&mode).hw_plan()).await?;
            let webm = output.extension().is_some_and(|e| e.eq_ignore_ascii_case("webm"));
            let opts = TranscodeOptions {
                crf,
                preset,
                max_height,
                max_fps,
                container: if webm { Container::WebM } else { Container::Mp4 },
                hw,
            };
            let started = std::time::Instant::now();
            let r = tokio::task::spawn_blocking(move || {
                let limits = VideoLimits::default();
                let never = AtomicBool::new(false);
                let r = transcode(&input, &output, &opts, &limits, &never, 0)?;
                let p = match &preview {
                    Some(p) => Some((
                        animated_webp(&output, p, &AnimatedOptions::default(), &limits, &never, 0)?,
                        p.clone(),
                    )),
                    None => None,
                };
                Ok::<_, MediaError>((r, p, input, output))
            })
            .await?
            .map_err(usage)?;
            let (r, p, input, output) = r;
            println!(
                "{} -> {}: {} {}x{}, {} frames, {:.1} s ({:.0} ms)\n  encoder {} ({})\n  decoder {} ({})\n  audio {}",
                input.display(),
                output.display(),
                r.input_codec,
                r.width,
                r.height,
                r.frames,
                r.duration_secs,
                started.elapsed().as_secs_f64() * 1e3,
                r.encoder,
                r.encoder_reason,
                r.decoder,
                r.decoder_reason,
                r.audio,
            );
            if let Some((a, path)) = p {
                println!(
                    "  preview {}: {} frames {}x{}",
                    path.display(),
                    a.frames,
                    a.width,
                    a.height
                );
            }
        }
        MediaCommand::Probe { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            if gantry_codecs::images::sniff(&bytes).is_err() {
                let p = probe(&file, &VideoLimits::default()).map_err(usage)?;
                println!("{}: {}, {:.2} s", file.display(), p.container, p.duration_secs);
                for s in &p.streams {
                    match s.kind {
                        "video" => println!("  video {} {}x{}", s.codec, s.width, s.height),
                        other => println!("  {other} {}", s.codec),
                    }
                }
                let hw = tokio::task::spawn_blocking(|| gantry_worker::gpu::discover(&GpuMode::Auto).hw_plan()).await?;
                let l = VideoLimits::default();
                println!(
                    "  limits: {} bytes, {:.0} s, {} pixels per frame, {} frames",
                    l.max_input_bytes, l.max_duration_secs, l.max_frame_pixels, l.max_frames
                );
                match hw.nvenc_gpu {
                    Some(g) => {
                        println!("  a transcode job would encode with h264_nvenc on GPU {g} (probe proved a session)")
                    }
                    None => println!("  a transcode job would encode with libx264: {}", hw.no_nvenc_reason),
                }
                match hw.cuvid_gpu {
                    Some(g) => {
                        println!("  and try NVDEC (*_cuvid) on GPU {g} first, software decoding if it does not open")
                    }
                    None => println!("  and decode in software (no GPU)"),
                }
                return Ok(());
            }
            match gantry_codecs::images::dimensions(&bytes, &limits) {
                Ok((format, w, h)) => {
                    let d = gantry_codecs::decode(&bytes, &limits).map_err(usage)?;
                    println!(
                        "{}: {} {w}x{h}{}, {} bytes; within limits ({} pixels, {} per side); outputs carry no metadata",
                        file.display(),
                        format.content_type(),
                        if d.reoriented {
                            format!(" (EXIF orientation: upright {}x{})", d.image.width(), d.image.height())
                        } else {
                            String::new()
                        },
                        bytes.len(),
                        limits.max_pixels,
                        limits.max_side
                    );
                }
                Err(e) => return Err(usage(e)),
            }
        }
    }
    Ok(())
}
