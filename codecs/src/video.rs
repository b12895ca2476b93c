//! Video: probe and transcode with ffmpeg-next over the system's FFmpeg (Debian 12: 5.1).
//!
//! `transcode` decodes the best video stream (any decoder FFmpeg has: H.264, HEVC, VP9, AV1,
//! MPEG-4…), scales it to at most `max_height` (even sides, aspect kept) and at most `max_fps`,
//! and encodes web-ready H.264 (yuv420p, CRF and preset) into an MP4 with `+faststart` (the
//! index first, so playback starts before the download ends). AAC audio is passed through;
//! other audio is reported as left out (encoding it to AAC comes next). Limits are checked
//! before decoding (bytes, duration, frame size) and while decoding (frames, a stop flag the
//! caller sets on timeout). Input errors are [`MediaError`]s naming the reason.

use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use ffmpeg_next as ff;

use crate::error::MediaError;

/// What a video input may be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VideoLimits {
    /// Largest input, in bytes.
    pub max_input_bytes: u64,
    /// Longest input, in seconds.
    pub max_duration_secs: f64,
    /// Largest frame, in pixels.
    pub max_frame_pixels: u64,
    /// Most frames decoded.
    pub max_frames: u64,
}

impl Default for VideoLimits {
    fn default() -> Self {
        Self {
            max_input_bytes: 2 << 30,
            max_duration_secs: 3600.0,
            max_frame_pixels: 8_912_896, // 4096 x 2176
            max_frames: 3600 * 120,
        }
    }
}

/// How to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscodeOptions {
    /// x264 CRF (0..=51; 23 by default).
    pub crf: u8,
    /// x264 preset (`ultrafast` … `veryslow`; `medium` by default).
    pub preset: String,
    /// Largest output height.
    pub max_height: Option<u32>,
    /// Largest output frame rate.
    pub max_fps: Option<u32>,
}

impl Default for TranscodeOptions {
    fn default() -> Self {
        Self {
            crf: 23,
            preset: "medium".into(),
            max_height: None,
            max_fps: None,
        }
    }
}

const PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// What a transcode did.
#[derive(Clone, Debug, PartialEq)]
pub struct TranscodeReport {
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// Frames encoded.
    pub frames: u64,
    /// Input duration, seconds.
    pub duration_secs: f64,
    /// The encoder used (`libx264`).
    pub encoder: &'static str,
    /// Why that encoder (`cpu: no NVENC probe` …).
    pub encoder_reason: String,
    /// The input video codec.
    pub input_codec: String,
    /// `copied (aac)`, `none`, or `left out (opus): …`.
    pub audio: String,
}

/// A stream, as probed.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamInfo {
    /// `video` or `audio` (others are `other`).
    pub kind: &'static str,
    /// Codec name.
    pub codec: String,
    /// Width (video).
    pub width: u32,
    /// Height (video).
    pub height: u32,
}

/// A probed input.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// Container (`mov,mp4,m4a,3gp,3g2,mj2`, `matroska,webm`…).
    pub container: String,
    /// Seconds.
    pub duration_secs: f64,
    /// Streams.
    pub streams: Vec<StreamInfo>,
}

/// Frame threading on every core (count 0: FFmpeg picks).
fn threads() -> ff::codec::threading::Config {
    ff::codec::threading::Config {
        kind: ff::codec::threading::Type::Frame,
        count: 0,
        ..Default::default()
    }
}

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A failed init leaves FFmpeg unusable; every later call reports it.
        let _ = ff::init();
        ff::log::set_level(ff::log::Level::Fatal);
    });
}

fn corrupt(what: &str, e: ff::Error) -> MediaError {
    MediaError::Corrupt(format!("{what}: {e}"))
}

fn internal(what: &str, e: ff::Error) -> MediaError {
    MediaError::Internal(format!("{what}: {e}"))
}

