//! Transcoding real media made in the test by FFmpeg's `lavfi` sources, every output checked
//! with `ffprobe`; broken inputs fail with typed errors.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use gantry_codecs::MediaError;
use gantry_codecs::video::{
    AnimatedOptions, Container, EncoderWhy, HwPlan, TranscodeOptions, VideoLimits, animated_webp, probe, transcode,
};
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
        // AAC is copied; anything else is encoded to AAC.
        let aac = streams
            .iter()
            .find(|s| s["codec_type"] == "audio" && s["codec_name"] == "aac")
            .unwrap_or_else(|| panic!("{}: no AAC ({})", input.display(), r.audio));
        let expected = if *audio == "aac" {
            "copied (aac)".to_owned()
        } else {
            format!("encoded {audio} -> aac")
        };
        assert_eq!(r.audio, expected, "{}", input.display());
        let asecs: f64 = aac["duration"].as_str().unwrap().parse().unwrap();
        assert!((asecs - 2.0).abs() < 0.15, "{}: audio {asecs} s", input.display());
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

fn audio_stream(v: &Value) -> &Value {
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .unwrap()
}

#[test]
fn audio_in_any_codec_is_encoded_to_aac_at_most_stereo() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 5.1 PCM at 44.1 kHz, and mono MP3: both come out AAC, the 5.1 mixed down to stereo.
    let surround = d.join("surround.mkv");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100"])
        .args([
            "-t",
            "2",
            "-ac",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "pcm_s16le",
        ])
        .arg(&surround)
        .status()
        .unwrap();
    assert!(st.success());
    let mp3 = make(
        d,
        "mono.mkv",
        "320x240",
        25,
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-ac",
            "1",
            "-c:a",
            "libmp3lame",
        ],
    );
    for (input, channels, codec) in [(&surround, 2, "pcm_s16le"), (&mp3, 1, "mp3")] {
        let out = d.join("out.mp4");
        let r = transcode(
            input,
            &out,
            &fast(),
            &VideoLimits::default(),
            &AtomicBool::new(false),
            60,
        )
        .unwrap();
        assert_eq!(r.audio, format!("encoded {codec} -> aac"));
        let v = ffprobe(&out);
        let a = audio_stream(&v);
        assert_eq!(a["codec_name"], "aac");
        assert_eq!(a["channels"].as_u64(), Some(channels), "{codec}");
        let secs: f64 = a["duration"].as_str().unwrap().parse().unwrap();
        assert!((secs - 2.0).abs() < 0.15, "{codec}: {secs} s");
    }
}

#[test]
fn webm_output_is_vp9_with_opus() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = make(
        d,
        "in.mp4",
        "640x360",
        30,
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    );
    let out = d.join("out.webm");
    let opts = TranscodeOptions {
        container: Container::WebM,
        max_height: Some(240),
        ..fast()
    };
    let r = transcode(
        &input,
        &out,
        &opts,
        &VideoLimits::default(),
        &AtomicBool::new(false),
        60,
    )
    .unwrap();
    assert_eq!((r.encoder, r.encoder_why), ("libvpx-vp9", EncoderWhy::Vp9));
    assert_eq!(r.audio, "encoded aac -> opus");
    let v = ffprobe(&out);
    assert_eq!(v["format"]["format_name"], "matroska,webm");
    let video = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap();
    assert_eq!(video["codec_name"], "vp9");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(426), Some(240))
    );
    assert_eq!(audio_stream(&v)["codec_name"], "opus");
    let secs: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((secs - 2.0).abs() < 0.25, "{secs} s");
}

