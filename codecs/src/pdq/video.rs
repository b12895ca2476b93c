//! vPDQ: a video as a bag of frame hashes, as the reference (`vpdq/cpp`) makes and matches them.
//!
//! Frames are decoded through the same [`Source`](crate::video) as transcoding (limits, stop
//! flag, every decoder FFmpeg has), converted to RGB24 by swscale (area averaging when a
//! downsample size is given, as the reference does), and each kept frame is PDQ-hashed at that
//! size. Every frame is kept, or one every `seconds_per_hash`. Lines print as the reference's
//! `frameNumber,quality,hash,timestampSeconds`.
//!
//! Matching ([`compare`]) follows the reference's bag-of-frames rule: drop frames below a
//! quality, de-duplicate, then the share of one video's frames within a distance of any frame of
//! the other, both ways.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use ffmpeg_next as ff;

use super::{Hash256, hash_luma, luma_from_rgb};
use crate::error::MediaError;
use crate::video::{Flow, Source, VideoLimits};

/// One hashed frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameHash {
    /// The frame's number in decode order (from 0).
    pub frame: u64,
    /// PDQ quality.
    pub quality: u8,
    /// The hash.
    pub hash: Hash256,
    /// Seconds from the stream's first frame.
    pub timestamp: f64,
}

impl std::fmt::Display for FrameHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{},{:.3}", self.frame, self.quality, self.hash, self.timestamp)
    }
}

impl std::str::FromStr for FrameHash {
    type Err = MediaError;
    fn from_str(s: &str) -> Result<Self, MediaError> {
        let bad = || {
            MediaError::InvalidRequest(format!(
                "not a vPDQ line: {:?}",
                s.chars().take(100).collect::<String>()
            ))
        };
        let mut it = s.trim().split(',');
        let frame = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let quality = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let hash = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let timestamp = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        Ok(Self {
            frame,
            quality,
            hash,
            timestamp,
        })
    }
}

/// Which frames, at what size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VpdqOptions {
    /// Keep one frame every this many seconds (0: every frame).
    pub seconds_per_hash: f64,
    /// Downsample frames to this size first (the reference's `-d WxH`).
    pub downsample: Option<(u32, u32)>,
}

/// Hashes the frames of `input`.
pub fn hash_video(
    input: &Path,
    opts: &VpdqOptions,
    limits: &VideoLimits,
    stop: &AtomicBool,
    time_limit_secs: u64,
) -> Result<Vec<FrameHash>, MediaError> {
    hash_video_watched(input, opts, limits, stop, time_limit_secs, &AtomicU32::new(0))
}

/// [`hash_video`], keeping `done` at how far along it is, in thousandths of the input's
/// duration (1000 once finished), for a progress report read from another thread.
pub fn hash_video_watched(
    input: &Path,
    opts: &VpdqOptions,
    limits: &VideoLimits,
    stop: &AtomicBool,
    time_limit_secs: u64,
    done: &AtomicU32,
) -> Result<Vec<FrameHash>, MediaError> {
    if !(opts.seconds_per_hash >= 0.0 && opts.seconds_per_hash.is_finite()) {
        return Err(MediaError::InvalidRequest("seconds per hash must be 0 or more".into()));
    }
    let mut src = Source::open(input, limits, None, true)?;
    let (w, h) = src.size;
    let (tw, th, flags) = match opts.downsample {
        Some((dw, dh)) if dw > 0 && dh > 0 => (dw, dh, ff::software::scaling::Flags::AREA),
        Some(_) => return Err(MediaError::InvalidRequest("a downsample size needs both sides".into())),
        None => (w, h, ff::software::scaling::Flags::AREA),
    };
    let tb = src.v_tb;
    let secs_per_tick = f64::from(tb.numerator()) / f64::from(tb.denominator().max(1));
    let fps = src.fps();
    let duration = src.duration;
    let mut scaler = None;
    let mut rgb = ff::frame::Video::empty();
    let (mut out, mut index, mut first, mut next_keep) = (Vec::new(), 0u64, None::<i64>, 0.0f64);
    src.run(
        limits,
        stop,
        time_limit_secs,
        |frame| {
            let n = index;
            index += 1;
            let t = match (frame.timestamp(), first) {
                (Some(ts), Some(f)) => (ts - f) as f64 * secs_per_tick,
                (Some(ts), None) => {
                    first = Some(ts);
                    0.0
                }
                (None, _) => n as f64 / fps,
            };
            if duration > 0.0 {
                done.store((t / duration * 1000.0).clamp(0.0, 999.0) as u32, Ordering::Relaxed);
            }
            if opts.seconds_per_hash > 0.0 {
                if t + 1e-9 < next_keep {
                    return Ok(Flow::More);
                }
                next_keep = ((t / opts.seconds_per_hash).floor() + 1.0) * opts.seconds_per_hash;
            }
            let s = crate::video::scaler_for(&mut scaler, frame, ff::format::Pixel::RGB24, (tw, th), flags)?;
            s.run(frame, &mut rgb)
                .map_err(|e| MediaError::Corrupt(format!("converting a frame: {e}")))?;
            let luma = luma_from_rgb(&crate::video::packed_rgb(&rgb)?);
            let p = hash_luma(&luma, tw as usize, th as usize);
            out.push(FrameHash {
                frame: n,
                quality: p.quality,
                hash: p.hash,
                timestamp: t,
            });
            Ok(Flow::More)
        },
        |_, _| Ok(()),
    )?;
    if out.is_empty() {
        return Err(MediaError::Corrupt("no decodable video frame".into()));
    }
    done.store(1000, Ordering::Relaxed);
    Ok(out)
}

