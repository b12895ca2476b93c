//! PDQ, the perceptual hash the platforms' abuse hash lists use, as the reference C++
//! implementation computes it (facebook/ThreatExchange `pdq/cpp`), from float luma:
//!
//! 1. luma `0.299 R + 0.587 G + 0.114 B` in `f32`;
//! 2. a Jarosz tent filter (two passes of a horizontal then vertical box filter, window
//!    `ceil(side / 128)`, truncated at the edges) and point decimation to 64 × 64 (skipped for
//!    64 × 64 input);
//! 3. the reference quality metric (integer gradient sum / 90, at most 100);
//! 4. the 16 × 16 DCT of frequencies 1..16 (`D · A · Dᵀ`, DC skipped);
//! 5. bit `i * 16 + j` set where the coefficient exceeds the lower median;
//! 6. hex as the reference prints it (`w[15]` … `w[0]`, 16-bit words).
//!
//! The 8 dihedral variants come from the one DCT ([`hash_dihedral`]), each re-thresholded with
//! its own median. Images below 5 pixels a side hash to zero with quality 0, as in the reference.
//!
//! **Pre-processing policy** ([`luma_from_image`]): pixels as the file stores them (no EXIF
//! rotation: the reference tools ignore it, and the dihedral variants cover the 90° cases),
//! alpha dropped (as the reference's conversion to RGB does), 16-bit samples scaled to 8 bits,
//! grey used as luma, full size (no 512 pre-resize: that is what the Java and pdqhash-python
//! pipelines do, and [`Prescale::NearestNeighbour512`] emulates the C++ tool's CImg resize when
//! its exact output is wanted). Decoding is the `image` crate's (zune-jpeg for JPEG), done by
//! `gantry_codecs::pdq::hash_image` under the media limits; vPDQ is `gantry_codecs::pdq::video`.
//!
//! A crate of its own so that it is built optimised even in the dev profile: every job output
//! is hashed before release, and the tests move thousands of them.

mod hash;
pub mod index;

pub use hash::{DIHEDRAL_NAMES, Hash256, HashError};

/// The reference's quality floor for a usable hash (`pdq/README.md`: discard ≤ 49).
pub const MIN_QUALITY: u8 = 50;
/// The reference's match threshold (distance ≤ 31).
pub const MATCH_DISTANCE: u32 = 31;

/// A hash and its quality (0..=100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pdq {
    /// The hash.
    pub hash: Hash256,
    /// The reference integer quality metric.
    pub quality: u8,
}

/// Resizing before hashing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prescale {
    /// Full size (Java `fromBufferedImage`, pdqhash-python, py-tx).
    #[default]
    None,
    /// The C++ `pdq-photo-hasher`: nearest neighbour to exactly 512 × 512 when a side is > 512.
    NearestNeighbour512,
}

/// Luma of a decoded image under the policy above: `(luma, width, height)`.
pub fn luma_from_image(img: &image::DynamicImage, prescale: Prescale) -> (Vec<f32>, usize, usize) {
    use image::DynamicImage as D;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let luma: Vec<f32> = match img {
        D::ImageLuma8(g) => g.as_raw().iter().map(|&v| f32::from(v)).collect(),
        D::ImageLumaA8(_) | D::ImageLuma16(_) | D::ImageLumaA16(_) => {
            img.to_luma8().as_raw().iter().map(|&v| f32::from(v)).collect()
        }
        _ => luma_from_rgb(img.to_rgb8().as_raw()),
    };
    match prescale {
        Prescale::NearestNeighbour512 if w > 512 || h > 512 => (nearest_512(&luma, w, h), 512, 512),
        _ => (luma, w, h),
    }
}

/// `0.299 R + 0.587 G + 0.114 B` per pixel of packed RGB24, in the reference's `f32` order.
pub fn luma_from_rgb(rgb: &[u8]) -> Vec<f32> {
    const R: f32 = 0.299;
    const G: f32 = 0.587;
    const B: f32 = 0.114;
    rgb.chunks_exact(3)
        .map(|p| R * f32::from(p[0]) + G * f32::from(p[1]) + B * f32::from(p[2]))
        .collect()
}

/// CImg's default `resize(512, 512)`: nearest neighbour, source index `floor(x * W / 512)`.
fn nearest_512(luma: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(512 * 512);
    for y in 0..512 {
        let sy = y * h / 512;
        for x in 0..512 {
            out.push(luma[sy * w + x * w / 512]);
        }
    }
    out
}

/// The hash of `w × h` luma.
pub fn hash_luma(luma: &[f32], w: usize, h: usize) -> Pdq {
    match dct16(luma, w, h) {
        Some((b, quality)) => Pdq {
            hash: threshold(&b),
            quality,
        },
        None => Pdq {
            hash: Hash256::ZERO,
            quality: 0,
        },
    }
}

/// A dihedral variant of the DCT: transposed or not, and whether the coefficient at `(i, j)`
/// keeps its sign.
type Variant = (bool, fn(usize, usize) -> bool);