#[test]
fn the_animated_preview_is_a_looping_webp_of_the_first_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = make(
        d,
        "in.mp4",
        "1280x720",
        30,
        &["-c:v", "libx264", "-preset", "ultrafast", "-an"],
    );
    let out = d.join("preview.webp");
    let opts = AnimatedOptions {
        seconds: 1.5,
        fps: 8,
        max_width: 256,
    };
    let a = animated_webp(
        &input,
        &out,
        &opts,
        &VideoLimits::default(),
        &AtomicBool::new(false),
        60,
    )
    .unwrap();
    assert_eq!((a.width, a.height, a.frames), (256, 144, 12));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WEBP");
    let count = |tag: &[u8]| bytes.windows(4).filter(|w| *w == tag).count();
    assert_eq!(count(b"ANIM"), 1, "an animation header");
    assert_eq!(count(b"ANMF"), 12, "one frame chunk per frame");
    // The loop count (bytes 4..6 of the ANIM payload) is 0: forever.
    let anim = bytes.windows(4).position(|w| w == b"ANIM").unwrap();
    assert_eq!(&bytes[anim + 12..anim + 14], &[0, 0]);
    // A decoder reads it back at the right size.
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (256, 144));
    // Out-of-range requests are refused.
    let silly = AnimatedOptions { fps: 500, ..opts };
    assert!(matches!(
        animated_webp(
            &input,
            &out,
            &silly,
            &VideoLimits::default(),
            &AtomicBool::new(false),
            60
        ),
        Err(MediaError::InvalidRequest(_))
    ));
}

#[test]
fn gpu_paths_fall_back_to_the_cpu_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = make(
        d,
        "in.mp4",
        "320x240",
        25,
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    );
    let out = d.join("out.mp4");
    // As if the worker's probe had proven NVENC on GPU 0 and NVDEC were there.
    let opts = TranscodeOptions {
        hw: HwPlan {
            nvenc_gpu: Some(0),
            cuvid_gpu: Some(0),
            no_nvenc_reason: String::new(),
        },
        ..fast()
    };
    let r = transcode(
        &input,
        &out,
        &opts,
        &VideoLimits::default(),
        &AtomicBool::new(false),
        60,
    )
    .unwrap();
    assert_eq!(ffprobe(&out)["streams"][0]["codec_name"], "h264");
    if std::path::Path::new("/dev/nvidiactl").exists() {
        // A real NVIDIA GPU: NVDEC decodes; NVENC is used where the chip has it (an H100 has
        // none, and the encoder falls back).
        assert_eq!(r.decoder, "h264_cuvid", "{}", r.decoder_reason);
        assert!(
            r.encoder == "h264_nvenc" || r.encoder_why == EncoderWhy::NvencOpenFailed,
            "{r:?}"
        );
    } else {
        assert_eq!((r.encoder, r.encoder_why), ("libx264", EncoderWhy::NvencOpenFailed));
        assert!(
            r.encoder_reason.starts_with("cpu: NVENC on GPU 0 refused this job"),
            "{}",
            r.encoder_reason
        );
        assert_eq!(r.decoder, "h264");
        assert!(
            r.decoder_reason.starts_with("cpu: h264_cuvid did not open on GPU 0"),
            "{}",
            r.decoder_reason
        );
    }
    // No GPU named: the CPU, with the worker's reason.
    let cpu = TranscodeOptions {
        hw: HwPlan::cpu("CPU-only mode: --gpus none"),
        ..fast()
    };
    let r = transcode(&input, &out, &cpu, &VideoLimits::default(), &AtomicBool::new(false), 60).unwrap();
    assert_eq!((r.encoder, r.encoder_why), ("libx264", EncoderWhy::NoNvenc));
    assert_eq!(r.encoder_reason, "cpu: CPU-only mode: --gpus none");
}