/// How two videos compare.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// Share (0..=100) of the query's usable unique frames within the distance of a target frame.
    pub query_pct: f64,
    /// Share (0..=100) of the target's usable unique frames within the distance of a query frame.
    pub target_pct: f64,
}

/// The reference's matching parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatchRule {
    /// Frames below this quality are dropped (50).
    pub min_quality: u8,
    /// A frame matches at this distance or less (31).
    pub max_distance: u32,
    /// The query share needed (0 %).
    pub query_pct: f64,
    /// The target share needed (80 %).
    pub target_pct: f64,
}

impl Default for MatchRule {
    fn default() -> Self {
        Self {
            min_quality: 50,
            max_distance: 31,
            query_pct: 0.0,
            target_pct: 80.0,
        }
    }
}

impl MatchRule {
    /// Whether `c` is a match.
    pub fn matches(&self, c: &Comparison) -> bool {
        c.query_pct >= self.query_pct && c.target_pct >= self.target_pct
    }
}

fn usable(frames: &[FrameHash], min_quality: u8) -> Vec<Hash256> {
    let set: BTreeSet<Hash256> = frames
        .iter()
        .filter(|f| f.quality >= min_quality)
        .map(|f| f.hash)
        .collect();
    set.into_iter().collect()
}

/// Compares two videos' frame hashes by the bag-of-frames rule (brute force: videos have
/// thousands of frames, not millions).
pub fn compare(query: &[FrameHash], target: &[FrameHash], rule: &MatchRule) -> Comparison {
    let (q, t) = (usable(query, rule.min_quality), usable(target, rule.min_quality));
    let share = |a: &[Hash256], b: &[Hash256]| {
        if a.is_empty() {
            return 0.0;
        }
        let hit = a
            .iter()
            .filter(|x| b.iter().any(|y| x.distance(y) <= rule.max_distance))
            .count();
        hit as f64 * 100.0 / a.len() as f64
    };
    Comparison {
        query_pct: share(&q, &t),
        target_pct: share(&t, &q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let l = "2,100,dadb998c25266273d29cad8c89cb52d227248dbbce99726c38660d93c799f07c,0.067";
        let f: FrameHash = l.parse().unwrap_or_else(|_| panic!("parse"));
        assert_eq!(f.to_string(), l);
        assert!("2,100,zz,0.1".parse::<FrameHash>().is_err());
    }

    #[test]
    fn low_quality_frames_do_not_count() {
        let h = |n: u64| Hash256 { lanes: [n, 0, 0, 0] };
        let f = |hash, quality| FrameHash {
            frame: 0,
            quality,
            hash,
            timestamp: 0.0,
        };
        let a = [f(h(1), 100), f(h(1), 100), f(h(u64::MAX), 10)];
        let b = [f(h(3), 90)];
        let c = compare(&a, &b, &MatchRule::default());
        assert_eq!((c.query_pct, c.target_pct), (100.0, 100.0));
        assert!(MatchRule::default().matches(&c));
    }
}
