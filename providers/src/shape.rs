//! What a generate request will make, decided once: the samples, clip length and output size
//! each provider API accepts, with its defaults. Admission prices a job from the [`Shape`] this
//! module returns, and the worker builds the provider request from the same [`Shape`], so the
//! credits reserved are the credits of what will be made: a `duration_secs: 0` video (which a
//! provider clamps up to its minimum and bills) or an absurd `samples` is refused here with a
//! typed error instead of being priced at 0 or at a number the provider never makes.
//!
//! The numbers are the providers' documented ranges (`shared/reference/providers.md`); the
//! clients send exactly the shaped values.

use crate::config::Api;

/// What one API accepts for one class of model (image or video).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Outputs per request: the least and the most.
    pub samples: (u32, u32),
    /// Clip length in seconds, for video: the least, the most and the default.
    pub duration_secs: Option<(u32, u32, u32)>,
    /// The largest side, in pixels, an output size may ask for.
    pub max_side: u32,
}

/// The request as it will be sent and billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Outputs asked for.
    pub samples: u32,
    /// Seconds per clip (video), `None` for images.
    pub duration_secs: Option<u32>,
    /// The output size asked for, if any, as the provider will take it (snapped where it only
    /// takes some sizes).
    pub size: Option<(u32, u32)>,
    /// Pixels per output, at most: the size asked for, else the most the provider makes by
    /// default. Per-megapixel prices are reserved at this.
    pub max_pixels: u64,
}

/// What the job asked for (the payload's fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Asked {
    /// `samples`.
    pub samples: Option<u32>,
    /// `duration_secs`.
    pub duration_secs: Option<u32>,
    /// `width`.
    pub width: Option<u32>,
    /// `height`.
    pub height: Option<u32>,
}

/// Why a request cannot be shaped: the field and the range the provider takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// A number outside the provider's range.
    #[error("{field} = {value}: this provider's {class} models take {min} to {max}")]
    OutOfRange {
        /// The payload field.
        field: &'static str,
        /// What was asked.
        value: u32,
        /// `image` or `video`.
        class: &'static str,
        /// The least accepted.
        min: u32,
        /// The most accepted.
        max: u32,
    },
    /// Width without height, or the reverse.
    #[error("width and height go together: give both or neither")]
    HalfSize,
    /// The API makes no video (or no images).
    #[error("this provider's API makes no {0}")]
    Unsupported(&'static str),
}

/// Pixels of a default-sized output when a provider documents no larger one.
const DEFAULT_PIXELS: u64 = 1024 * 1024;

impl Api {
    /// The API a provider speaks, from its usual name (`openai`, `gemini`, `veo`, `imagen`,
    /// `kling`, `seedream`, `seedance`, `ark`, `flux`, `bfl`); `None` for another name, which a
    /// configuration must then name with `api = "..."`.
    pub fn for_name(name: &str) -> Option<Api> {
        Some(match name {
            "openai" => Api::Openai,
            "gemini" | "veo" | "imagen" | "google" => Api::Google,
            "kling" => Api::Kling,
            "seedream" | "seedance" | "ark" => Api::Ark,
            "flux" | "bfl" => Api::Bfl,
            _ => return None,
        })
    }

    /// What this API accepts for image (`video = false`) or video models.
    pub fn bounds(self, video: bool) -> Result<Bounds, ShapeError> {
        let image = |max_samples, max_side| Bounds {
            samples: (1, max_samples),
            duration_secs: None,
            max_side,
        };
        let clip = |max_samples, (min, max, default)| Bounds {
            samples: (1, max_samples),
            duration_secs: Some((min, max, default)),
            max_side: 4096,
        };
        Ok(match (self, video) {
            (Api::Openai, false) => image(10, 4096),
            (Api::Openai, true) => return Err(ShapeError::Unsupported("video")),
            // Imagen `sampleCount` 1-4; Veo 1-2 clips of 4-8 s (8 by default).
            (Api::Google, false) => image(4, 4096),
            (Api::Google, true) => clip(2, (4, 8, 8)),
            // Kling images `n` 1-9; video 3-15 s (5 by default), one clip per task.
            (Api::Kling, false) => image(9, 4096),
            (Api::Kling, true) => clip(1, (3, 15, 5)),
            // Seedream up to 15 images in a sequence; Seedance 2-12 s (5 by default).
            (Api::Ark, false) => image(15, 4096),
            (Api::Ark, true) => clip(1, (2, 12, 5)),
            // Flux: one image per task, sides up to 4096.
            (Api::Bfl, false) => image(1, 4096),
            (Api::Bfl, true) => return Err(ShapeError::Unsupported("video")),
        })
    }

