//! Transcoding real media made in the test by FFmpeg's `lavfi` sources, every output checked
//! with `ffprobe`; broken inputs fail with typed errors.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use gantry_codecs::MediaError;
use gantry_codecs::video::{TranscodeOptions, VideoLimits, probe, transcode};
use serde_json::Value;

/// Makes a 2 s clip with FFmpeg: a test card with a 440 Hz tone.
fn make(dir: &Path, name: &str, size: &str, rate: u32, codec_args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate={rate}")])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "2"])
        .args(codec_args)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg made {name}");
    out
}

fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_format", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {}", path.display());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fast() -> TranscodeOptions {
    TranscodeOptions {
        preset: "ultrafast".into(),
        ..Default::default()
    }
}

#[test]
fn common_inputs_become_web_ready_h264_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inputs = [
        (
            make(
                d,
                "h264.mp4",
                "1280x720",
                30,
                &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
            ),
            "aac",
        ),
        (
            make(
                d,
                "vp9.webm",
                "640x360",
                30,
                &[
                    "-c:v",
                    "libvpx-vp9",
                    "-deadline",
                    "realtime",
                    "-cpu-used",
                    "8",
                    "-c:a",
                    "libopus",
                ],
            ),
            "opus",
        ),
        (
            make(d, "mpeg4.mkv", "640x480", 25, &["-c:v", "mpeg4", "-c:a", "aac"]),
            "aac",
        ),
        (
            make(
                d,
                "hevc.mov",
                "854x480",
                60,
                &[
                    "-c:v",
                    "libx265",
                    "-preset",
                    "ultrafast",
                    "-x265-params",
                    "log-level=error",
                    "-tag:v",
                    "hvc1",
                    "-c:a",
                    "aac",
                ],
            ),
            "aac",
        ),
    ];
    for (input, audio) in &inputs {
        let p = probe(input, &VideoLimits::default()).unwrap();
        assert!((p.duration_secs - 2.0).abs() < 0.2, "{}: {p:?}", input.display());
        let out = d.join(format!("{}.out.mp4", input.file_name().unwrap().to_string_lossy()));
        let opts = TranscodeOptions {
            max_height: Some(360),
            max_fps: Some(30),
            crf: 28,
            ..fast()
        };
        let r = transcode(input, &out, &opts, &VideoLimits::default(), &AtomicBool::new(false), 60).unwrap();
        assert!(
            r.height <= 360 && r.width.is_multiple_of(2) && r.height.is_multiple_of(2),
            "{r:?}"
        );
        let v = ffprobe(&out);
        let streams = v["streams"].as_array().unwrap();
        let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
        assert_eq!(video["codec_name"], "h264", "{}", input.display());
        assert_eq!(video["pix_fmt"], "yuv420p");
        assert_eq!(
            (video["width"].as_u64(), video["height"].as_u64()),
            (Some(u64::from(r.width)), Some(u64::from(r.height)))
        );
        let rate: Vec<f64> = video["avg_frame_rate"]
            .as_str()
            .unwrap()
            .split('/')
            .map(|x| x.parse().unwrap())
            .collect();
        assert!(
            rate[0] / rate[1] <= 31.0,
            "{}: {} fps",
            input.display(),
            rate[0] / rate[1]
        );
        let secs: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
        assert!((secs - 2.0).abs() < 0.25, "{}: {secs} s", input.display());
        let has_aac = streams
            .iter()
            .any(|s| s["codec_type"] == "audio" && s["codec_name"] == "aac");
        assert_eq!(has_aac, *audio == "aac", "{}: {}", input.display(), r.audio);
        // +faststart: the moov box comes before mdat.
        let bytes = std::fs::read(&out).unwrap();
        let at = |b: &[u8]| bytes.windows(4).position(|w| w == b).unwrap();
        assert!(at(b"moov") < at(b"mdat"), "{}: moov first", input.display());
    }
}

#[test]
fn a_poster_frame_comes_from_inside_the_video() {
    let dir = tempfile::tempdir().unwrap();
    let clip = make(
        dir.path(),
        "clip.mp4",
        "1280x720",
        30,
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    );
    let l = VideoLimits::default();
    let p = gantry_codecs::video::poster(&clip, 0.5, 480, gantry_codecs::ImageFormat::Jpeg, &l).unwrap();
    assert_eq!((p.width, p.height), (480, 270));
    let img = image::load_from_memory(&p.bytes).unwrap();
    assert_eq!((img.width(), img.height()), (480, 270));
    // Not a blank frame: the test card has many colours.
    let rgb = img.to_rgb8();
    let distinct: std::collections::BTreeSet<[u8; 3]> =
        rgb.pixels().map(|q| [q[0] & 0xF0, q[1] & 0xF0, q[2] & 0xF0]).collect();
    assert!(distinct.len() > 20, "{} colours", distinct.len());
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, b"no video here").unwrap();
    assert!(gantry_codecs::video::poster(&text, 0.5, 480, gantry_codecs::ImageFormat::Webp, &l).is_err());
}

#[test]
fn broken_inputs_fail_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = make(
        d,
        "good.mp4",
        "320x240",
        25,
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    );
    let bytes = std::fs::read(&good).unwrap();
    let cut = d.join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let empty = d.join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let text = d.join("notes.mp4");
    std::fs::write(&text, b"not a video, whatever the name says").unwrap();
    let out = d.join("out.mp4");
    let run = |p: &Path, l: &VideoLimits| transcode(p, &out, &fast(), l, &AtomicBool::new(false), 60);
    let l = VideoLimits::default();
    assert!(
        matches!(run(&cut, &l), Err(MediaError::Corrupt(_) | MediaError::Unsupported(_))),
        "{:?}",
        run(&cut, &l)
    );
    assert_eq!(run(&empty, &l).unwrap_err(), MediaError::Empty);
    assert!(
        matches!(run(&text, &l), Err(MediaError::Unsupported(_) | MediaError::Corrupt(_))),
        "{:?}",
        run(&text, &l)
    );
    let short = VideoLimits {
        max_duration_secs: 1.0,
        ..l
    };
    assert!(matches!(run(&good, &short), Err(MediaError::InvalidRequest(_))));
    let small = VideoLimits {
        max_frame_pixels: 1000,
        ..l
    };
    assert!(matches!(run(&good, &small), Err(MediaError::TooManyPixels { .. })));
    let bad = TranscodeOptions {
        preset: "warp".into(),
        ..fast()
    };
    assert!(matches!(
        transcode(&good, &out, &bad, &l, &AtomicBool::new(false), 60),
        Err(MediaError::InvalidRequest(_))
    ));
    // A stop flag set (the caller's time limit) ends the work.
    assert_eq!(
        transcode(&good, &out, &fast(), &l, &AtomicBool::new(true), 7).unwrap_err(),
        MediaError::Timeout(7)
    );
}