fn open(path: &Path, limits: &VideoLimits) -> Result<ff::format::context::Input, MediaError> {
    init();
    let len = std::fs::metadata(path)
        .map_err(|e| MediaError::Corrupt(format!("reading the input: {e}")))?
        .len();
    if len == 0 {
        return Err(MediaError::Empty);
    }
    if len > limits.max_input_bytes {
        return Err(MediaError::TooLarge {
            bytes: usize::try_from(len).unwrap_or(usize::MAX),
            max: usize::try_from(limits.max_input_bytes).unwrap_or(usize::MAX),
        });
    }
    let ictx = ff::format::input(&path).map_err(|e| match e {
        ff::Error::InvalidData => MediaError::Unsupported("not a video container FFmpeg reads".into()),
        other => corrupt("opening the input", other),
    })?;
    let secs = duration_secs(&ictx);
    if secs > limits.max_duration_secs {
        return Err(MediaError::InvalidRequest(format!(
            "the input lasts {secs:.0} s; at most {:.0} s are accepted",
            limits.max_duration_secs
        )));
    }
    Ok(ictx)
}

fn duration_secs(ictx: &ff::format::context::Input) -> f64 {
    let d = ictx.duration();
    if d <= 0 {
        0.0
    } else {
        d as f64 / f64::from(ff::ffi::AV_TIME_BASE)
    }
}

/// Reads a file's container and streams, under `limits`.
pub fn probe(path: &Path, limits: &VideoLimits) -> Result<Probe, MediaError> {
    let ictx = open(path, limits)?;
    let mut streams = Vec::new();
    for s in ictx.streams() {
        let p = s.parameters();
        let kind = match p.medium() {
            ff::media::Type::Video => "video",
            ff::media::Type::Audio => "audio",
            _ => "other",
        };
        let (width, height) = if kind == "video" {
            ff::codec::context::Context::from_parameters(p.clone())
                .ok()
                .and_then(|c| c.decoder().video().ok())
                .map_or((0, 0), |d| (d.width(), d.height()))
        } else {
            (0, 0)
        };
        streams.push(StreamInfo {
            kind,
            codec: p.id().name().to_owned(),
            width,
            height,
        });
    }
    Ok(Probe {
        container: ictx.format().name().to_owned(),
        duration_secs: duration_secs(&ictx),
        streams,
    })
}

/// The output size: at most `max_height`, aspect kept, both sides even.
fn target_size(w: u32, h: u32, max_height: Option<u32>) -> (u32, u32) {
    let (mut tw, mut th) = (w, h);
    if let Some(mh) = max_height.filter(|mh| *mh > 0 && *mh < h) {
        th = mh;
        tw = ((f64::from(w) * f64::from(mh) / f64::from(h)).round() as u32).max(2);
    }
    (tw & !1, th & !1)
}

