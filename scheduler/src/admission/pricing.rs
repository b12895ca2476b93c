//! What a job costs, in credits. Admission quotes a job from the configured price table and
//! locks the quote into the job as a [`PriceRule`]; when the job finishes, the settler charges
//! the rule applied to the usage the worker reported (quantities it left out are taken at the
//! estimate), so a change to the price table never re-prices admitted jobs.
//!
//! The quote is the worst case of what will be made: a generate job's quantities come from
//! [`gantry_providers::shape`], the same decision the provider client sends (so a zero-second
//! video or a million samples is refused, not priced at 0), and a transcode is reserved at the
//! longest input the fleet accepts. A charge never exceeds the reservation: usage above it is
//! logged and the reservation is charged.

use gantry_queue::{Payload, Usage};
use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
pub use crate::rate::{Quantities, Rate};

/// Why a job cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The provider or model is not in the price table.
    #[error("unknown provider or model")]
    UnknownModel,
    /// The request is outside what the provider makes.
    #[error(transparent)]
    Shape(#[from] gantry_providers::shape::ShapeError),
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
    /// estimate stands), never more than the estimate that was reserved. Unbilled work costs
    /// nothing.
    pub fn charge(&self, usage: Option<&Usage>) -> i64 {
        self.metered(usage).min(self.estimate())
    }

    /// The rule applied to `usage` as reported, uncapped: above [`PriceRule::estimate`] only
    /// when the usage exceeds what admission priced (a provider that made more than asked).
    pub fn metered(&self, usage: Option<&Usage>) -> i64 {
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

/// The price rule for `body` (already routed): the worst case of what it will make.
pub fn quote(cfg: &SchedulerConfig, body: &Payload) -> Result<PriceRule, QuoteError> {
    let flat = |credits| PriceRule {
        rate: Rate::Job { credits },
        estimated: Quantities {
            outputs: 1,
            seconds: 0,
            pixels: 0,
        },
    };
    Ok(match body {
        Payload::Generate(g) => {
            let m = cfg
                .providers
                .get(&g.provider)
                .and_then(|p| p.models.get(&g.model))
                .ok_or(QuoteError::UnknownModel)?;
            let api = cfg.provider_api(&g.provider).ok_or(QuoteError::UnknownModel)?;
            let shape = api.shape(
                m.class == "video",
                &gantry_providers::shape::Asked {
                    samples: g.samples,
                    duration_secs: g.duration_secs,
                    width: g.width,
                    height: g.height,
                },
            )?;
            PriceRule {
                rate: m.price,
                estimated: Quantities {
                    outputs: shape.samples,
                    seconds: shape.duration_secs.unwrap_or(0),
                    pixels: shape.max_pixels,
                },
            }
        }
        Payload::Upscale(_) => flat(cfg.prices.upscale),
        // The input's length is known only once a worker probes it: reserve the longest the
        // fleet accepts, charge the minutes probed.
        Payload::Transcode(_) => PriceRule {
            rate: Rate::Minute {
                credits: cfg.prices.transcode_per_minute,
            },
            estimated: Quantities {
                outputs: 1,
                seconds: cfg.prices.transcode_max_secs,
                pixels: 0,
            },
        },
        Payload::CsamHash(_) => flat(cfg.prices.csam_hash),
        Payload::Noop(_) => flat(cfg.prices.noop),
        // A user's own data, on request: free.
        Payload::Export(_) => flat(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_queue::{GeneratePayload, TranscodePayload};

    fn generate(cfg: &SchedulerConfig, provider: &str, model: &str, f: fn(&mut GeneratePayload)) -> Option<PriceRule> {
        generate_checked(cfg, provider, model, f).ok()
    }

    fn generate_checked(
        cfg: &SchedulerConfig,
        provider: &str,
        model: &str,
        f: fn(&mut GeneratePayload),
    ) -> Result<PriceRule, QuoteError> {
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
        // What the provider would clamp up and bill is refused, not priced at 0.
        assert!(matches!(
            generate_checked(&cfg, "veo", "veo-3-fast", |p| p.duration_secs = Some(0)),
            Err(QuoteError::Shape(_))
        ));
        assert!(matches!(
            generate_checked(&cfg, "seedream", "seedream-4.0", |p| p.samples = Some(4_000_000)),
            Err(QuoteError::Shape(_))
        ));
        // A Veo clip with no length is reserved at Veo's default, 8 s.
        assert_eq!(est(generate(&cfg, "veo", "veo-3-fast", |_| {})), Some(8 * 150));
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
        // A transcode is reserved at the longest input (60 minutes) and charged per started
        // minute probed.
        let Ok(t) = quote(&cfg, &Payload::Transcode(TranscodePayload::default())) else {
            panic!("transcode is priced")
        };
        assert_eq!(t.estimate(), 60 * cfg.prices.transcode_per_minute);
        let secs = Usage {
            seconds: Some(150),
            ..Default::default()
        };
        assert_eq!(t.charge(Some(&secs)), 3 * cfg.prices.transcode_per_minute);
        // More than was reserved is never charged.
        let long = Usage {
            seconds: Some(7200),
            ..Default::default()
        };
        assert_eq!(t.metered(Some(&long)), 120 * cfg.prices.transcode_per_minute);
        assert_eq!(t.charge(Some(&long)), t.estimate());
        // The rule survives the trip through the job hash.
        let json = serde_json::to_string(&r).expect("serializes");
        assert_eq!(serde_json::from_str::<PriceRule>(&json).ok(), Some(r));
    }

    /// For random payloads (absurd numbers included): whatever admission admits, the request
    /// the provider client builds (the same `shape`) meters at most the reservation, and no
    /// reported usage, however inflated, is charged above it.
    #[test]
    fn the_reservation_covers_every_charge_property() {
        let cfg = SchedulerConfig::demo();
        let models: Vec<(String, String, bool)> = cfg
            .providers
            .iter()
            .flat_map(|(p, pc)| {
                pc.models
                    .iter()
                    .map(move |(m, mc)| (p.clone(), m.clone(), mc.class == "video"))
            })
            .collect();
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pick = |n: u64, choices: &[Option<u32>]| -> Option<u32> {
            match choices[(n % choices.len() as u64) as usize] {
                Some(u32::MAX) => Some((n >> 16) as u32),
                other => other,
            }
        };
        let numbers = [
            None,
            Some(0),
            Some(1),
            Some(2),
            Some(4),
            Some(8),
            Some(15),
            Some(16),
            Some(u32::MAX),
        ];
        let sides = [
            None,
            Some(0),
            Some(64),
            Some(1000),
            Some(1024),
            Some(4096),
            Some(5000),
            Some(u32::MAX),
        ];
        let (mut admitted, mut refused) = (0, 0);
        for i in 0..20_000usize {
            let (provider, model, video) = &models[i % models.len()];
            let g = GeneratePayload {
                provider: provider.clone(),
                model: model.clone(),
                samples: pick(next(), &numbers),
                duration_secs: pick(next(), &numbers),
                width: pick(next(), &sides),
                height: pick(next(), &sides),
                ..Default::default()
            };
            let Ok(rule) = quote(&cfg, &Payload::Generate(g.clone())) else {
                refused += 1;
                continue;
            };
            admitted += 1;
            let reserved = rule.estimate();
            assert!(reserved > 0, "{g:?} admitted at {reserved}");
            // The client's request: the worker passes the payload's fields on.
            let api = cfg.provider_api(provider).expect("known api");
            let req = gantry_providers::GenerateRequest {
                external_id: "x".into(),
                model: model.clone(),
                prompt: String::new(),
                negative_prompt: None,
                reference_images: Vec::new(),
                width: g.width,
                height: g.height,
                duration_secs: g.duration_secs,
                samples: g.samples.unwrap_or(1).max(1),
                video: *video,
                callback: None,
            };
            let sent = req.shape("test", api).expect("admitted, so the client sends it");
            let honest = Usage {
                outputs: Some(sent.samples),
                seconds: sent.duration_secs,
                pixels: Some(sent.max_pixels),
                ..Default::default()
            };
            assert!(
                rule.metered(Some(&honest)) <= reserved,
                "{g:?}: the request sent meters {} above the {reserved} reserved",
                rule.metered(Some(&honest))
            );
            let inflated = Usage {
                outputs: Some((next() % 1000) as u32),
                seconds: Some((next() % 100_000) as u32),
                pixels: Some(next() % (1 << 40)),
                ..Default::default()
            };
            assert!(rule.charge(Some(&inflated)) <= reserved);
            assert!(rule.charge(None) <= reserved);
        }
        assert!(
            admitted > 1000 && refused > 1000,
            "{admitted} admitted, {refused} refused"
        );
    }
}
