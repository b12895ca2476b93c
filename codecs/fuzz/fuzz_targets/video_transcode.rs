//! Any bytes through the worker's video entry points: probe, transcode (audio re-encoding
//! included), poster and animated preview, under tight limits. Each must return — Ok or a
//! typed error — never panic, abort, hang or allocate past the limits. FFmpeg reads files, so
//! each input is written to a scratch file first.
#![no_main]

use std::sync::atomic::AtomicBool;

use gantry_codecs::ImageFormat;
use gantry_codecs::video::{AnimatedOptions, TranscodeOptions, VideoLimits, animated_webp, poster, probe, transcode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let input = dir.path().join("input");
    if std::fs::write(&input, data).is_err() {
        return;
    }
    let limits = VideoLimits {
        max_input_bytes: 4 << 20,
        max_duration_secs: 10.0,
        max_frame_pixels: 640 * 480,
        max_frames: 300,
    };
    let opts = TranscodeOptions {
        preset: "ultrafast".into(),
        max_height: Some(64),
        ..Default::default()
    };
    let never = AtomicBool::new(false);
    let _ = probe(&input, &limits);
    let _ = poster(&input, 0.5, 64, ImageFormat::Jpeg, &limits);
    let short = AnimatedOptions { seconds: 0.5, fps: 4, max_width: 64 };
    let _ = animated_webp(&input, &dir.path().join("p.webp"), &short, &limits, &never, 10);
    let _ = transcode(&input, &dir.path().join("o.mp4"), &opts, &limits, &never, 10);
});