/// Transcodes `input` to an H.264 MP4 at `output`. `stop`, once set, ends the work with
/// [`MediaError::Timeout`] (the caller's time limit).
pub fn transcode(
    input: &Path,
    output: &Path,
    opts: &TranscodeOptions,
    limits: &VideoLimits,
    stop: &AtomicBool,
    time_limit_secs: u64,
) -> Result<TranscodeReport, MediaError> {
    if opts.crf > 51 {
        return Err(MediaError::InvalidRequest(format!("crf {}: use 0..=51", opts.crf)));
    }
    if !PRESETS.contains(&opts.preset.as_str()) {
        return Err(MediaError::InvalidRequest(format!(
            "preset {:?}: use one of {PRESETS:?}",
            opts.preset
        )));
    }
    let mut ictx = open(input, limits)?;
    let duration = duration_secs(&ictx);
    let ist = ictx
        .streams()
        .best(ff::media::Type::Video)
        .ok_or_else(|| MediaError::Unsupported("no video stream".into()))?;
    let (v_index, v_tb, v_rate) = (ist.index(), ist.time_base(), ist.avg_frame_rate());
    let mut dec_ctx =
        ff::codec::context::Context::from_parameters(ist.parameters()).map_err(|e| corrupt("video stream", e))?;
    // Both sides use every core, as the ffmpeg CLI does (FFmpeg's API default is one thread).
    dec_ctx.set_threading(threads());
    let input_codec = ist.parameters().id().name().to_owned();
    let mut decoder = dec_ctx
        .decoder()
        .video()
        .map_err(|_| MediaError::Unsupported(format!("no decoder for {input_codec}")))?;
    let (w, h) = (decoder.width(), decoder.height());
    if w == 0 || h == 0 {
        return Err(MediaError::Corrupt("the video stream has no frame size".into()));
    }
    if u64::from(w) * u64::from(h) > limits.max_frame_pixels {
        return Err(MediaError::TooManyPixels {
            width: w,
            height: h,
            max: limits.max_frame_pixels,
            max_side: 0,
        });
    }
    let audio = ictx
        .streams()
        .best(ff::media::Type::Audio)
        .map(|s| (s.index(), s.time_base(), s.parameters()));

    let mut octx = ff::format::output_as(&output, "mp4").map_err(|e| internal("creating the output", e))?;
    let global_header = octx.format().flags().contains(ff::format::Flags::GLOBAL_HEADER);
    let codec =
        ff::encoder::find_by_name("libx264").ok_or_else(|| MediaError::Internal("libx264 is not available".into()))?;
    let (tw, th) = target_size(w, h, opts.max_height);
    let fps_in = if v_rate.numerator() > 0 && v_rate.denominator() > 0 {
        f64::from(v_rate.numerator()) / f64::from(v_rate.denominator())
    } else {
        25.0
    };
    let fps_out = opts.max_fps.map_or(fps_in, |m| fps_in.min(f64::from(m.max(1))));
    let mut ost = octx
        .add_stream(codec)
        .map_err(|e| internal("adding the video stream", e))?;
    let v_out = ost.index();
    let mut enc_ctx = ff::codec::context::Context::new_with_codec(codec);
    enc_ctx.set_threading(threads());
    let mut enc = enc_ctx.encoder().video().map_err(|e| internal("the encoder", e))?;
    enc.set_width(tw);
    enc.set_height(th);
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(v_tb);
    enc.set_frame_rate(Some(ff::Rational::new((fps_out * 1000.0).round() as i32, 1000)));
    if global_header {
        enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    }
    let mut x264 = ff::Dictionary::new();
    x264.set("crf", &opts.crf.to_string());
    x264.set("preset", &opts.preset);
    let mut encoder = enc.open_with(x264).map_err(|e| internal("opening libx264", e))?;
    ost.set_parameters(&encoder);

    let mut audio_out = None;
    let audio_note = match &audio {
        None => "none".to_owned(),
        Some((_, _, par)) if par.id() == ff::codec::Id::AAC => {
            let mut a = octx
                .add_stream(ff::encoder::find(ff::codec::Id::None))
                .map_err(|e| internal("adding the audio stream", e))?;
            a.set_parameters(par.clone());
            audio_out = Some(a.index());
            "copied (aac)".to_owned()
        }
        Some((_, _, par)) => format!(
            "left out ({}): AAC encoding of other codecs is not built yet",
            par.id().name()
        ),
    };
    let mut mux = ff::Dictionary::new();
    mux.set("movflags", "+faststart");
    octx.write_header_with(mux)
        .map_err(|e| internal("writing the header", e))?;
    let v_out_tb = octx.stream(v_out).map(|s| s.time_base()).unwrap_or(v_tb);
    let a_out_tb = audio_out.and_then(|i| octx.stream(i)).map(|s| s.time_base());

    // Made from the first frame's own format: a decoder may only know it then.
    let mut scaler: Option<ff::software::scaling::Context> = None;
    let min_gap = if fps_out < fps_in {
        // Keep a frame only when at least one output interval has passed (in stream ticks).
        (f64::from(v_tb.denominator()) / f64::from(v_tb.numerator().max(1)) / fps_out) as i64
    } else {
        0
    };
    let mut state = Encoding {
        frames: 0,
        decoded: 0,
        last_kept: None,
        min_gap,
        v_out,
        v_tb,
        v_out_tb,
        max_frames: limits.max_frames,
        input: (w, h),
        output: (tw, th),
    };
    let mut decoded = ff::frame::Video::empty();
    let mut scaled = ff::frame::Video::empty();
    for (stream, mut packet) in ictx.packets() {
        if stop.load(Ordering::Relaxed) {
            return Err(MediaError::Timeout(time_limit_secs));
        }
        if stream.index() == v_index {
            // A packet the decoder refuses is skipped, like ffmpeg does; a stream that yields
            // no frame at all is reported below.
            if decoder.send_packet(&packet).is_ok() {
                state.drain(
                    &mut decoder,
                    &mut decoded,
                    &mut scaler,
                    &mut scaled,
                    &mut encoder,
                    &mut octx,
                )?;
            }
        } else if let (Some((a_index, a_tb, _)), Some(out), Some(out_tb)) = (&audio, audio_out, a_out_tb)
            && stream.index() == *a_index
        {
            packet.rescale_ts(*a_tb, out_tb);
            packet.set_position(-1);
            packet.set_stream(out);
            packet
                .write_interleaved(&mut octx)
                .map_err(|e| corrupt("copying audio", e))?;
        }
    }
    let _ = decoder.send_eof();
    state.drain(
        &mut decoder,
        &mut decoded,
        &mut scaler,
        &mut scaled,
        &mut encoder,
        &mut octx,
    )?;
    encoder.send_eof().map_err(|e| internal("flushing the encoder", e))?;
    state.write_packets(&mut encoder, &mut octx)?;
    if state.frames == 0 {
        return Err(MediaError::Corrupt("no decodable video frame".into()));
    }
    octx.write_trailer().map_err(|e| internal("writing the trailer", e))?;
    Ok(TranscodeReport {
        width: tw,
        height: th,
        frames: state.frames,
        duration_secs: duration,
        encoder: "libx264",
        encoder_reason: "cpu: this build encodes with libx264 only (the NVENC path is not built yet)".into(),
        input_codec,
        audio: audio_note,
    })
}

