//! `gantry bench resize`: the upscale path against the `image` crate's own resize, side by side
//! in one run, and thumbnails per second on one core.

use std::io::Cursor;
use std::time::{Duration, Instant};

use gantry_codecs::{ImageFormat, ImageLimits, Resize};
use image::DynamicImage;

use super::bench::median;

/// A 1024x1024 RGBA test card: gradients, edges and partly transparent pixels.
fn card() -> DynamicImage {
    DynamicImage::ImageRgba8(image::RgbaImage::from_fn(1024, 1024, |x, y| {
        let edge = ((x / 64 + y / 64) % 2) as u8 * 80;
        image::Rgba([
            (x / 4) as u8,
            (y / 4) as u8,
            edge.wrapping_add((x ^ y) as u8 / 3),
            128 + (x % 128) as u8,
        ])
    }))
}

pub fn resize_bench(rounds: usize, thumb_secs: u64) -> anyhow::Result<()> {
    let src = card();
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut ours, mut ours_1, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    // A warm-up of each, then rounds in turn, so neither side pays the first page faults.
    let _ = gantry_codecs::resize(&src, 2048, 2048)?;
    let _ = one_thread.install(|| gantry_codecs::resize(&src, 2048, 2048))?;
    let _ = image::imageops::resize(&src.to_rgba8(), 2048, 2048, image::imageops::FilterType::Lanczos3);
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let a = gantry_codecs::resize(&src, 2048, 2048)?;
        ours.push(t.elapsed().as_secs_f64());
        drop(a);
        let t = Instant::now();
        let a = one_thread.install(|| gantry_codecs::resize(&src, 2048, 2048))?;
        ours_1.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let b = image::imageops::resize(&src.to_rgba8(), 2048, 2048, image::imageops::FilterType::Lanczos3);
        theirs.push(t.elapsed().as_secs_f64());
        anyhow::ensure!((a.width(), b.width()) == (2048, 2048), "sizes");
    }
    let (o, o1, t) = (median(ours), median(ours_1), median(theirs));
    println!("1024x1024 -> 2048x2048 RGBA, Lanczos3, output allocated each time, median of {rounds}");
    println!(
        "  gantry (fast_image_resize, alpha premultiplied), {cores} cores: {:>8.1} ms",
        o * 1e3
    );
    println!(
        "  gantry, one thread:                                {:>8.1} ms",
        o1 * 1e3
    );
    println!(
        "  image::imageops::resize (single-threaded):         {:>8.1} ms",
        t * 1e3
    );
    println!(
        "  ratio: {:.1}x faster on {cores} cores, {:.1}x on one thread",
        t / o,
        t / o1
    );

    // Thumbnails: decode a 1024x1024 JPEG, fit within 256x256, encode JPEG q80; one core.
    let mut jpeg = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(src.to_rgb8()).write_to(&mut jpeg, image::ImageFormat::Jpeg)?;
    let jpeg = jpeg.into_inner();
    let limits = ImageLimits::default();
    let (start, mut n) = (Instant::now(), 0u32);
    while start.elapsed() < Duration::from_secs(thumb_secs.max(1)) {
        let e = gantry_codecs::upscale(
            &jpeg,
            Resize::FitWithin(256, 256),
            Some(ImageFormat::Jpeg),
            Some(80),
            &limits,
        )?;
        anyhow::ensure!(e.width == 256, "thumbnail size");
        n += 1;
    }
    println!(
        "thumbnails (1024x1024 JPEG -> 256x256 JPEG q80, decode + resize + encode): {:.0} per second on one core",
        f64::from(n) / start.elapsed().as_secs_f64()
    );
    Ok(())
}
