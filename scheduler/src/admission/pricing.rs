//! What a job costs, in credits. Admission quotes a job from the configured price table and
//! locks the quote into the job as a [`PriceRule`]; when the job finishes, the settler charges
//! the rule applied to the usage the worker reported (quantities it left out are taken at the
//! estimate), so a change to the price table never re-prices admitted jobs.

use gantry_queue::{Payload, Usage};
use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;

/// Output size assumed when a generate job does not say (1024 × 1024).
const DEFAULT_PIXELS: u64 = 1024 * 1024;
/// Video length assumed when a generate job does not say.
const DEFAULT_VIDEO_SECS: u32 = 5;
/// Transcode input length assumed at admission: the duration is known only once it is probed.
const DEFAULT_TRANSCODE_SECS: u32 = 60;

/// How credits accrue: the price table's entries (`price = { per = "image", credits = 40 }`)
/// and the rule locked into each job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "per", rename_all = "snake_case")]
pub enum Rate {
    /// Per output image.
    Image {
        /// Credits per image.
        credits: i64,
    },
    /// Per second of output video, per output.
    Second {
        /// Credits per second.
        credits: i64,
    },
    /// A first megapixel and each started one after it, per output.
    Megapixel {
        /// First megapixel.
        first: i64,
        /// Each further one.
        each: i64,
    },
    /// Per started minute of input (transcode).
    Minute {
        /// Credits per minute.
        credits: i64,
    },
    /// A flat price per job.
    Job {
        /// Credits per job.
        credits: i64,
    },
}

/// The quantities a price applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantities {
    /// Outputs (images, videos, samples).
    pub outputs: u32,
    /// Seconds of media.
    pub seconds: u32,
    /// Pixels per output.
    pub pixels: u64,
}

impl Rate {
    /// The credits `q` costs at this rate.
    pub fn cost(&self, q: &Quantities) -> i64 {
        let outputs = i64::from(q.outputs);
        match *self {
            Rate::Image { credits } => credits.saturating_mul(outputs),
            Rate::Second { credits } => credits.saturating_mul(i64::from(q.seconds)).saturating_mul(outputs),
            Rate::Megapixel { first, each } => {
                let mp = q.pixels.div_ceil(1_000_000).max(1) as i64;
                first
                    .saturating_add(each.saturating_mul(mp - 1))
                    .saturating_mul(outputs)
            }
            Rate::Minute { credits } => credits.saturating_mul(i64::from(q.seconds.div_ceil(60).max(1))),
            Rate::Job { credits } => credits,
        }
    }
}

/// A quote locked into a job at admission: the rate and the quantities it was estimated at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRule {
    /// The rate.
    pub rate: Rate,
    /// The quantities assumed at admission.
    pub estimated: Quantities,
}

/// What credit usage is counted by in the metrics: never the tenant or the user (per-tenant
/// usage comes from the API).
#[derive(
    Clone, Debug, Default, Hash, PartialEq, Eq, Serialize, Deserialize, prometheus_client::encoding::EncodeLabelSet,
)]
pub struct CreditLabels {
    /// The provider as routed (`local` for work the fleet does itself).
    pub provider: String,
    /// The model (`local` for the fleet's own work).
    pub model: String,
    /// The job kind.
    pub kind: String,
    /// The tenant's plan.
    pub plan: String,
}

impl CreditLabels {
    /// The labels of a job of `body` for a tenant on `plan`.
    pub fn of(body: &Payload, plan: &str) -> Self {
        let (provider, model) = match body {
            Payload::Generate(g) => (g.provider.clone(), g.model.clone()),
            _ => ("local".to_owned(), "local".to_owned()),
        };
        Self {
            provider,
            model,
            kind: body.kind().as_str().to_owned(),
            plan: plan.to_owned(),
        }
    }
}

/// The price locked into a job: the rule, and the labels its credits are counted under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPrice {
    /// The rule.
    #[serde(flatten)]
    pub rule: PriceRule,
    /// The metric labels (absent in events from before they existed).
    #[serde(default)]
    pub labels: CreditLabels,
}

impl PriceRule {
    /// The estimate: what admission reserves.
    pub fn estimate(&self) -> i64 {
        self.rate.cost(&self.estimated)
    }

