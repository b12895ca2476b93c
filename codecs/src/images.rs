//! Still images: decode (PNG, JPEG, WebP) under limits, apply the EXIF orientation, resize with
//! fast_image_resize, encode. Encoding starts from pixels, so EXIF, XMP, ICC text and GPS
//! positions never reach an output.

use std::io::Cursor;

use fast_image_resize as fir;
use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::error::MediaError;

/// What an input may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest input, in bytes.
    pub max_input_bytes: usize,
    /// Largest input, in pixels (checked from the header, before any pixel is decoded).
    pub max_pixels: u64,
    /// Longest side of an input or output.
    pub max_side: u32,
    /// Largest output, in pixels.
    pub max_output_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_input_bytes: 64 << 20,
            max_pixels: 50_000_000,
            max_side: 16_384,
            max_output_pixels: 67_108_864,
        }
    }
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG (lossless).
    Png,
    /// JPEG (quality 1..=100; alpha is flattened onto white).
    Jpeg,
    /// WebP (lossless: the `image` crate's encoder; quality is ignored).
    Webp,
}

impl ImageFormat {
    /// Parses `png`, `jpeg`/`jpg` or `webp`.
    pub fn parse(s: &str) -> Result<Self, MediaError> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Ok(Self::Png),
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            "webp" => Ok(Self::Webp),
            other => Err(MediaError::InvalidRequest(format!(
                "output format {other:?}: use png, jpeg or webp"
            ))),
        }
    }

    /// MIME type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }

    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    fn codec(self) -> image::ImageFormat {
        match self {
            Self::Png => image::ImageFormat::Png,
            Self::Jpeg => image::ImageFormat::Jpeg,
            Self::Webp => image::ImageFormat::WebP,
        }
    }
}

/// A decoded input.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// Upright pixels.
    pub image: DynamicImage,
    /// The input's format.
    pub format: ImageFormat,
    /// Whether an EXIF orientation was applied.
    pub reoriented: bool,
}

/// The format the bytes say they are (never the file name).
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, MediaError> {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => Ok(ImageFormat::Png),
        Ok(image::ImageFormat::Jpeg) => Ok(ImageFormat::Jpeg),
        Ok(image::ImageFormat::WebP) => Ok(ImageFormat::Webp),
        Ok(other) => Err(MediaError::Unsupported(format!("{other:?}"))),
        Err(_) => Err(MediaError::Unsupported("not an image we read (PNG, JPEG, WebP)".into())),
    }
}

fn reader<'a>(bytes: &'a [u8], format: ImageFormat, limits: &ImageLimits) -> ImageReader<Cursor<&'a [u8]>> {
    let mut r = ImageReader::with_format(Cursor::new(bytes), format.codec());
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    // RGBA16 is the widest buffer a decoder makes: 8 bytes a pixel.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    r.limits(l);
    r
}

fn corrupt(e: image::ImageError) -> MediaError {
    match e {
        image::ImageError::Limits(l) => MediaError::InvalidRequest(format!("limits: {l}")),
        image::ImageError::Unsupported(u) => MediaError::Unsupported(u.to_string()),
        other => MediaError::Corrupt(other.to_string()),
    }
}

/// The input's width and height, from its header alone.
pub fn dimensions(bytes: &[u8], limits: &ImageLimits) -> Result<(ImageFormat, u32, u32), MediaError> {
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    if bytes.len() > limits.max_input_bytes {
        return Err(MediaError::TooLarge {
            bytes: bytes.len(),
            max: limits.max_input_bytes,
        });
    }
    let format = sniff(bytes)?;
    // Read the header without the side limit, so an oversized claim is reported as such.
    let mut r = ImageReader::with_format(Cursor::new(bytes), format.codec());
    r.no_limits();
    let (w, h) = r.into_dimensions().map_err(corrupt)?;
    if w == 0 || h == 0 {
        return Err(MediaError::Corrupt(format!("{w}x{h} image")));
    }
    if u64::from(w) * u64::from(h) > limits.max_pixels || w > limits.max_side || h > limits.max_side {
        return Err(MediaError::TooManyPixels {
            width: w,
            height: h,
            max: limits.max_pixels,
            max_side: limits.max_side,
        });
    }
    Ok((format, w, h))
}

