//! A video input opened under limits, with its best video stream's decoder: software, or NVDEC
//! (`*_cuvid`) when the caller names a GPU and the session opens. Every consumer (transcode,
//! poster, animated preview, frame hashing) reads frames through [`Source::run`], which checks
//! each frame (size, pixel format, count) and the stop flag, and hands other streams' packets on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use ffmpeg_next as ff;

use super::{VideoLimits, check_format, corrupt, duration_secs, open, threads};
use crate::error::MediaError;

/// What a frame callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// More frames.
    More,
    /// Enough: stop reading.
    Done,
}

/// Which decoder runs, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodePath {
    /// `h264` (FFmpeg's software decoder) or `h264_cuvid` (NVDEC).
    pub decoder: String,
    /// Why that one.
    pub reason: String,
}

/// An opened input and its video decoder.
pub(crate) struct Source {
    pub ictx: ff::format::context::Input,
    pub v_index: usize,
    pub v_tb: ff::Rational,
    pub v_rate: ff::Rational,
    pub decoder: ff::decoder::Video,
    pub size: (u32, u32),
    pub duration: f64,
    pub input_codec: String,
    pub path: DecodePath,
    decoded: u64,
}

/// NVDEC's decoder for an FFmpeg codec name, where FFmpeg has one.
fn cuvid_name(codec: &str) -> Option<&'static str> {
    Some(match codec {
        "h264" => "h264_cuvid",
        "hevc" => "hevc_cuvid",
        "av1" => "av1_cuvid",
        "vp9" => "vp9_cuvid",
        "vp8" => "vp8_cuvid",
        "mpeg4" => "mpeg4_cuvid",
        "mpeg2video" => "mpeg2_cuvid",
        "mpeg1video" => "mpeg1_cuvid",
        "vc1" => "vc1_cuvid",
        "mjpeg" => "mjpeg_cuvid",
        _ => return None,
    })
}

