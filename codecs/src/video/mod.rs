//! Video: probe, transcode and previews with ffmpeg-next over the system's FFmpeg (Debian 12:
//! 5.1).
//!
//! [`transcode`] decodes the best video stream (any decoder FFmpeg has: H.264, HEVC, VP9, AV1,
//! MPEG-4…; NVDEC when the worker names a GPU), scales it to at most `max_height` (even sides,
//! aspect kept) and at most `max_fps`, and encodes web-ready video: H.264 (yuv420p, CRF and
//! preset; NVENC only where the worker's probe proved a session opens, else libx264) in an MP4
//! with `+faststart` (the index first, so playback starts before the download ends), or VP9 in
//! a WebM. Audio is copied when it already suits the container (AAC, Opus) and encoded to it
//! otherwise. [`preview`] makes a poster frame and a short animated WebP. Limits are checked
//! before decoding (bytes, duration, frame size) and while decoding (frames, a stop flag the
//! caller sets on timeout). Input errors are [`MediaError`]s naming the reason.

mod audio;
mod encoder;
pub mod preview;
pub use preview::{Animated, AnimatedOptions, animated_webp, poster};
mod source;

use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use ffmpeg_next as ff;

use crate::error::MediaError;
use audio::Audio;
pub use encoder::{EncoderWhy, HwPlan};
pub use source::DecodePath;
pub(crate) use source::{Flow, Source, packed_rgb};

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

/// The output container (and so its codecs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Container {
    /// H.264 + AAC in MP4 (`+faststart`).
    #[default]
    Mp4,
    /// VP9 + Opus in WebM.
    WebM,
}

impl Container {
    fn muxer(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::WebM => "webm",
        }
    }

    fn audio_codec(self) -> ff::codec::Id {
        match self {
            Container::Mp4 => ff::codec::Id::AAC,
            Container::WebM => ff::codec::Id::OPUS,
        }
    }

    fn audio_encoder(self) -> &'static str {
        match self {
            Container::Mp4 => "aac",
            Container::WebM => "libopus",
        }
    }
}

/// How to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscodeOptions {
    /// Constant quality on x264's scale (0..=51; 23 by default); NVENC's `cq` takes the same
    /// number, VP9's CRF the same point of its 0..=63 scale.
    pub crf: u8,
    /// x264 preset (`ultrafast` … `veryslow`; `medium` by default), mapped onto NVENC's p1..p7
    /// and libvpx's speed.
    pub preset: String,
    /// Largest output height.
    pub max_height: Option<u32>,
    /// Largest output frame rate.
    pub max_fps: Option<u32>,
    /// MP4 (H.264) or WebM (VP9).
    pub container: Container,
    /// Which GPUs may decode and encode.
    pub hw: HwPlan,
}

