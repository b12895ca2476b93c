//! Thousands of mutated valid images (truncations, bit flips, edited headers, spliced chunks)
//! through the same entry points the worker uses: every one ends in `Ok` or a typed error —
//! never a panic, a hang or an allocation past the limits.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use std::io::Cursor;
use std::time::{Duration, Instant};

use gantry_codecs::{ImageLimits, MediaError, Resize, decode, upscale};
use image::DynamicImage;
use rand::{Rng, SeedableRng};

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let img = DynamicImage::ImageRgba8(image::RgbaImage::from_fn(64, 48, |x, y| {
        image::Rgba([
            (x * 4) as u8,
            (y * 5) as u8,
            ((x + y) * 2) as u8,
            if x % 7 == 0 { 0 } else { 255 },
        ])
    }));
    let mut out = Vec::new();
    for (name, f) in [
        ("png", image::ImageFormat::Png),
        ("jpeg", image::ImageFormat::Jpeg),
        ("webp", image::ImageFormat::WebP),
    ] {
        let mut c = Cursor::new(Vec::new());
        let src = if f == image::ImageFormat::Jpeg {
            DynamicImage::ImageRgb8(img.to_rgb8())
        } else {
            img.clone()
        };
        src.write_to(&mut c, f).unwrap();
        out.push((name, c.into_inner()));
    }
    out
}

fn mutate(rng: &mut impl Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    match rng.random_range(0..5) {
        0 => b.truncate(rng.random_range(0..b.len())),
        1 => {
            for _ in 0..rng.random_range(1..9) {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
        }
        2 => {
            // Header edits: dimensions, chunk lengths, markers live in the first bytes.
            for _ in 0..rng.random_range(1..5) {
                let i = rng.random_range(0..b.len().min(64));
                b[i] = rng.random();
            }
        }
        3 => {
            // Splice: repeat or drop a run from the middle.
            let a = rng.random_range(0..b.len());
            let z = rng.random_range(a..b.len());
            if rng.random_bool(0.5) {
                let run = b[a..z].to_vec();
                b.splice(z..z, run);
            } else {
                b.drain(a..z);
            }
        }
        _ => {
            // Big-number edits anywhere: 0xFF runs make huge lengths and sizes.
            let i = rng.random_range(0..b.len());
            let n = rng.random_range(1..5).min(b.len() - i);
            b[i..i + n].fill(0xFF);
        }
    }
    b
}

#[test]
fn mutated_images_never_panic_and_fail_with_typed_errors() {
    let limits = ImageLimits {
        max_pixels: 4_000_000,
        max_output_pixels: 16_000_000,
        ..Default::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6761_6e74_7279);
    let (mut ok, mut refused) = (0, 0);
    let started = Instant::now();
    for (name, seed) in seeds() {
        assert!(decode(&seed, &limits).is_ok(), "{name} seed decodes");
        for i in 0..1500 {
            let m = mutate(&mut rng, &seed);
            let t = Instant::now();
            let r = std::panic::catch_unwind(|| upscale(&m, Resize::Scale(2), None, None, &limits));
            let r = r.unwrap_or_else(|_| panic!("{name} mutation {i} panicked ({} bytes)", m.len()));
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{name} mutation {i} took {:?}",
                t.elapsed()
            );
            match r {
                Ok(e) => {
                    assert!(u64::from(e.width) * u64::from(e.height) <= limits.max_output_pixels);
                    ok += 1;
                }
                Err(MediaError::Internal(e)) => panic!("{name} mutation {i}: internal error {e}"),
                Err(_) => refused += 1,
            }
        }
    }
    eprintln!(
        "4,500 mutations: {ok} still decodable, {refused} refused, {:?}",
        started.elapsed()
    );
    assert!(refused > 1000, "most mutations are refused: {refused}");
}