/// The 8 dihedral hashes of `w × h` luma, in [`DIHEDRAL_NAMES`] order (original first), from
/// one DCT, each with its own median.
pub fn hash_dihedral(luma: &[f32], w: usize, h: usize) -> ([Hash256; 8], u8) {
    let Some((a, quality)) = dct16(luma, w, h) else {
        return ([Hash256::ZERO; 8], 0);
    };
    let mut out = [Hash256::ZERO; 8];
    // (transposed?, keep the sign at (i, j)?) per variant: the reference's rules.
    let variants: [Variant; 8] = [
        (false, |_, _| true),
        (true, |_, j| j & 1 == 1),
        (false, |i, j| (i + j) & 1 == 0),
        (true, |i, _| i & 1 == 1),
        (false, |i, _| i & 1 == 1),
        (false, |_, j| j & 1 == 1),
        (true, |_, _| true),
        (true, |i, j| (i + j) & 1 == 0),
    ];
    for (slot, (transpose, keep)) in out.iter_mut().zip(variants) {
        let mut b = [[0f32; 16]; 16];
        for i in 0..16 {
            for j in 0..16 {
                let v = if keep(i, j) { a[i][j] } else { -a[i][j] };
                if transpose {
                    b[j][i] = v;
                } else {
                    b[i][j] = v;
                }
            }
        }
        *slot = threshold(&b);
    }
    (out, quality)
}

/// Bits above the lower median (the 128th smallest of 256), strictly.
fn threshold(b: &[[f32; 16]; 16]) -> Hash256 {
    let mut sorted: Vec<f32> = b.iter().flatten().copied().collect();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[127];
    let mut h = Hash256::ZERO;
    for (i, row) in b.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if v > median {
                h.set_bit(i * 16 + j);
            }
        }
    }
    h
}

/// The DCT coefficients and quality; `None` below 5 pixels a side.
fn dct16(luma: &[f32], w: usize, h: usize) -> Option<([[f32; 16]; 16], u8)> {
    if w < 5 || h < 5 || luma.len() < w * h {
        return None;
    }
    let mut a = vec![0f32; 64 * 64];
    if w == 64 && h == 64 {
        a.copy_from_slice(&luma[..64 * 64]);
    } else {
        let mut buf1 = luma[..w * h].to_vec();
        let mut buf2 = vec![0f32; w * h];
        let (wx, wy) = (w.div_ceil(128), h.div_ceil(128));
        for _ in 0..2 {
            for r in 0..h {
                box1d(&buf1, &mut buf2, r * w, w, 1, wx);
            }
            box_columns(&buf2, &mut buf1, w, h, wy);
        }
        for i in 0..64 {
            let ini = ((i as f64 + 0.5) * h as f64 / 64.0) as usize;
            for j in 0..64 {
                let inj = ((j as f64 + 0.5) * w as f64 / 64.0) as usize;
                a[i * 64 + j] = buf1[ini * w + inj];
            }
        }
    }
    Some((dct(&a), quality(&a)))
}

/// `B = D · A · Dᵀ` over the 64 × 64 buffer `a` (row-major), summed in the reference's order
/// (`f32`, k ascending). The bounds are opaque to the optimiser: fully unrolled 16 × 64 × 64
/// loops take LLVM minutes to compile and run no faster.
fn dct(a: &[f32]) -> [[f32; 16]; 16] {
    let d = dct_matrix();
    let (n, m) = (std::hint::black_box(64usize), std::hint::black_box(16usize));
    let mut t = vec![0f32; 16 * 64];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for k in 0..n {
                s += d[i * 64 + k] * a[k * 64 + j];
            }
            t[i * 64 + j] = s;
        }
    }
    let mut b = [[0f32; 16]; 16];
    for i in 0..m {
        for j in 0..m {
            let mut s = 0f32;
            for k in 0..n {
                s += t[i * 64 + k] * d[j * 64 + k];
            }
            b[i][j] = s;
        }
    }
    b
}

/// The reference's `box1DFloat`: a box filter of `window` along `len` values `stride` apart
/// from `start`, the window truncated at both ends and divided by its current count.
fn box1d(input: &[f32], out: &mut [f32], start: usize, len: usize, stride: usize, window: usize) {
    let half = (window + 2) / 2;
    let phase1 = half - 1;
    let phase2 = window - half + 1;
    let phase3 = len.saturating_sub(window);
    let phase4 = half - 1;
    let (mut li, mut ri, mut oi) = (start, start, start);
    let mut sum = 0f32;
    let mut count = 0f32;
    for _ in 0..phase1 {
        sum += input[ri];
        count += 1.0;
        ri += stride;
    }
    for _ in 0..phase2 {
        sum += input[ri];
        count += 1.0;
        out[oi] = sum / count;
        ri += stride;
        oi += stride;
    }
    for _ in 0..phase3 {
        sum += input[ri];
        sum -= input[li];
        out[oi] = sum / count;
        li += stride;
        ri += stride;
        oi += stride;
    }
    for _ in 0..phase4 {
        sum -= input[li];
        count -= 1.0;
        out[oi] = sum / count;
        li += stride;
        oi += stride;
    }
}

