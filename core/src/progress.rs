//! What a running job is doing, as its executor reports it: a stage and, where known, how far
//! along it is. Stored on the job's record at most once a second (see the queue's consumer),
//! shown by `GET /v1/jobs/{id}`, job search and `gantry jobs show`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// A stage of a job's attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Submitted to a model provider, waiting in its queue.
    QueuedAtProvider,
    /// The provider is generating.
    Generating,
    /// Fetching an input or the provider's output.
    Downloading,
    /// Decoding the input.
    Decoding,
    /// Upscaling.
    Upscaling,
    /// Encoding an output (a transcode's frames, an image's format).
    Encoding,
    /// Hashing frames or images (PDQ, vPDQ).
    Hashing,
    /// Checking outputs against the abuse hash lists before release.
    Scanning,
    /// Writing outputs to the store.
    Uploading,
    /// Work with no finer stage (the no-op executor's sleep).
    Working,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 10] = [
        Stage::QueuedAtProvider,
        Stage::Generating,
        Stage::Downloading,
        Stage::Decoding,
        Stage::Upscaling,
        Stage::Encoding,
        Stage::Hashing,
        Stage::Scanning,
        Stage::Uploading,
        Stage::Working,
    ];

    /// Its name, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::QueuedAtProvider => "queued_at_provider",
            Stage::Generating => "generating",
            Stage::Downloading => "downloading",
            Stage::Decoding => "decoding",
            Stage::Upscaling => "upscaling",
            Stage::Encoding => "encoding",
            Stage::Hashing => "hashing",
            Stage::Scanning => "scanning",
            Stage::Uploading => "uploading",
            Stage::Working => "working",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| ValidationError::InvalidField {
                field: "stage",
                reason: format!("unknown stage {:?}", s.chars().take(40).collect::<String>()),
            })
    }
}

/// A job's progress, as stored: the stage, how far along it is (0 to 100, where known), which
/// attempt reported it and when (Unix ms, Redis's clock).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The stage.
    pub stage: Stage,
    /// Percent done, 0 to 100, where the executor knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f32>,
    /// The attempt that reported it.
    pub attempt: u32,
    /// When it was stored.
    #[serde(default)]
    pub at_ms: u64,
}

/// `percent` clamped to 0..=100 and rounded to a tenth; not-a-number is unknown.
pub fn clamp_percent(percent: Option<f32>) -> Option<f32> {
    percent
        .filter(|p| p.is_finite())
        .map(|p| (p.clamp(0.0, 100.0) * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_round_trip_by_name_and_percent_is_clamped() {
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>().expect("parses"), s);
            assert_eq!(serde_json::to_string(&s).expect("json"), format!("\"{s}\""));
        }
        assert!("painting".parse::<Stage>().is_err());
        assert_eq!(clamp_percent(Some(140.0)), Some(100.0));
        assert_eq!(clamp_percent(Some(-3.0)), Some(0.0));
        assert_eq!(clamp_percent(Some(33.333)), Some(33.3));
        assert_eq!(clamp_percent(Some(f32::NAN)), None);
    }
}
