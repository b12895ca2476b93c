//! `gantry bench transcode`: the transcode path against the `ffmpeg` CLI with identical
//! settings, side by side in one run on one input made by FFmpeg's `lavfi` sources.

use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use gantry_codecs::video::{TranscodeOptions, VideoLimits, transcode};

use super::bench::median;

pub fn transcode_bench(secs: u32, rounds: usize, preset: &str, height: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("input.mp4");
    let made = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=30",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440", "-t", &secs.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-c:a", "aac"])
        .arg(&input)
        .status()
        .context("running ffmpeg (install it with ./run setup)")?;
    anyhow::ensure!(made.success(), "ffmpeg could not make the input");
    let opts = TranscodeOptions {
        crf: 23,
        preset: preset.into(),
        max_height: Some(height),
        max_fps: None,
        ..Default::default()
    };
    let (ours_out, cli_out) = (dir.path().join("ours.mp4"), dir.path().join("cli.mp4"));
    let (mut ours, mut cli) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        // Alternate who goes first, so neither always runs on a warm cache.
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let t = Instant::now();
            if side == 0 {
                transcode(
                    &input,
                    &ours_out,
                    &opts,
                    &VideoLimits::default(),
                    &AtomicBool::new(false),
                    0,
                )?;
                ours.push(t.elapsed().as_secs_f64());
            } else {
                let st = Command::new("ffmpeg")
                    .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
                    .arg(&input)
                    .args([
                        "-vf",
                        &format!("scale=-2:{height}:flags=bicubic"),
                        "-pix_fmt",
                        "yuv420p",
                    ])
                    .args(["-c:v", "libx264", "-preset", preset, "-crf", "23", "-c:a", "copy"])
                    .args(["-movflags", "+faststart"])
                    .arg(&cli_out)
                    .status()?;
                anyhow::ensure!(st.success(), "ffmpeg CLI failed");
                cli.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let (o, c) = (median(ours), median(cli));
    println!(
        "{secs} s of 1080p30 H.264 + AAC -> {height}p H.264 (libx264 {preset}, CRF 23, AAC copied, +faststart), median of {rounds}"
    );
    println!("  gantry (ffmpeg-next in process): {o:>7.2} s");
    println!("  ffmpeg CLI, same settings:       {c:>7.2} s");
    println!("  ratio: {:.3}x the CLI's wall time (goal <= 1.05)", o / c);
    // On a GPU host: NVDEC decoding (+ whichever encoder the probe allows) against the CPU-only
    // path above, same input, same settings, alternating.
    let hw = gantry_worker::gpu::discover(&gantry_worker::gpu::GpuMode::Auto).hw_plan();
    let Some(gpu) = hw.cuvid_gpu else {
        println!("  GPU path: skipped ({})", hw.no_nvenc_reason);
        return Ok(());
    };
    let gpu_opts = TranscodeOptions { hw, ..opts.clone() };
    let (mut gpu_times, mut cpu_times, mut last) = (Vec::new(), Vec::new(), None);
    for round in 0..rounds.max(1) {
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let t = Instant::now();
            let o = if side == 0 { &gpu_opts } else { &opts };
            let r = transcode(
                &input,
                &ours_out,
                o,
                &VideoLimits::default(),
                &AtomicBool::new(false),
                0,
            )?;
            if side == 0 {
                gpu_times.push(t.elapsed().as_secs_f64());
                last = Some(r);
            } else {
                cpu_times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let (g, c) = (median(gpu_times), median(cpu_times));
    if let Some(r) = last {
        println!(
            "  GPU {gpu}: decoder {} ({}); encoder {} ({})",
            r.decoder, r.decoder_reason, r.encoder, r.encoder_reason
        );
    }
    println!(
        "  GPU path:  {g:>7.2} s; CPU only: {c:>7.2} s; ratio {:.3}x the CPU-only wall time",
        g / c
    );
    Ok(())
}
