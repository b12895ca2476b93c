//! Upscale jobs end to end: a generated image resized 2x by a worker, bad media failing as
//! `permanent` with its reason, and another tenant's object out of reach.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use crate::common;

use common::*;
use gantry_client::Client;
use serde_json::{Value, json};

fn upscale(input: &str, extra: Value) -> Value {
    let mut payload = json!({"input": input});
    if let (Value::Object(p), Value::Object(e)) = (&mut payload, extra) {
        p.extend(e);
    }
    json!({"user": "u-up", "kind": "upscale", "payload": payload, "max_attempts": 2})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_image_is_upscaled_and_bad_media_fails_permanently() {
    let f = fleet(1, 4, &[]);
    let base = format!("http://{}", f.sched.addr);
    let studio = Client::new(&base, "demo-studio-key").unwrap();
    let outputs = f.logs.path().join("outputs");
    // Generate 1024x768 with Flux, then upscale it 2x to WebP.
    let g = studio
        .submit(&generate(
            "flux",
            "flux-2-pro",
            &["EU"],
            "a teapot",
            json!({"width": 1024, "height": 768}),
        ))
        .await
        .unwrap();
    let g = settled(&studio, &g.id).await;
    let key = g.result.as_ref().unwrap()["object_key"].as_str().unwrap().to_owned();
    let u = studio
        .submit(&upscale(&key, json!({"scale": 2, "format": "webp"})))
        .await
        .unwrap();
    let u = settled(&studio, &u.id).await;
    assert_eq!(u.status, "succeeded", "{u:?}");
    let r = u.result.as_ref().unwrap();
    assert_eq!(r["content_type"], "image/webp");
    let bytes = std::fs::read(outputs.join(r["object_key"].as_str().unwrap())).unwrap();
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (2048, 1536));
    assert_eq!(u.usage.as_ref().unwrap()["pixels"], 2048 * 1536);
    assert_eq!(
        u.credits.as_ref().unwrap().charged,
        2,
        "the price table's upscale price"
    );

    // Inputs the tenant uploaded: a truncated PNG, and one whose header claims 100,000².
    let uploads = outputs.join("inputs/studio-42");
    std::fs::create_dir_all(&uploads).unwrap();
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::new_rgb8(64, 64)
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let png = png.into_inner();
    std::fs::write(uploads.join("cut.png"), &png[..png.len() / 2]).unwrap();
    let mut bomb = png.clone();
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(uploads.join("bomb.png"), &bomb).unwrap();
    std::fs::write(uploads.join("empty.png"), b"").unwrap();
    std::fs::write(uploads.join("notes.png"), b"this is text, whatever the name says").unwrap();
    // A 1 TiB upload (sparse: no disk used). Its size is checked before a byte is read; the
    // old worker read it whole into memory first.
    std::fs::File::create(uploads.join("huge.png"))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    for (name, reason) in [
        ("huge.png", "larger than"),
        ("cut.png", "corrupt"),
        ("bomb.png", "exceeds the limit"),
        ("empty.png", "empty"),
        ("notes.png", "unsupported"),
    ] {
        let a = studio
            .submit(&upscale(&format!("inputs/studio-42/{name}"), json!({"scale": 4})))
            .await
            .unwrap();
        let j = settled(&studio, &a.id).await;
        assert_eq!((j.status.as_str(), j.attempts), ("dead", 1), "{name}: {j:?}");
        let e = j.error.as_ref().unwrap();
        assert_eq!(e["class"], "permanent", "{name}");
        assert!(e["message"].as_str().unwrap().contains(reason), "{name}: {e}");
        assert_eq!(j.credits.unwrap().state, "refunded");
    }
    // Another tenant cannot name the studio's object.
    let other = Client::new(&base, "demo-video-key").unwrap();
    let a = other.submit(&upscale(&key, json!({"scale": 2}))).await.unwrap();
    let j = settled(&other, &a.id).await;
    assert_eq!(j.status, "dead");
    assert!(
        j.error.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("not one of this tenant's")
    );
}

/// PNG's CRC-32, to keep the edited header valid (so only its size is wrong).
fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}
