//! Previews of a video: a poster frame (JPEG or WebP, through `images::encode`, so without
//! metadata) and a short looping animated WebP (libwebp_anim) of its first seconds, both
//! scaled down. Both decode in software on one thread: they read a few frames, not the file.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use ffmpeg_next as ff;

use super::{Flow, Source, VideoLimits, corrupt, internal, packed_rgb, scaler_for};
use crate::error::MediaError;
use crate::images::{Encoded, ImageFormat};

/// Even sides at most `max_width` wide, aspect kept.
fn fit_width((w, h): (u32, u32), max_width: u32) -> (u32, u32) {
    let tw = w.min(max_width.max(2)) & !1;
    let th = ((f64::from(h) * f64::from(tw) / f64::from(w)).round() as u32).max(2) & !1;
    (tw.max(2), th)
}

/// A poster frame: the first frame at or after `at` (a share of the duration, 0..1), scaled
/// to at most `max_width` wide, encoded as `format` (JPEG or WebP) without metadata.
pub fn poster(
    input: &Path,
    at: f64,
    max_width: u32,
    format: ImageFormat,
    limits: &VideoLimits,
) -> Result<Encoded, MediaError> {
    let mut src = Source::open(input, limits, None, false)?;
    src.seek_share(at);
    let (tw, th) = fit_width(src.size, max_width);
    let mut scaler = None;
    let mut rgb = ff::frame::Video::empty();
    let mut got = None;
    let never = AtomicBool::new(false);
    src.run(
        limits,
        &never,
        0,
        |frame| {
            let s = scaler_for(
                &mut scaler,
                frame,
                ff::format::Pixel::RGB24,
                (tw, th),
                ff::software::scaling::Flags::BICUBIC,
            )?;
            s.run(frame, &mut rgb).map_err(|e| corrupt("scaling the frame", e))?;
            got = Some(packed_rgb(&rgb)?);
            Ok(Flow::Done)
        },
        |_, _| Ok(()),
    )?;
    let pixels = got.ok_or_else(|| MediaError::Corrupt("no decodable video frame".into()))?;
    let img = image::RgbImage::from_raw(tw, th, pixels)
        .map(image::DynamicImage::ImageRgb8)
        .ok_or_else(|| MediaError::Internal("frame buffer size".into()))?;
    crate::images::encode(&img, format, Some(85))
}

/// What an animated preview holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnimatedOptions {
    /// Seconds from the start.
    pub seconds: f64,
    /// Frames per second.
    pub fps: u32,
    /// Largest width.
    pub max_width: u32,
}

impl Default for AnimatedOptions {
    fn default() -> Self {
        Self {
            seconds: 3.0,
            fps: 10,
            max_width: 320,
        }
    }
}

/// What was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Animated {
    /// Frames in the animation.
    pub frames: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// A looping animated WebP of the first `opts.seconds` of `input`, at `opts.fps`, written to
/// `output`.
pub fn animated_webp(
    input: &Path,
    output: &Path,
    opts: &AnimatedOptions,
    limits: &VideoLimits,
    stop: &AtomicBool,
    time_limit_secs: u64,
) -> Result<Animated, MediaError> {
    if !(opts.seconds > 0.0 && opts.seconds <= 30.0 && (1..=30).contains(&opts.fps)) {
        return Err(MediaError::InvalidRequest(
            "an animated preview lasts 0..30 s at 1..=30 frames per second".into(),
        ));
    }
    let mut src = Source::open(input, limits, None, false)?;
    let (tw, th) = fit_width(src.size, opts.max_width);
    let mut octx = ff::format::output_as(&output, "webp").map_err(|e| internal("creating the preview", e))?;
    let codec = ff::encoder::find_by_name("libwebp_anim")
        .ok_or_else(|| MediaError::Internal("this FFmpeg has no libwebp_anim".into()))?;
    let mut enc = ff::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| internal("the preview encoder", e))?;
    let ms = ff::Rational::new(1, 1000);
    enc.set_width(tw);
    enc.set_height(th);
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(ms);
    let mut d = ff::Dictionary::new();
    d.set("quality", "70");
    d.set("lossless", "0");
    let mut encoder = enc.open_with(d).map_err(|e| internal("opening libwebp_anim", e))?;
    let mut ost = octx
        .add_stream(codec)
        .map_err(|e| internal("adding the preview stream", e))?;
    ost.set_parameters(&encoder);
    ost.set_time_base(ms);
    let mut mux = ff::Dictionary::new();
    mux.set("loop", "0");
    octx.write_header_with(mux)
        .map_err(|e| internal("writing the preview header", e))?;
    let out_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(ms);

    let (tb, fps_in) = (src.v_tb, src.fps());
    let secs_per_tick = f64::from(tb.numerator()) / f64::from(tb.denominator().max(1));
    let step = 1.0 / f64::from(opts.fps);
    let (mut first, mut next, mut index, mut frames) = (None::<i64>, 0.0f64, 0u64, 0u32);
    let mut scaler = None;
    let mut scaled = ff::frame::Video::empty();
    let write = |encoder: &mut ff::encoder::Video, octx: &mut ff::format::context::Output| {
        let mut packet = ff::Packet::empty();
        while encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(0);
            packet.rescale_ts(ms, out_tb);
            packet
                .write_interleaved(octx)
                .map_err(|e| internal("writing the preview", e))?;
        }
        Ok::<(), MediaError>(())
    };
    src.run(
        limits,
        stop,
        time_limit_secs,
        |frame| {
            // Seconds since the first frame, from timestamps where the stream has them.
            let t = match (frame.timestamp(), first) {
                (Some(ts), Some(f)) => (ts - f) as f64 * secs_per_tick,
                (Some(ts), None) => {
                    first = Some(ts);
                    0.0
                }
                (None, _) => index as f64 / fps_in,
            };
            index += 1;
            if t >= opts.seconds {
                return Ok(Flow::Done);
            }
            if t + 1e-6 < next {
                return Ok(Flow::More);
            }
            next += step;
            let s = scaler_for(
                &mut scaler,
                frame,
                ff::format::Pixel::YUV420P,
                (tw, th),
                ff::software::scaling::Flags::BICUBIC,
            )?;
            s.run(frame, &mut scaled).map_err(|e| corrupt("scaling a frame", e))?;
            scaled.set_pts(Some((t * 1000.0).round() as i64));
            scaled.set_kind(ff::picture::Type::None);
            encoder
                .send_frame(&scaled)
                .map_err(|e| internal("encoding the preview", e))?;
            frames += 1;
            write(&mut encoder, &mut octx)?;
            Ok(Flow::More)
        },
        |_, _| Ok(()),
    )?;
    if frames == 0 {
        return Err(MediaError::Corrupt("no decodable video frame".into()));
    }
    encoder.send_eof().map_err(|e| internal("flushing the preview", e))?;
    write(&mut encoder, &mut octx)?;
    octx.write_trailer()
        .map_err(|e| internal("writing the preview trailer", e))?;
    Ok(Animated {
        frames,
        width: tw,
        height: th,
    })
}

#[cfg(test)]
mod tests {
    use super::fit_width;

    #[test]
    fn previews_fit_the_width_with_even_sides() {
        assert_eq!(fit_width((1920, 1080), 320), (320, 180));
        assert_eq!(fit_width((200, 101), 320), (200, 100));
        assert_eq!(fit_width((3, 1000), 320), (2, 666));
    }
}
