//! Any bytes through the worker's image entry points: decode under limits, orient, resize 2x,
//! encode; PDQ-hash. It must return, never panic, hang or allocate past the limits.
#![no_main]

use gantry_codecs::{ImageLimits, Resize, decode, upscale};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = ImageLimits {
        max_pixels: 4_000_000,
        max_output_pixels: 16_000_000,
        ..Default::default()
    };
    let _ = decode(data, &limits);
    let _ = gantry_codecs::pdq::hash_image(data, &limits, gantry_codecs::pdq::Prescale::None);
    let _ = upscale(data, Resize::Scale(2), None, None, &limits);
    let _ = upscale(data, Resize::FitWithin(64, 64), Some(gantry_codecs::ImageFormat::Jpeg), Some(80), &limits);
});