/// Decodes an input and turns it upright.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Decoded, MediaError> {
    let (format, _, _) = dimensions(bytes, limits)?;
    let mut decoder = reader(bytes, format, limits).into_decoder().map_err(corrupt)?;
    // A broken EXIF block is not worth failing the image for: it stays as stored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    let reoriented = orientation != image::metadata::Orientation::NoTransforms;
    image.apply_orientation(orientation);
    Ok(Decoded {
        image,
        format,
        reoriented,
    })
}

/// Decodes an input as stored: no EXIF orientation applied (what perceptual hashing wants, to
/// agree with the reference tools).
pub fn decode_raw(bytes: &[u8], limits: &ImageLimits) -> Result<DynamicImage, MediaError> {
    let (format, _, _) = dimensions(bytes, limits)?;
    let decoder = reader(bytes, format, limits).into_decoder().map_err(corrupt)?;
    DynamicImage::from_decoder(decoder).map_err(corrupt)
}

/// How to size the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Multiply both sides (2 or 4).
    Scale(u8),
    /// Fit within a box, keeping the aspect ratio (up or down).
    FitWithin(u32, u32),
    /// Exactly this size.
    Exact(u32, u32),
}

impl Resize {
    /// The output size for an input of `w`×`h`.
    pub fn target(self, w: u32, h: u32, limits: &ImageLimits) -> Result<(u32, u32), MediaError> {
        let (tw, th) = match self {
            Resize::Scale(s @ (2 | 4)) => (u64::from(w) * u64::from(s), u64::from(h) * u64::from(s)),
            Resize::Scale(s) => {
                return Err(MediaError::InvalidRequest(format!("scale {s}: use 2 or 4")));
            }
            Resize::FitWithin(bw, bh) | Resize::Exact(bw, bh) if bw == 0 || bh == 0 => {
                return Err(MediaError::InvalidRequest("a box needs a width and a height".into()));
            }
            Resize::FitWithin(bw, bh) => {
                let r = (f64::from(bw) / f64::from(w)).min(f64::from(bh) / f64::from(h));
                (
                    ((f64::from(w) * r).round() as u64).max(1),
                    ((f64::from(h) * r).round() as u64).max(1),
                )
            }
            Resize::Exact(bw, bh) => (u64::from(bw), u64::from(bh)),
        };
        if tw * th > limits.max_output_pixels || tw > u64::from(limits.max_side) || th > u64::from(limits.max_side) {
            return Err(MediaError::InvalidRequest(format!(
                "the output would be {tw}x{th}, over the limit of {} pixels or {} per side",
                limits.max_output_pixels, limits.max_side
            )));
        }
        Ok((tw as u32, th as u32))
    }
}

thread_local! {
    /// One resizer per thread: it keeps its scratch buffers between images.
    static RESIZER: std::cell::RefCell<fir::Resizer> = std::cell::RefCell::new(fir::Resizer::new());
}

/// Resizes with Lanczos3; images with alpha are premultiplied during the resize (so
/// transparent pixels do not bleed their colour into the edges). 8-bit RGB(A) pixels are read
/// in place; other layouts are converted first.
pub fn resize(img: &DynamicImage, w: u32, h: u32) -> Result<DynamicImage, MediaError> {
    let internal = |e: &dyn std::fmt::Display| MediaError::Internal(format!("resize: {e}"));
    let alpha = img.color().has_alpha();
    let pixel = if alpha {
        fir::PixelType::U8x4
    } else {
        fir::PixelType::U8x3
    };
    let converted;
    let pixels: &[u8] = match (img, alpha) {
        (DynamicImage::ImageRgba8(b), true) => b.as_raw(),
        (DynamicImage::ImageRgb8(b), false) => b.as_raw(),
        (_, true) => {
            converted = img.to_rgba8().into_raw();
            &converted
        }
        (_, false) => {
            converted = img.to_rgb8().into_raw();
            &converted
        }
    };
    let src = fir::images::ImageRef::new(img.width(), img.height(), pixels, pixel).map_err(|e| internal(&e))?;
    let mut dst = fir::images::Image::new(w, h, pixel);
    let opts = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3))
        .use_alpha(true);
    RESIZER
        .with(|r| r.borrow_mut().resize(&src, &mut dst, &opts))
        .map_err(|e| internal(&e))?;
    let out = dst.into_vec();
    let image = if alpha {
        image::RgbaImage::from_raw(w, h, out).map(DynamicImage::ImageRgba8)
    } else {
        image::RgbImage::from_raw(w, h, out).map(DynamicImage::ImageRgb8)
    };
    image.ok_or_else(|| MediaError::Internal("resize: buffer size".into()))
}