impl Source {
    /// Opens `path` under `limits`. `cuvid_gpu`: try NVDEC on that GPU first; any trouble
    /// opening it falls back to software decoding, with the reason in [`Source::path`].
    /// `threaded`: frame threading on every core (for whole-file work; one thread otherwise).
    pub fn open(path: &Path, limits: &VideoLimits, cuvid_gpu: Option<u32>, threaded: bool) -> Result<Self, MediaError> {
        let ictx = open(path, limits)?;
        let duration = duration_secs(&ictx);
        let ist = ictx
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| MediaError::Unsupported("no video stream".into()))?;
        let (v_index, v_tb, v_rate) = (ist.index(), ist.time_base(), ist.avg_frame_rate());
        let par = ist.parameters();
        let input_codec = par.id().name().to_owned();
        let new_ctx = || -> Result<ff::codec::context::Context, MediaError> {
            let mut c =
                ff::codec::context::Context::from_parameters(par.clone()).map_err(|e| corrupt("video stream", e))?;
            if threaded {
                c.set_threading(threads());
            }
            Ok(c)
        };
        let mut hw: Option<(ff::decoder::Video, DecodePath)> = None;
        let mut sw_reason = "cpu: no GPU named for decoding".to_owned();
        if let Some(gpu) = cuvid_gpu {
            match cuvid_name(&input_codec).and_then(|n| ff::decoder::find_by_name(n).map(|c| (n, c))) {
                None => sw_reason = format!("cpu: FFmpeg has no NVDEC decoder for {input_codec}"),
                Some((name, codec)) => {
                    let mut opts = ff::Dictionary::new();
                    opts.set("gpu", &gpu.to_string());
                    match new_ctx()?.decoder().open_as_with(codec, opts).and_then(|d| d.video()) {
                        Ok(d) => {
                            hw = Some((
                                d,
                                DecodePath {
                                    decoder: name.to_owned(),
                                    reason: format!("gpu {gpu}: NVDEC session opened"),
                                },
                            ));
                        }
                        Err(e) => sw_reason = format!("cpu: {name} did not open on GPU {gpu}: {e}"),
                    }
                }
            }
        }
        let (decoder, path) = match hw {
            Some(h) => h,
            None => {
                let d = new_ctx()?
                    .decoder()
                    .video()
                    .map_err(|_| MediaError::Unsupported(format!("no decoder for {input_codec}")))?;
                (
                    d,
                    DecodePath {
                        decoder: input_codec.clone(),
                        reason: sw_reason,
                    },
                )
            }
        };
        let size = (decoder.width(), decoder.height());
        if size.0 == 0 || size.1 == 0 {
            return Err(MediaError::Corrupt("the video stream has no frame size".into()));
        }
        if u64::from(size.0) * u64::from(size.1) > limits.max_frame_pixels {
            return Err(MediaError::TooManyPixels {
                width: size.0,
                height: size.1,
                max: limits.max_frame_pixels,
                max_side: 0,
            });
        }
        Ok(Self {
            ictx,
            v_index,
            v_tb,
            v_rate,
            decoder,
            size,
            duration,
            input_codec,
            path,
            decoded: 0,
        })
    }

    /// The stream's frame rate (25 when it does not say).
    pub fn fps(&self) -> f64 {
        let r = self.v_rate;
        if r.numerator() > 0 && r.denominator() > 0 {
            f64::from(r.numerator()) / f64::from(r.denominator())
        } else {
            25.0
        }
    }

    /// Seeks to `at` (a share of the duration) — to the keyframe before it; a failed seek
    /// starts from the beginning.
    pub fn seek_share(&mut self, at: f64) {
        if self.duration > 0.0 && at > 0.0 {
            let ts = (self.duration * at.clamp(0.0, 0.95) * f64::from(ff::ffi::AV_TIME_BASE)) as i64;
            let _ = self.ictx.seek(ts, ..ts);
        }
    }

    /// Decodes to the end (or until `on_frame` says [`Flow::Done`]): each checked video frame
    /// goes to `on_frame`, every other stream's packet to `on_other`. A packet the decoder
    /// refuses is skipped, as ffmpeg does. Returns the frames decoded.
    pub fn run(
        &mut self,
        limits: &VideoLimits,
        stop: &AtomicBool,
        time_limit_secs: u64,
        mut on_frame: impl FnMut(&mut ff::frame::Video) -> Result<Flow, MediaError>,
        mut on_other: impl FnMut(&ff::Stream<'_>, ff::Packet) -> Result<(), MediaError>,
    ) -> Result<u64, MediaError> {
        let mut frame = ff::frame::Video::empty();
        let mut done = false;
        let Self {
            ictx,
            decoder,
            v_index,
            size,
            decoded,
            ..
        } = self;
        let mut check = |frame: &mut ff::frame::Video, decoded: &mut u64| -> Result<Flow, MediaError> {
            *decoded += 1;
            if *decoded > limits.max_frames {
                return Err(MediaError::InvalidRequest(format!(
                    "more than {} frames",
                    limits.max_frames
                )));
            }
            if (frame.width(), frame.height()) != *size {
                return Err(MediaError::Unsupported("the frame size changes mid-stream".into()));
            }
            check_format(frame.format())?;
            on_frame(frame)
        };
        for (stream, packet) in ictx.packets() {
            if stop.load(Ordering::Relaxed) {
                return Err(MediaError::Timeout(time_limit_secs));
            }
            if stream.index() != *v_index {
                on_other(&stream, packet)?;
                continue;
            }
            if decoder.send_packet(&packet).is_err() {
                continue;
            }
            while decoder.receive_frame(&mut frame).is_ok() {
                if check(&mut frame, decoded)? == Flow::Done {
                    done = true;
                    break;
                }
            }
            if done {
                return Ok(*decoded);
            }
        }
        let _ = decoder.send_eof();
        while decoder.receive_frame(&mut frame).is_ok() {
            if check(&mut frame, decoded)? == Flow::Done {
                break;
            }
        }
        Ok(*decoded)
    }
}

/// Packs a scaled RGB24 frame (rows `stride` bytes apart) into a tight `width * 3` buffer.
pub(crate) fn packed_rgb(rgb: &ff::frame::Video) -> Result<Vec<u8>, MediaError> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let (stride, row) = (rgb.stride(0), w * 3);
    let data = rgb.data(0);
    let mut pixels = Vec::with_capacity(row * h);
    for y in 0..h {
        let start = y * stride;
        let line = data
            .get(start..start + row)
            .ok_or_else(|| MediaError::Internal("short frame buffer".into()))?;
        pixels.extend_from_slice(line);
    }
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::cuvid_name;

    #[test]
    fn nvdec_names_follow_ffmpeg() {
        assert_eq!(cuvid_name("h264"), Some("h264_cuvid"));
        assert_eq!(cuvid_name("mpeg2video"), Some("mpeg2_cuvid"));
        assert_eq!(cuvid_name("prores"), None);
    }
}