/// A poster frame: the first frame at or after `at` (a share of the duration, 0..1), scaled
/// to at most `max_width` wide, encoded as `format` (JPEG or WebP) without metadata.
pub fn poster(
    input: &Path,
    at: f64,
    max_width: u32,
    format: crate::images::ImageFormat,
    limits: &VideoLimits,
) -> Result<crate::images::Encoded, MediaError> {
    let mut ictx = open(input, limits)?;
    let duration = duration_secs(&ictx);
    let ist = ictx
        .streams()
        .best(ff::media::Type::Video)
        .ok_or_else(|| MediaError::Unsupported("no video stream".into()))?;
    let v_index = ist.index();
    let mut decoder = ff::codec::context::Context::from_parameters(ist.parameters())
        .map_err(|e| corrupt("video stream", e))?
        .decoder()
        .video()
        .map_err(|_| MediaError::Unsupported("no decoder for the video stream".into()))?;
    let (w, h) = (decoder.width(), decoder.height());
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > limits.max_frame_pixels {
        return Err(MediaError::TooManyPixels {
            width: w,
            height: h,
            max: limits.max_frame_pixels,
            max_side: 0,
        });
    }
    if duration > 0.0 && at > 0.0 {
        let ts = (duration * at.clamp(0.0, 0.95) * f64::from(ff::ffi::AV_TIME_BASE)) as i64;
        // Seeking lands on the keyframe before `ts`; a failed seek starts from the beginning.
        let _ = ictx.seek(ts, ..ts);
    }
    let tw = w.min(max_width.max(2)) & !1;
    let th = ((f64::from(h) * f64::from(tw) / f64::from(w)).round() as u32).max(2) & !1;
    let mut frame = ff::frame::Video::empty();
    let mut rgb = ff::frame::Video::empty();
    let mut got = false;
    for (stream, packet) in ictx.packets() {
        if stream.index() != v_index || decoder.send_packet(&packet).is_err() {
            continue;
        }
        if decoder.receive_frame(&mut frame).is_ok() {
            got = true;
            break;
        }
    }
    if !got {
        let _ = decoder.send_eof();
        got = decoder.receive_frame(&mut frame).is_ok();
    }
    if !got {
        return Err(MediaError::Corrupt("no decodable video frame".into()));
    }
    if (frame.width(), frame.height()) != (w, h) {
        return Err(MediaError::Corrupt("the frame size differs from the stream's".into()));
    }
    check_format(frame.format())?;
    let mut scaler = ff::software::scaling::Context::get(
        frame.format(),
        w,
        h,
        ff::format::Pixel::RGB24,
        tw,
        th,
        ff::software::scaling::Flags::BICUBIC,
    )
    .map_err(|e| corrupt("a frame the scaler cannot take", e))?;
    scaler
        .run(&frame, &mut rgb)
        .map_err(|e| corrupt("scaling the frame", e))?;
    // Rows are `stride` bytes apart; copy `width * 3` of each.
    let (stride, row) = (rgb.stride(0), tw as usize * 3);
    let data = rgb.data(0);
    let mut pixels = Vec::with_capacity(row * th as usize);
    for y in 0..th as usize {
        let start = y * stride;
        let line = data
            .get(start..start + row)
            .ok_or_else(|| MediaError::Internal("short frame buffer".into()))?;
        pixels.extend_from_slice(line);
    }
    let img = image::RgbImage::from_raw(tw, th, pixels)
        .map(image::DynamicImage::ImageRgb8)
        .ok_or_else(|| MediaError::Internal("frame buffer size".into()))?;
    crate::images::encode(&img, format, Some(85))
}