/// An encoded output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The bytes (no metadata).
    pub bytes: Vec<u8>,
    /// The format.
    pub format: ImageFormat,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Encodes pixels (JPEG at `quality`, 1..=100, default 90).
pub fn encode(img: &DynamicImage, format: ImageFormat, quality: Option<u8>) -> Result<Encoded, MediaError> {
    let mut out = Cursor::new(Vec::new());
    let failed = |e: image::ImageError| MediaError::Internal(format!("encode: {e}"));
    match format {
        ImageFormat::Jpeg => {
            let q = quality.unwrap_or(90);
            if !(1..=100).contains(&q) {
                return Err(MediaError::InvalidRequest(format!("quality {q}: use 1..=100")));
            }
            // JPEG has no alpha: flatten onto white rather than onto black.
            let rgb = if img.color().has_alpha() {
                let mut canvas =
                    image::RgbaImage::from_pixel(img.width(), img.height(), image::Rgba([255, 255, 255, 255]));
                image::imageops::overlay(&mut canvas, &img.to_rgba8(), 0, 0);
                DynamicImage::ImageRgba8(canvas).to_rgb8()
            } else {
                img.to_rgb8()
            };
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q);
            rgb.write_with_encoder(enc).map_err(failed)?;
        }
        ImageFormat::Png => {
            img.write_to(&mut out, image::ImageFormat::Png).map_err(failed)?;
        }
        ImageFormat::Webp => {
            let rgba = img.to_rgba8();
            let enc = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            rgba.write_with_encoder(enc).map_err(failed)?;
        }
    }
    Ok(Encoded {
        bytes: out.into_inner(),
        format,
        width: img.width(),
        height: img.height(),
    })
}