/// Issue 17: a tenant's "mp4" that is really a playlist or a list of other files must not make
/// FFmpeg open anything but itself. The secret is a real video beside it (as another tenant's
/// stored output would be); on the old code the HLS case transcoded it.
#[test]
fn playlists_and_lists_naming_other_files_are_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = make(
        d,
        "secret.mp4",
        "320x240",
        25,
        &["-c:v", "libx264", "-preset", "ultrafast"],
    );
    let secret_url = format!("file://{}", secret.display());
    let png = {
        let img = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "hls",
            format!(
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{secret_url}\n#EXT-X-ENDLIST\n"
            )
            .into_bytes(),
        ),
        (
            "hls with a plain path",
            format!("#EXTM3U\n#EXTINF:2.0,\n{}\n#EXT-X-ENDLIST\n", secret.display()).into_bytes(),
        ),
        (
            "concat",
            format!("ffconcat version 1.0\nfile '{}'\n", secret.display()).into_bytes(),
        ),
        ("an image", png),
        (
            "an SDP description (network streams)",
            b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video 5004 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
                .to_vec(),
        ),
    ];
    let out = d.join("out.mp4");
    for (what, bytes) in cases {
        let input = d.join("upload.mp4");
        std::fs::write(&input, &bytes).unwrap();
        let r = transcode(
            &input,
            &out,
            &fast(),
            &VideoLimits::default(),
            &AtomicBool::new(false),
            60,
        );
        match r {
            Err(e @ (MediaError::ForbiddenContainer(_) | MediaError::Unsupported(_))) => {
                assert!(e.is_permanent(), "{what}: {e}");
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
        assert!(
            matches!(
                probe(&input, &VideoLimits::default()),
                Err(MediaError::ForbiddenContainer(_) | MediaError::Unsupported(_))
            ),
            "{what}: probe"
        );
        let vpdq = gantry_codecs::pdq::video::hash_video(
            &input,
            &Default::default(),
            &VideoLimits::default(),
            &AtomicBool::new(false),
            60,
        );
        assert!(
            matches!(
                vpdq,
                Err(MediaError::ForbiddenContainer(_) | MediaError::Unsupported(_))
            ),
            "{what}: vPDQ {vpdq:?}"
        );
    }
    // The HLS case is refused as a forbidden container, by name.
    std::fs::write(d.join("p.mp4"), format!("#EXTM3U\n#EXTINF:2.0,\n{secret_url}\n")).unwrap();
    let e = probe(&d.join("p.mp4"), &VideoLimits::default()).unwrap_err();
    assert!(matches!(e, MediaError::ForbiddenContainer(_)), "{e}");
    // A real MP4 and a Matroska file still open.
    assert!(probe(&secret, &VideoLimits::default()).is_ok());
    let mkv = make(d, "ok.mkv", "320x240", 25, &["-c:v", "libx264", "-preset", "ultrafast"]);
    assert!(probe(&mkv, &VideoLimits::default()).is_ok());
}

#[test]
fn transcoding_and_frame_hashing_say_how_far_along_they_are() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let input = make(dir.path(), "in.mp4", "320x240", 25, &["-c:v", "libx264", "-c:a", "aac"]);
    // Read from another thread while the work runs, as the worker's progress report does.
    let watch = |work: &(dyn Fn(&AtomicU32) + Sync)| -> Vec<u32> {
        let done = AtomicU32::new(0);
        let seen = std::sync::Mutex::new(Vec::new());
        let finished = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !finished.load(Ordering::Relaxed) {
                    seen.lock().unwrap().push(done.load(Ordering::Relaxed));
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
            work(&done);
            finished.store(true, Ordering::Relaxed);
        });
        let mut seen = seen.into_inner().unwrap();
        seen.push(done.load(Ordering::Relaxed));
        seen
    };
    let out = dir.path().join("out.mp4");
    let seen = watch(&|done| {
        gantry_codecs::video::transcode_watched(
            &input,
            &out,
            &fast(),
            &VideoLimits::default(),
            &AtomicBool::new(false),
            60,
            done,
        )
        .unwrap();
    });
    assert_eq!(seen.last(), Some(&1000), "finished is 1000");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "it only grows: {seen:?}");
    let hashed = watch(&|done| {
        let opts = gantry_codecs::pdq::video::VpdqOptions::default();
        gantry_codecs::pdq::video::hash_video_watched(
            &input,
            &opts,
            &VideoLimits::default(),
            &AtomicBool::new(false),
            60,
            done,
        )
        .unwrap();
    });
    assert_eq!(hashed.last(), Some(&1000));
    assert!(hashed.windows(2).all(|w| w[0] <= w[1]), "it only grows: {hashed:?}");
    // Mid-way readings were seen: the last frame's time over the duration.
    assert!(
        seen.iter().chain(&hashed).any(|p| (1..1000).contains(p)),
        "no reading between 0 and 1000"
    );
}