    /// The request `asked` becomes on this API: every number checked against
    /// [`Api::bounds`], defaults filled in, sizes snapped as the API takes them.
    pub fn shape(self, video: bool, asked: &Asked) -> Result<Shape, ShapeError> {
        let b = self.bounds(video)?;
        let class = if video { "video" } else { "image" };
        let check = |field, value: u32, (min, max): (u32, u32)| {
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                Err(ShapeError::OutOfRange {
                    field,
                    value,
                    class,
                    min,
                    max,
                })
            }
        };
        let samples = match asked.samples {
            Some(n) => check("samples", n, b.samples)?,
            None => b.samples.0,
        };
        let duration_secs = match (b.duration_secs, asked.duration_secs) {
            (Some((min, max, _)), Some(d)) => Some(check("duration_secs", d, (min, max))?),
            (Some((_, _, default)), None) => Some(default),
            // An image model makes no clip: the field is ignored, as before.
            (None, _) => None,
        };
        let size = match (asked.width, asked.height) {
            (Some(w), Some(h)) => Some((
                check("width", w, (1, b.max_side))?,
                check("height", h, (1, b.max_side))?,
            )),
            (None, None) => None,
            _ => return Err(ShapeError::HalfSize),
        };
        let size = size.map(|(w, h)| self.snap(w, h));
        let max_pixels = match size {
            Some((w, h)) => u64::from(w) * u64::from(h),
            None => self.default_pixels(video),
        };
        Ok(Shape {
            samples,
            duration_secs,
            size,
            max_pixels,
        })
    }

    /// `asked`, brought within this API's bounds instead of refused: for a fallback provider,
    /// which may take less than the one admission priced (the charge stays capped at the
    /// reservation). An API that makes no such class leaves `asked` as it is (its client
    /// refuses it).
    pub fn fit(self, video: bool, asked: &Asked) -> Asked {
        let Ok(b) = self.bounds(video) else { return *asked };
        let side = |v: Option<u32>| v.map(|v| v.clamp(1, b.max_side));
        Asked {
            samples: asked.samples.map(|n| n.clamp(b.samples.0, b.samples.1)),
            duration_secs: match b.duration_secs {
                Some((min, max, _)) => asked.duration_secs.map(|d| d.clamp(min, max)),
                None => asked.duration_secs,
            },
            width: side(asked.width),
            height: side(asked.height),
        }
    }

    /// The size the API will make for `w` × `h`.
    fn snap(self, w: u32, h: u32) -> (u32, u32) {
        match self {
            // OpenAI takes three sizes, by aspect.
            Api::Openai => match w.cmp(&h) {
                std::cmp::Ordering::Greater => (1536, 1024),
                std::cmp::Ordering::Less => (1024, 1536),
                std::cmp::Ordering::Equal => (1024, 1024),
            },
            // Flux: multiples of 16, at least 64.
            Api::Bfl => {
                let s = |v: u32| (v.clamp(64, 4096) / 16) * 16;
                (s(w), s(h))
            }
            _ => (w, h),
        }
    }

    /// The most pixels an output of this API has when no size is asked for.
    fn default_pixels(self, video: bool) -> u64 {
        match (self, video) {
            // `auto` picks one of the three sizes; the largest is 1536 × 1024.
            (Api::Openai, _) => 1536 * 1024,
            // Seedream's default is `2K` (2048 × 2048).
            (Api::Ark, false) => 2048 * 2048,
            // 720p clips.
            (_, true) => 1280 * 720,
            _ => DEFAULT_PIXELS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_bad_numbers_are_refused() {
        let veo = Api::Google.shape(true, &Asked::default()).expect("defaults");
        assert_eq!((veo.samples, veo.duration_secs), (1, Some(8)));
        let zero = Api::Google.shape(
            true,
            &Asked {
                duration_secs: Some(0),
                ..Default::default()
            },
        );
        assert!(matches!(
            zero,
            Err(ShapeError::OutOfRange {
                field: "duration_secs",
                min: 4,
                ..
            })
        ));
        let many = Api::Ark.shape(
            false,
            &Asked {
                samples: Some(1_000_000),
                ..Default::default()
            },
        );
        assert!(matches!(
            many,
            Err(ShapeError::OutOfRange {
                field: "samples",
                max: 15,
                ..
            })
        ));
        assert_eq!(
            Api::Bfl
                .shape(
                    false,
                    &Asked {
                        samples: Some(2),
                        ..Default::default()
                    }
                )
                .map(|s| s.samples),
            Err(ShapeError::OutOfRange {
                field: "samples",
                value: 2,
                class: "image",
                min: 1,
                max: 1
            })
        );
        assert_eq!(
            Api::Openai.shape(true, &Asked::default()),
            Err(ShapeError::Unsupported("video"))
        );
        let half = Asked {
            width: Some(512),
            ..Default::default()
        };
        assert_eq!(Api::Kling.shape(false, &half), Err(ShapeError::HalfSize));
    }

    #[test]
    fn sizes_are_snapped_as_the_provider_takes_them() {
        let asked = |w, h| Asked {
            width: Some(w),
            height: Some(h),
            ..Default::default()
        };
        let s = Api::Openai.shape(false, &asked(1920, 1080)).expect("ok");
        assert_eq!((s.size, s.max_pixels), (Some((1536, 1024)), 1536 * 1024));
        let s = Api::Bfl.shape(false, &asked(1000, 70)).expect("ok");
        assert_eq!(s.size, Some((992, 64)));
        assert!(Api::Bfl.shape(false, &asked(5000, 70)).is_err(), "over the side limit");
        assert_eq!(Api::for_name("veo"), Some(Api::Google));
        // A fallback fits what was asked into its own bounds.
        let many = Asked {
            samples: Some(4),
            width: Some(8000),
            height: Some(600),
            ..Default::default()
        };
        let fitted = Api::Bfl.fit(false, &many);
        assert!(Api::Bfl.shape(false, &fitted).is_ok(), "{fitted:?}");
        assert_eq!((fitted.samples, fitted.width), (Some(1), Some(4096)));
        assert_eq!(Api::for_name("midjourney"), None);
    }
}