    /// What a finished job is charged for `usage` (`None`: the worker reported none, so the
    /// estimate stands). Unbilled work costs nothing.
    pub fn charge(&self, usage: Option<&Usage>) -> i64 {
        let Some(u) = usage else { return self.estimate() };
        if !u.billed {
            return 0;
        }
        self.rate.cost(&Quantities {
            outputs: u.outputs.unwrap_or(self.estimated.outputs),
            seconds: u.seconds.unwrap_or(self.estimated.seconds),
            pixels: u.pixels.unwrap_or(self.estimated.pixels),
        })
    }
}

/// The price rule for `body` (already routed). `None` for an unknown provider or model.
pub fn quote(cfg: &SchedulerConfig, body: &Payload) -> Option<PriceRule> {
    let flat = |credits| PriceRule {
        rate: Rate::Job { credits },
        estimated: Quantities {
            outputs: 1,
            seconds: 0,
            pixels: 0,
        },
    };
    Some(match body {
        Payload::Generate(g) => {
            let m = cfg.providers.get(&g.provider)?.models.get(&g.model)?;
            let pixels = match (g.width, g.height) {
                (Some(w), Some(h)) => u64::from(w) * u64::from(h),
                _ => DEFAULT_PIXELS,
            };
            PriceRule {
                rate: m.price,
                estimated: Quantities {
                    outputs: g.samples.unwrap_or(1).max(1),
                    seconds: g.duration_secs.unwrap_or(DEFAULT_VIDEO_SECS),
                    pixels,
                },
            }
        }
        Payload::Upscale(_) => flat(cfg.prices.upscale),
        Payload::Transcode(_) => PriceRule {
            rate: Rate::Minute {
                credits: cfg.prices.transcode_per_minute,
            },
            estimated: Quantities {
                outputs: 1,
                seconds: DEFAULT_TRANSCODE_SECS,
                pixels: 0,
            },
        },
        Payload::CsamHash(_) => flat(cfg.prices.csam_hash),
        Payload::Noop(_) => flat(cfg.prices.noop),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_queue::{GeneratePayload, TranscodePayload};

    fn generate(cfg: &SchedulerConfig, provider: &str, model: &str, f: fn(&mut GeneratePayload)) -> Option<PriceRule> {
        let mut p = GeneratePayload {
            provider: provider.into(),
            model: model.into(),
            ..Default::default()
        };
        f(&mut p);
        quote(cfg, &Payload::Generate(p))
    }

    #[test]
    fn estimates_follow_the_table() {
        let cfg = SchedulerConfig::demo();
        let est = |r: Option<PriceRule>| r.map(|r| r.estimate());
        assert_eq!(
            est(generate(&cfg, "seedream", "seedream-4.0", |p| p.samples = Some(4))),
            Some(120)
        );
        assert_eq!(
            est(generate(&cfg, "kling", "kling-v3-std", |p| p.duration_secs = Some(10))),
            Some(840)
        );
        // 2048 x 2048 = 4.2 MP -> 5 started megapixels: 30 + 4 x 15.
        let flux = generate(&cfg, "flux", "flux-2-pro", |p| {
            p.width = Some(2048);
            p.height = Some(2048)
        });
        assert_eq!(est(flux), Some(90));
        assert_eq!(generate(&cfg, "flux", "nope", |_| {}), None);
    }

    #[test]
    fn charges_follow_reported_usage_at_the_locked_rate() {
        let cfg = SchedulerConfig::demo();
        let Some(r) = generate(&cfg, "seedream", "seedream-4.0", |p| p.samples = Some(4)) else {
            panic!("seedream is in the demo table")
        };
        assert_eq!(r.charge(None), 120, "no usage: the estimate");
        let u = |outputs| Usage {
            outputs: Some(outputs),
            ..Default::default()
        };
        assert_eq!(r.charge(Some(&u(3))), 90, "one of four images was not made");
        let unbilled = Usage {
            billed: false,
            ..Default::default()
        };
        assert_eq!(r.charge(Some(&unbilled)), 0);
        // A transcode is reserved at one minute and charged per started minute probed.
        let Some(t) = quote(&cfg, &Payload::Transcode(TranscodePayload::default())) else {
            panic!("transcode is priced")
        };
        let secs = Usage {
            seconds: Some(150),
            ..Default::default()
        };
        assert_eq!(t.charge(Some(&secs)), 3 * t.estimate());
        // The rule survives the trip through the job hash.
        let json = serde_json::to_string(&r).expect("serializes");
        assert_eq!(serde_json::from_str::<PriceRule>(&json).ok(), Some(r));
    }
}
