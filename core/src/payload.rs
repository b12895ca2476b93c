//! Typed payloads, one per job kind. Unknown fields are rejected so a typo fails at enqueue
//! instead of silently running with defaults.

use serde::{Deserialize, Serialize};

use crate::job::{ErrorClass, JobKind};

/// Most reference images one generate job may name (the providers take at most 10 to 16; each
/// URL is a fetch the worker makes for the tenant).
pub const MAX_REFERENCE_IMAGES: usize = 16;

/// A job's kind with its payload; serialized as `{"kind": "...", "payload": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum Payload {
    /// See [`GeneratePayload`].
    Generate(GeneratePayload),
    /// See [`UpscalePayload`].
    Upscale(UpscalePayload),
    /// See [`TranscodePayload`].
    Transcode(TranscodePayload),
    /// See [`CsamHashPayload`].
    CsamHash(CsamHashPayload),
    /// See [`NoopPayload`].
    Noop(NoopPayload),
    /// See [`ExportPayload`].
    Export(ExportPayload),
}

impl Payload {
    /// The kind this payload belongs to.
    pub fn kind(&self) -> JobKind {
        match self {
            Payload::Generate(_) => JobKind::Generate,
            Payload::Upscale(_) => JobKind::Upscale,
            Payload::Transcode(_) => JobKind::Transcode,
            Payload::CsamHash(_) => JobKind::CsamHash,
            Payload::Noop(_) => JobKind::Noop,
            Payload::Export(_) => JobKind::Export,
        }
    }

    /// The payload without its kind, for a record that stores the kind apart (the queue's
    /// compact record): serializes as the `payload` object alone.
    pub fn content(&self) -> PayloadContent<'_> {
        PayloadContent(self)
    }

    /// Rebuilds a payload from its kind and its content's JSON (what [`Payload::content`]
    /// wrote). Unknown fields are refused as they are at enqueue.
    pub fn from_content(kind: JobKind, json: &str) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            JobKind::Generate => Payload::Generate(serde_json::from_str(json)?),
            JobKind::Upscale => Payload::Upscale(serde_json::from_str(json)?),
            JobKind::Transcode => Payload::Transcode(serde_json::from_str(json)?),
            JobKind::CsamHash => Payload::CsamHash(serde_json::from_str(json)?),
            JobKind::Noop => Payload::Noop(serde_json::from_str(json)?),
            JobKind::Export => Payload::Export(serde_json::from_str(json)?),
        })
    }
}

/// A payload's content without its kind (see [`Payload::content`]).
#[derive(Clone, Copy, Debug)]
pub struct PayloadContent<'a>(&'a Payload);

impl Serialize for PayloadContent<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Payload::Generate(p) => p.serialize(s),
            Payload::Upscale(p) => p.serialize(s),
            Payload::Transcode(p) => p.serialize(s),
            Payload::CsamHash(p) => p.serialize(s),
            Payload::Noop(p) => p.serialize(s),
            Payload::Export(p) => p.serialize(s),
        }
    }
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Call a remote generation model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratePayload {
    /// Provider name from configuration (`openai`, `gemini`, `kling`, `seedream`, `flux`, ...).
    pub provider: String,
    /// Model id at that provider.
    pub model: String,
    /// The user's prompt. Sensitive: never logged; only its SHA-256 leaves the job.
    pub prompt: String,
    /// Negative prompt, where the model takes one. Sensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Reference images (object keys or URLs). Sensitive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_images: Vec<String>,
    /// Output width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Output height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Video duration in seconds, for video models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u32>,
    /// Number of outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
}

/// Resize or upscale one image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpscalePayload {
    /// Input object key.
    pub input: String,
    /// Scale factor (2 or 4), or absent with `fit_within`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u8>,
    /// Fit within this box `[width, height]` instead of scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_within: Option<[u32; 2]>,
    /// Output format: `png`, `jpeg` or `webp`; the input's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Encoder quality 1..=100 for lossy formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// How the new pixels are made; absent: the pool's super-resolution network where the
    /// worker has one, the job asks for 4× and the input is at most 512×512, else Lanczos3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<UpscaleMethod>,
}

/// How an `upscale` job makes the new pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpscaleMethod {
    /// Lanczos3 resampling (any size).
    Lanczos3,
    /// The worker's super-resolution network (4× only).
    Neural,
}

impl UpscaleMethod {
    /// The name used in payloads and results.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lanczos3 => "lanczos3",
            Self::Neural => "neural",
        }
    }
}

/// Transcode one video into web-ready outputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscodePayload {
    /// Input object key.
    pub input: String,
    /// x264/NVENC constant rate factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crf: Option<u8>,
    /// Encoder preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Maximum output height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    /// Maximum output frame rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fps: Option<u32>,
    /// Also produce a VP9 WebM.
    #[serde(default)]
    pub webm: bool,
    /// Also produce a poster frame and an animated preview.
    #[serde(default)]
    pub previews: bool,
}

/// Hash one image or video and match it against abuse hash lists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsamHashPayload {
    /// Input object key.
    pub input: String,
    /// `image` or `video`; guessed from the content when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    /// Hash lists to match; every configured list when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<String>,
}

/// Export the job's user's data (of the job's tenant) as one archive: every job of theirs the
/// fleet still holds (its metadata, its prompts opened, its released outputs and the reference
/// images it took from the store), their pipelines, and what the tenant's policy lets them
/// see of their trust standing and moderation records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportPayload {
    /// The request's id (the `X-Request-Id` it came with), named in the manifest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// Include the user's trust standing and its history.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trust: bool,
    /// Include the user's moderation records (category, time, action; never prompt text).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moderation: bool,
}

/// A job that does nothing, for benchmarks, canaries and tests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopPayload {
    /// Sleep this long before finishing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sleep_ms: u64,
    /// Fail the first this-many attempts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fail_attempts: u32,
    /// How those attempts fail (`retryable` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_class: Option<ErrorClass>,
    /// Write an output of this many bytes (at most 16 MiB) before finishing or failing, to
    /// exercise the output store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u32>,
    /// Fail every attempt (as `fail_class`) until the worker's clock passes this Unix time in
    /// milliseconds: an outage that ends, for dead-letter replay tests and drills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_until_unix_ms: Option<u64>,
    /// Report this usage on success, as a provider would (credit settlement tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_usage: Option<crate::job::Usage>,
}