impl Default for TranscodeOptions {
    fn default() -> Self {
        Self {
            crf: 23,
            preset: "medium".into(),
            max_height: None,
            max_fps: None,
            container: Container::Mp4,
            hw: HwPlan::cpu("no GPU named"),
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
    /// The encoder used (`libx264`, `h264_nvenc`, `libvpx-vp9`).
    pub encoder: &'static str,
    /// Why that encoder, as a bounded class (a metric label).
    pub encoder_why: EncoderWhy,
    /// Why that encoder, in words (`cpu: CPU-only mode: no NVIDIA driver` …).
    pub encoder_reason: String,
    /// The decoder used (`h264`, `h264_cuvid` …).
    pub decoder: String,
    /// Why that decoder.
    pub decoder_reason: String,
    /// The input video codec.
    pub input_codec: String,
    /// `copied (aac)`, `encoded mp3 -> aac`, `none`, or `left out (…): why`.
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

pub(crate) fn init() {
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
    if let Some(kind) = playlist_kind(path) {
        return Err(MediaError::ForbiddenContainer(kind.into()));
    }
    let ictx = ff::format::input_with_dictionary(&path, input_options()).map_err(|e| match e {
        ff::Error::InvalidData => MediaError::Unsupported("not a video container Gantry reads".into()),
        // What FFmpeg answers when the probed demuxer is not on `format_whitelist`.
        ff::Error::Other {
            errno: ff::util::error::EINVAL,
        } => MediaError::ForbiddenContainer("a playlist, list or other format outside the allow-list".into()),
        other => corrupt("opening the input", other),
    })?;
    check_container(ictx.format().name())?;
    let secs = duration_secs(&ictx);
    if secs > limits.max_duration_secs {
        return Err(MediaError::InvalidRequest(format!(
            "the input lasts {secs:.0} s; at most {:.0} s are accepted",
            limits.max_duration_secs
        )));
    }
    Ok(ictx)
}

/// The demuxers a tenant's video may be read with: containers that hold their media inside the
/// file. FFmpeg names a demuxer by a comma-separated list (`mov,mp4,m4a,3gp,3g2,mj2`); one that
/// has any name outside this list is refused.
pub const DEMUXERS: &[&str] = &["mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi"];

/// How every input is opened: probing considers only [`DEMUXERS`], and the only protocol is
/// `file` (for the one file the worker downloaded). So an "mp4" that is really an HLS or DASH
/// playlist, a concat list or an image-sequence pattern is never parsed as one, and nothing it
/// names (`file:///etc/passwd`, another tenant's output, a URL) is opened. MP4's external data
/// references stay off.
fn input_options() -> ff::Dictionary<'static> {
    let mut d = ff::Dictionary::new();
    d.set("format_whitelist", &DEMUXERS.join(","));
    d.set("protocol_whitelist", "file");
    d.set("enable_drefs", "0");
    d
}

/// Names a text playlist or file list by its first bytes, for a clear error (the allow-list
/// refuses these anyway, as an unknown format).
fn playlist_kind(path: &Path) -> Option<&'static str> {
    use std::io::Read as _;
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    [
        ("#EXTM3U", "an HLS playlist"),
        ("ffconcat", "an FFmpeg concat list"),
        ("<?xml", "an XML manifest (DASH, SMIL)"),
        ("<MPD", "a DASH manifest"),
        ("v=0", "an SDP session description"),
    ]
    .into_iter()
    .find(|(magic, _)| text.starts_with(magic))
    .map(|(_, kind)| kind)
}

/// Refuses a demuxer outside [`DEMUXERS`] (belt and braces: the whitelist already did).
fn check_container(name: &str) -> Result<(), MediaError> {
    if name.split(',').all(|n| DEMUXERS.contains(&n)) {
        Ok(())
    } else {
        Err(MediaError::ForbiddenContainer(format!("the {name} demuxer")))
    }
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

/// Transcodes `input` to `opts.container` at `output`: H.264 MP4 (NVENC when `opts.hw`
/// allows, else libx264) or VP9 WebM. `stop`, once set, ends the work with
/// [`MediaError::Timeout`] (the caller's time limit).
pub fn transcode(
    input: &Path,
    output: &Path,
    opts: &TranscodeOptions,
    limits: &VideoLimits,
    stop: &AtomicBool,
    time_limit_secs: u64,
) -> Result<TranscodeReport, MediaError> {
    transcode_watched(input, output, opts, limits, stop, time_limit_secs, &AtomicU32::new(0))
}

/// [`transcode`], keeping `done` at how far along it is, in thousandths of the input's
/// duration (by the timestamp of the last frame read; 1000 once finished), for a progress
/// report read from another thread.
pub fn transcode_watched(
    input: &Path,
    output: &Path,
    opts: &TranscodeOptions,
    limits: &VideoLimits,
    stop: &AtomicBool,
    time_limit_secs: u64,
    done: &AtomicU32,
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
    // Both sides use every core, as the ffmpeg CLI does (FFmpeg's API default is one thread).
    let mut src = Source::open(input, limits, opts.hw.cuvid_gpu, true)?;
    let (w, h) = src.size;
    let (tw, th) = target_size(w, h, opts.max_height);
    let fps_in = src.fps();
    let fps_out = opts.max_fps.map_or(fps_in, |m| fps_in.min(f64::from(m.max(1))));
    let v_tb = src.v_tb;

    let mut octx =
        ff::format::output_as(&output, opts.container.muxer()).map_err(|e| internal("creating the output", e))?;
    let setup = encoder::Setup {
        size: (tw, th),
        time_base: v_tb,
        fps: fps_out,
        global_header: octx.format().flags().contains(ff::format::Flags::GLOBAL_HEADER),
    };
    let chosen = encoder::choose(opts.container, opts, &setup)?;
    let mut ost = octx
        .add_stream(chosen.codec)
        .map_err(|e| internal("adding the video stream", e))?;
    let v_out = ost.index();
    ost.set_parameters(&chosen.encoder);
    let mut video_encoder = chosen.encoder;
    let (mut audio, audio_note) = Audio::plan(&src.ictx, &mut octx, opts.container)?;
    let mut mux = ff::Dictionary::new();
    if opts.container == Container::Mp4 {
        mux.set("movflags", "+faststart");
    }
    octx.write_header_with(mux)
        .map_err(|e| internal("writing the header", e))?;
    let v_out_tb = octx.stream(v_out).map(|s| s.time_base()).unwrap_or(v_tb);

    let min_gap = if fps_out < fps_in {
        // Keep a frame only when at least one output interval has passed (in stream ticks).
        (f64::from(v_tb.denominator()) / f64::from(v_tb.numerator().max(1)) / fps_out) as i64
    } else {
        0
    };
    let mut state = Encoding {
        frames: 0,
        last_kept: None,
        min_gap,
        v_out,
        v_tb,
        v_out_tb,
        output: (tw, th),
        scaler: None,
        scaled: ff::frame::Video::empty(),
    };
    // The source lends its packets to the audio side while frames go to the encoder; the
    // output context is shared between the two callbacks.
    let octx_cell = std::cell::RefCell::new(&mut octx);
    let (duration, tick) = (
        src.duration,
        f64::from(v_tb.numerator()) / f64::from(v_tb.denominator().max(1)),
    );
    src.run(
        limits,
        stop,
        time_limit_secs,
        |frame| {
            if let Some(pts) = frame.timestamp().filter(|_| duration > 0.0) {
                let share = (pts as f64 * tick / duration * 1000.0).clamp(0.0, 999.0);
                done.store(share as u32, Ordering::Relaxed);
            }
            let mut o = octx_cell.borrow_mut();
            state.frame(frame, &mut video_encoder, &mut o)?;
            Ok(Flow::More)
        },
        |stream, packet| {
            let mut o = octx_cell.borrow_mut();
            audio.packet(stream, packet, &mut o)
        },
    )?;
    let octx = octx_cell.into_inner();
    video_encoder
        .send_eof()
        .map_err(|e| internal("flushing the encoder", e))?;
    state.write_packets(&mut video_encoder, octx)?;
    if state.frames == 0 {
        return Err(MediaError::Corrupt("no decodable video frame".into()));
    }
    audio.finish(octx)?;
    octx.write_trailer().map_err(|e| internal("writing the trailer", e))?;
    done.store(1000, Ordering::Relaxed);
    Ok(TranscodeReport {
        width: tw,
        height: th,
        frames: state.frames,
        duration_secs: src.duration,
        encoder: chosen.name,
        encoder_why: chosen.why,
        encoder_reason: chosen.reason,
        decoder: src.path.decoder.clone(),
        decoder_reason: src.path.reason.clone(),
        input_codec: src.input_codec.clone(),
        audio: audio_note,
    })
}

/// The encode loop's state.
struct Encoding {
    frames: u64,
    last_kept: Option<i64>,
    min_gap: i64,
    v_out: usize,
    v_tb: ff::Rational,
    v_out_tb: ff::Rational,
    output: (u32, u32),
    /// Made from the first frame's own format: a decoder may only know it then.
    scaler: Option<ff::software::scaling::Context>,
    scaled: ff::frame::Video,
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

/// A scaler from `frame`'s format and size to `to` at `(w, h)`, kept while the input format
/// stays the same.
pub(crate) fn scaler_for<'a>(
    slot: &'a mut Option<ff::software::scaling::Context>,
    frame: &ff::frame::Video,
    to: ff::format::Pixel,
    (w, h): (u32, u32),
    flags: ff::software::scaling::Flags,
) -> Result<&'a mut ff::software::scaling::Context, MediaError> {
    let fmt = frame.format();
    if slot.as_ref().is_none_or(|s| s.input().format != fmt) {
        *slot = Some(
            ff::software::scaling::Context::get(fmt, frame.width(), frame.height(), to, w, h, flags)
                .map_err(|e| corrupt("a frame the scaler cannot take", e))?,
        );
    }
    slot.as_mut().ok_or_else(|| MediaError::Internal("no scaler".into()))
}

impl Encoding {
    fn frame(
        &mut self,
        decoded: &mut ff::frame::Video,
        encoder: &mut ff::encoder::Video,
        octx: &mut ff::format::context::Output,
    ) -> Result<(), MediaError> {
        let pts = decoded.timestamp();
        if let (Some(p), Some(last)) = (pts, self.last_kept)
            && self.min_gap > 0
            && p - last < self.min_gap
        {
            return Ok(());
        }
        self.last_kept = pts.or(self.last_kept);
        let scaler = scaler_for(
            &mut self.scaler,
            decoded,
            ff::format::Pixel::YUV420P,
            self.output,
            ff::software::scaling::Flags::BICUBIC,
        )?;
        scaler
            .run(decoded, &mut self.scaled)
            .map_err(|e| corrupt("scaling a frame", e))?;
        self.scaled.set_pts(pts);
        self.scaled.set_kind(ff::picture::Type::None);
        encoder
            .send_frame(&self.scaled)
            .map_err(|e| internal("encoding a frame", e))?;
        self.frames += 1;
        self.write_packets(encoder, octx)
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