/// The encode loop's state.
struct Encoding {
    frames: u64,
    decoded: u64,
    last_kept: Option<i64>,
    min_gap: i64,
    v_out: usize,
    v_tb: ff::Rational,
    v_out_tb: ff::Rational,
    max_frames: u64,
    input: (u32, u32),
    output: (u32, u32),
}

/// Refuses a frame whose pixel format is unknown or one swscale cannot read (a corrupt stream
/// can claim any value, and swscale aborts the process on some).
fn check_format(fmt: ff::format::Pixel) -> Result<(), MediaError> {
    if fmt == ff::format::Pixel::None || fmt.descriptor().is_none() || !ff::software::scaling::support::input(fmt) {
        return Err(MediaError::Corrupt(format!(
            "a frame in an unusable pixel format ({fmt:?})"
        )));
    }
    Ok(())
}

impl Encoding {
    fn drain(
        &mut self,
        decoder: &mut ff::decoder::Video,
        decoded: &mut ff::frame::Video,
        scaler: &mut Option<ff::software::scaling::Context>,
        scaled: &mut ff::frame::Video,
        encoder: &mut ff::encoder::Video,
        octx: &mut ff::format::context::Output,
    ) -> Result<(), MediaError> {
        while decoder.receive_frame(decoded).is_ok() {
            self.decoded += 1;
            if self.decoded > self.max_frames {
                return Err(MediaError::InvalidRequest(format!(
                    "more than {} frames",
                    self.max_frames
                )));
            }
            if (decoded.width(), decoded.height()) != self.input {
                return Err(MediaError::Unsupported("the frame size changes mid-stream".into()));
            }
            let fmt = decoded.format();
            check_format(fmt)?;
            if scaler.as_ref().is_none_or(|s| s.input().format != fmt) {
                let (w, h) = self.input;
                let (tw, th) = self.output;
                *scaler = Some(
                    ff::software::scaling::Context::get(
                        fmt,
                        w,
                        h,
                        ff::format::Pixel::YUV420P,
                        tw,
                        th,
                        ff::software::scaling::Flags::BICUBIC,
                    )
                    .map_err(|e| corrupt("a frame the scaler cannot take", e))?,
                );
            }
            let Some(scaler) = scaler.as_mut() else {
                return Err(MediaError::Internal("no scaler".into()));
            };
            let pts = decoded.timestamp();
            if let (Some(p), Some(last)) = (pts, self.last_kept)
                && self.min_gap > 0
                && p - last < self.min_gap
            {
                continue;
            }
            self.last_kept = pts.or(self.last_kept);
            scaler.run(decoded, scaled).map_err(|e| corrupt("scaling a frame", e))?;
            scaled.set_pts(pts);
            scaled.set_kind(ff::picture::Type::None);
            encoder
                .send_frame(scaled)
                .map_err(|e| internal("encoding a frame", e))?;
            self.frames += 1;
            self.write_packets(encoder, octx)?;
        }
        Ok(())
    }

    fn write_packets(
        &self,
        encoder: &mut ff::encoder::Video,
        octx: &mut ff::format::context::Output,
    ) -> Result<(), MediaError> {
        let mut packet = ff::Packet::empty();
        while encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(self.v_out);
            packet.rescale_ts(self.v_tb, self.v_out_tb);
            packet
                .write_interleaved(octx)
                .map_err(|e| internal("writing video", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::target_size;

    #[test]
    fn sizes_keep_aspect_and_stay_even() {
        assert_eq!(target_size(1920, 1080, Some(720)), (1280, 720));
        assert_eq!(target_size(641, 361, None), (640, 360));
        assert_eq!(target_size(640, 360, Some(1080)), (640, 360), "never upscaled");
        assert_eq!(target_size(1080, 1920, Some(853)), (480, 852));
    }
}