/// [`box1d`] down every column at once, row by row (cache-friendly); each column sees exactly
/// the operations, in the same order, that `box1d` with stride `w` would apply.
fn box_columns(input: &[f32], out: &mut [f32], w: usize, h: usize, window: usize) {
    let half = (window + 2) / 2;
    let phase1 = half - 1;
    let phase2 = window - half + 1;
    let phase3 = h.saturating_sub(window);
    let phase4 = half - 1;
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    let mut sum = vec![0f32; w];
    let mut count = 0f32;
    let row = |r: usize| r * w..r * w + w;
    for _ in 0..phase1 {
        for (s, x) in sum.iter_mut().zip(&input[row(ri)]) {
            *s += x;
        }
        count += 1.0;
        ri += 1;
    }
    for _ in 0..phase2 {
        count += 1.0;
        for ((s, x), o) in sum.iter_mut().zip(&input[row(ri)]).zip(&mut out[row(oi)]) {
            *s += x;
            *o = *s / count;
        }
        ri += 1;
        oi += 1;
    }
    for _ in 0..phase3 {
        let (add, sub) = (row(ri), row(li));
        for (c, o) in out[row(oi)].iter_mut().enumerate() {
            sum[c] += input[add.start + c];
            sum[c] -= input[sub.start + c];
            *o = sum[c] / count;
        }
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..phase4 {
        count -= 1.0;
        for ((s, x), o) in sum.iter_mut().zip(&input[row(li)]).zip(&mut out[row(oi)]) {
            *s -= x;
            *o = *s / count;
        }
        li += 1;
        oi += 1;
    }
}

/// The reference's quality over the 64 × 64 buffer: `Σ |trunc((u − v) · 100 / 255)|` over
/// vertical and horizontal neighbours, `/ 90`, at most 100.
fn quality(a: &[f32]) -> u8 {
    let mut sum: i64 = 0;
    let d = |u: f32, v: f32| i64::from((((u - v) * 100.0) / 255.0) as i32).abs();
    for i in 0..63 {
        for j in 0..64 {
            sum += d(a[i * 64 + j], a[(i + 1) * 64 + j]);
        }
    }
    for i in 0..64 {
        for j in 0..63 {
            sum += d(a[i * 64 + j], a[i * 64 + j + 1]);
        }
    }
    (sum / 90).min(100) as u8
}

/// `D[i][j] = sqrt(2/64) · cos(π/128 · (i+1) · (2j+1))` (16 × 64, row-major), computed in `f64`
/// and stored as `f32`.
fn dct_matrix() -> &'static [f32] {
    static D: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        let scale = (2.0f64 / 64.0).sqrt();
        let mut d = Vec::with_capacity(16 * 64);
        for i in 0..16 {
            for j in 0..64 {
                let angle = std::f64::consts::PI / 2.0 / 64.0 * (i as f64 + 1.0) * (2.0 * j as f64 + 1.0);
                d.push((scale * angle.cos()) as f32);
            }
        }
        d
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_images_hash_to_zero_with_quality_zero() {
        let p = hash_luma(&[128.0; 16], 4, 4);
        assert_eq!((p.hash, p.quality), (Hash256::ZERO, 0));
    }

    #[test]
    fn a_flat_image_has_quality_zero_and_a_gradient_does_not() {
        let flat = hash_luma(&vec![100.0; 200 * 100], 200, 100);
        assert_eq!(flat.quality, 0);
        let grad: Vec<f32> = (0..200 * 100).map(|i| ((i % 200) * 255 / 199) as f32).collect();
        assert!(hash_luma(&grad, 200, 100).quality > 0);
    }

    #[test]
    fn box_filter_truncates_and_divides_by_the_count() {
        let input = [1.0, 2.0, 3.0, 4.0, 5.0];
        let mut out = [0.0; 5];
        box1d(&input, &mut out, 0, 5, 1, 3);
        assert_eq!(out, [1.5, 2.0, 3.0, 4.0, 4.5]);
        // An even window covers [i - (w/2 - 1), i + w/2].
        box1d(&input, &mut out, 0, 5, 1, 2);
        assert_eq!(out, [1.5, 2.5, 3.5, 4.5, 5.0]);
    }

    #[test]
    fn the_column_pass_equals_box1d_down_each_column() {
        let (w, h) = (37, 300);
        let input: Vec<f32> = (0..w * h).map(|i| ((i * 7919) % 251) as f32 * 0.37).collect();
        for window in [1, 2, 3, 4, 7] {
            let (mut a, mut b) = (vec![0f32; w * h], vec![0f32; w * h]);
            for c in 0..w {
                box1d(&input, &mut a, c, h, w, window);
            }
            box_columns(&input, &mut b, w, h, window);
            assert_eq!(a, b, "window {window}");
        }
    }

    #[test]
    fn the_original_dihedral_is_the_plain_hash() {
        let img: Vec<f32> = (0..97 * 71).map(|i| ((i * 7919) % 251) as f32).collect();
        let (d, q) = hash_dihedral(&img, 97, 71);
        let p = hash_luma(&img, 97, 71);
        assert_eq!((d[0], q), (p.hash, p.quality));
    }
}
