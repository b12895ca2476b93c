//! Transcode jobs end to end: a generated Kling clip and an uploaded WebM transcoded by a
//! worker into web-ready MP4 (checked with ffprobe) — the WebM also into VP9 WebM, a poster and
//! an animated preview — priced per started minute, the encoder choice counted by reason; a
//! broken upload failing as `permanent` with its reason.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use std::process::Command;

use common::*;
use gantry_client::Client;
use serde_json::{Value, json};

fn transcode(input: &str) -> Value {
    json!({"user": "u-tx", "kind": "transcode", "max_attempts": 2,
           "payload": {"input": input, "max_height": 120, "preset": "ultrafast", "crf": 30,
                       "previews": input.ends_with(".webm"), "webm": input.ends_with(".webm")}})
}

fn ffprobe(path: &std::path::Path) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_format", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_are_transcoded_to_web_ready_mp4_and_bad_ones_fail_permanently() {
    let port = gantry_testkit::free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let f = fleet_with(1, 4, &[], &["--metrics-addr", &metrics_addr]);
    let studio = Client::new(&format!("http://{}", f.sched.addr), "demo-studio-key").unwrap();
    let outputs = f.logs.path().join("outputs");
    let g = studio
        .submit(&generate(
            "kling",
            "kling-v3-std",
            &["SG"],
            "waves",
            json!({"duration_secs": 5}),
        ))
        .await
        .unwrap();
    let key = settled(&studio, &g.id).await.result.unwrap()["object_key"]
        .as_str()
        .unwrap()
        .to_owned();

    let uploads = outputs.join("inputs/studio-42");
    std::fs::create_dir_all(&uploads).unwrap();
    let st = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "3",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
        ])
        .args(["-cpu-used", "8", "-c:a", "libopus"])
        .arg(uploads.join("clip.webm"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        uploads.join("broken.mp4"),
        b"\x00\x00\x00\x18ftypmp42 and then nothing useful",
    )
    .unwrap();

    for (input, codec, secs) in [(key.as_str(), "h264", 2.0), ("inputs/studio-42/clip.webm", "vp9", 3.0)] {
        let a = studio.submit(&transcode(input)).await.unwrap();
        let j = settled(&studio, &a.id).await;
        assert_eq!(j.status, "succeeded", "{input}: {j:?}");
        let r = j.result.as_ref().unwrap();
        assert_eq!(r["content_type"], "video/mp4");
        assert_eq!(r["details"]["encoder"], "libx264", "{r}");
        assert!(
            r["details"]["encoder_reason"].as_str().unwrap().starts_with("cpu"),
            "{r}"
        );
        assert_eq!(r["details"]["input_codec"], codec);
        let v = ffprobe(&outputs.join(r["object_key"].as_str().unwrap()));
        let video = v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == "video")
            .unwrap()
            .clone();
        assert_eq!(
            (video["codec_name"].as_str(), video["height"].as_u64()),
            (Some("h264"), Some(120)),
            "{input}"
        );
        let d: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
        assert!((d - secs).abs() < 0.3, "{input}: {d} s");
        // 5 credits a started minute.
        assert_eq!(j.credits.as_ref().unwrap().charged, 5, "{input}");
        // No GPU here: software decoding, with the reason.
        assert_eq!(r["details"]["decoder"], codec, "{r}");
        assert!(
            r["details"]["decoder_reason"].as_str().unwrap().starts_with("cpu"),
            "{r}"
        );
        // Released only after every file was hashed: the MP4, and for the WebM job also the
        // WebM (vPDQ), the poster and the animated preview.
        let scanned = if codec == "vp9" { "4" } else { "1" };
        assert_eq!(
            (r["details"]["scan"].as_str(), r["details"]["scanned_files"].as_str()),
            (Some("clean"), Some(scanned)),
            "{r}"
        );
        if codec == "vp9" {
            assert_eq!(r["details"]["audio"], "encoded opus -> aac", "{r}");
            let webm = ffprobe(&outputs.join(r["details"]["webm"].as_str().unwrap()));
            let codecs: Vec<&str> = webm["streams"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["codec_name"].as_str().unwrap())
                .collect();
            assert_eq!(codecs, ["vp9", "opus"], "{webm}");
            let anim = std::fs::read(outputs.join(r["details"]["preview"].as_str().unwrap())).unwrap();
            assert_eq!(&anim[8..12], b"WEBP");
            assert_eq!(anim.windows(4).filter(|w| *w == b"ANMF").count(), 30, "3 s at 10 fps");
            let poster = std::fs::read(outputs.join(r["details"]["poster"].as_str().unwrap())).unwrap();
            let img = image::load_from_memory(&poster).unwrap();
            assert_eq!(
                img.width(),
                212,
                "the poster is a frame of the 120p output: {}x{}",
                img.width(),
                img.height()
            );
        }
    }
    // The encoder choice and its reason are metric labels.
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = transcode_series(&text);
    assert!(
        series.contains(
            &r#"gantry_transcodes_total{container="mp4",encoder="libx264",reason="no_nvenc",decode="cpu"} 2"#
                .to_owned()
        ),
        "{series:?}"
    );
    assert!(
        series.contains(
            &r#"gantry_transcodes_total{container="webm",encoder="libvpx-vp9",reason="vp9",decode="cpu"} 1"#.to_owned()
        ),
        "{series:?}"
    );
    let a = studio.submit(&transcode("inputs/studio-42/broken.mp4")).await.unwrap();
    let j = settled(&studio, &a.id).await;
    assert_eq!((j.status.as_str(), j.attempts), ("dead", 1), "{j:?}");
    assert_eq!(j.error.as_ref().unwrap()["class"], "permanent");
    assert_eq!(j.credits.unwrap().state, "refunded");
}

/// Reads the worker's metrics and returns the `gantry_transcodes_total` lines.
fn transcode_series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("gantry_transcodes_total{"))
        .map(str::to_owned)
        .collect()
}