/// Decode, resize and encode in one step: what an `upscale` job does.
pub fn upscale(
    bytes: &[u8],
    size: Resize,
    format: Option<ImageFormat>,
    quality: Option<u8>,
    limits: &ImageLimits,
) -> Result<Encoded, MediaError> {
    // Refuse impossible requests before decoding anything.
    let (_, w0, h0) = dimensions(bytes, limits)?;
    let _ = size.target(w0, h0, limits)?;
    let d = decode(bytes, limits)?;
    let (w, h) = size.target(d.image.width(), d.image.height(), limits)?;
    let resized = resize(&d.image, w, h)?;
    encode(&resized, format.unwrap_or(d.format), quality)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_rgba(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_fn(w, h, |x, _| {
            // Opaque red on the left, fully transparent *green* on the right.
            if x < w / 2 {
                image::Rgba([255, 0, 0, 255])
            } else {
                image::Rgba([0, 255, 0, 0])
            }
        });
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgba8(img)
            .write_to(&mut out, image::ImageFormat::Png)
            .expect("png");
        out.into_inner()
    }

    #[test]
    fn upscales_2x_and_4x_and_fits_within_a_box() {
        let src = png_rgba(40, 30);
        let l = ImageLimits::default();
        let e = upscale(&src, Resize::Scale(2), None, None, &l).expect("2x");
        assert_eq!((e.width, e.height, e.format), (80, 60, ImageFormat::Png));
        let e = upscale(&src, Resize::Scale(4), Some(ImageFormat::Jpeg), Some(80), &l).expect("4x");
        assert_eq!((e.width, e.height, &e.bytes[..2]), (160, 120, &[0xFF, 0xD8][..]));
        let e = upscale(&src, Resize::FitWithin(100, 100), Some(ImageFormat::Webp), None, &l).expect("fit");
        assert_eq!((e.width, e.height), (100, 75));
        assert_eq!(sniff(&e.bytes), Ok(ImageFormat::Webp));
        assert!(matches!(
            upscale(&src, Resize::Scale(3), None, None, &l),
            Err(MediaError::InvalidRequest(_))
        ));
    }

    #[test]
    fn alpha_is_premultiplied_so_transparent_colour_does_not_bleed() {
        let src = png_rgba(64, 8);
        let d = decode(&src, &ImageLimits::default()).expect("decode");
        let out = resize(&d.image, 256, 32).expect("resize").to_rgba8();
        // Just left of the edge, opaque red must stay red: no green from the transparent half.
        let p = out.get_pixel(126, 16);
        assert!(p[0] > 200 && p[1] < 30, "{p:?}");
    }

    #[test]
    fn bad_inputs_get_typed_errors() {
        let l = ImageLimits::default();
        assert_eq!(decode(&[], &l).err(), Some(MediaError::Empty));
        assert!(matches!(decode(b"GIF89a....", &l), Err(MediaError::Unsupported(_))));
        let mut cut = png_rgba(40, 30);
        cut.truncate(cut.len() / 2);
        assert!(matches!(decode(&cut, &l), Err(MediaError::Corrupt(_))), "truncated");
        let small = ImageLimits {
            max_input_bytes: 10,
            ..l
        };
        assert!(matches!(
            decode(&png_rgba(4, 4), &small),
            Err(MediaError::TooLarge { .. })
        ));
        let too_big = upscale(&png_rgba(5000, 1), Resize::Scale(4), None, None, &l);
        assert!(
            matches!(too_big, Err(MediaError::InvalidRequest(_))),
            "output over the side limit"
        );
    }

    #[test]
    fn a_header_claiming_100000_squared_pixels_is_refused_before_decoding() {
        // A valid 1x1 PNG whose IHDR claims 100,000 x 100,000 (CRC fixed up).
        let mut png = png_rgba(1, 1);
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let e = decode(&png, &ImageLimits::default()).expect_err("bomb");
        assert!(
            matches!(
                e,
                MediaError::TooManyPixels {
                    width: 100_000,
                    height: 100_000,
                    ..
                }
            ),
            "{e}"
        );
    }

    /// A JPEG with an EXIF block: orientation 6 (rotate 90° clockwise) and a GPS latitude.
    fn jpeg_with_exif(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                image::Rgb([250, 0, 0])
            } else {
                image::Rgb([0, 0, 250])
            }
        });
        let mut plain = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut plain, image::ImageFormat::Jpeg)
            .expect("jpeg");
        let plain = plain.into_inner();
        // TIFF, little endian: IFD0 with Orientation = 6 and a GPS IFD pointer; GPS IFD with
        // GPSLatitudeRef = "N".
        let mut tiff: Vec<u8> = b"II*\0".to_vec();
        tiff.extend(8u32.to_le_bytes());
        tiff.extend(2u16.to_le_bytes());
        tiff.extend([0x12, 0x01, 3, 0]); // Orientation, SHORT
        tiff.extend(1u32.to_le_bytes());
        tiff.extend([6, 0, 0, 0]);
        tiff.extend([0x25, 0x88, 4, 0]); // GPS IFD pointer, LONG
        tiff.extend(1u32.to_le_bytes());
        tiff.extend(38u32.to_le_bytes());
        tiff.extend(0u32.to_le_bytes()); // no next IFD
        tiff.extend(1u16.to_le_bytes()); // GPS IFD at 38
        tiff.extend([0x01, 0x00, 2, 0]); // GPSLatitudeRef, ASCII
        tiff.extend(2u32.to_le_bytes());
        tiff.extend(*b"N\0\0\0");
        tiff.extend(0u32.to_le_bytes());
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
        out.extend(((app1.len() + 2) as u16).to_be_bytes());
        out.extend(app1);
        out.extend(&plain[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied_and_no_metadata_leaves() {
        let src = jpeg_with_exif(40, 20);
        assert!(src.windows(4).any(|w| w == b"Exif"));
        let d = decode(&src, &ImageLimits::default()).expect("decode");
        assert!(d.reoriented);
        assert_eq!((d.image.width(), d.image.height()), (20, 40), "turned upright");
        // Rotated 90° clockwise: the red left half is now the top.
        let top = d.image.to_rgb8().get_pixel(10, 2).0;
        assert!(top[0] > 180 && top[2] < 80, "{top:?}");
        for f in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::Webp] {
            let e = upscale(&src, Resize::Scale(2), Some(f), None, &ImageLimits::default()).expect("upscale");
            assert_eq!((e.width, e.height), (40, 80));
            assert!(
                !e.bytes.windows(4).any(|w| w == b"Exif"),
                "{f:?} carries no EXIF (so no GPS)"
            );
        }
    }

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
}
