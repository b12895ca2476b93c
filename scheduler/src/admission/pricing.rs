//! What a job is estimated to cost, in credits, from the configured price table. The estimate is
//! reserved at admission; the worker settles from the provider's reported usage.

use gantry_queue::Payload;

use crate::config::{Price, SchedulerConfig};

/// Output size assumed when a generate job does not say (1024 × 1024).
const DEFAULT_PIXELS: u64 = 1024 * 1024;
/// Video length assumed when a generate job does not say.
const DEFAULT_VIDEO_SECS: u32 = 5;

/// The estimated cost of `body` (already routed). `None` for an unknown provider or model.
pub fn estimate(cfg: &SchedulerConfig, body: &Payload) -> Option<i64> {
    Some(match body {
        Payload::Generate(g) => {
            let m = cfg.providers.get(&g.provider)?.models.get(&g.model)?;
            let samples = i64::from(g.samples.unwrap_or(1).max(1));
            let per = match m.price {
                Price::Image { credits } => credits,
                Price::Second { credits } => credits * i64::from(g.duration_secs.unwrap_or(DEFAULT_VIDEO_SECS)),
                Price::Megapixel { first, each } => {
                    let px = match (g.width, g.height) {
                        (Some(w), Some(h)) => u64::from(w) * u64::from(h),
                        _ => DEFAULT_PIXELS,
                    };
                    let mp = px.div_ceil(1_000_000).max(1) as i64;
                    first + each * (mp - 1)
                }
            };
            per.saturating_mul(samples)
        }
        Payload::Upscale(_) => cfg.prices.upscale,
        // The duration is known only once the input is probed; one minute is reserved.
        Payload::Transcode(_) => cfg.prices.transcode_per_minute,
        Payload::CsamHash(_) => cfg.prices.csam_hash,
        Payload::Noop(_) => cfg.prices.noop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_queue::GeneratePayload;

    #[test]
    fn prices_follow_the_table() {
        let cfg = SchedulerConfig::demo();
        let g = |provider: &str, model: &str, f: fn(&mut GeneratePayload)| {
            let mut p = GeneratePayload {
                provider: provider.into(),
                model: model.into(),
                ..Default::default()
            };
            f(&mut p);
            estimate(&cfg, &Payload::Generate(p))
        };
        assert_eq!(g("seedream", "seedream-4.0", |p| p.samples = Some(4)), Some(120));
        assert_eq!(g("kling", "kling-v3-std", |p| p.duration_secs = Some(10)), Some(840));
        // 2048 x 2048 = 4.2 MP -> 5 started megapixels: 30 + 4 x 15.
        assert_eq!(
            g("flux", "flux-2-pro", |p| {
                p.width = Some(2048);
                p.height = Some(2048)
            }),
            Some(90)
        );
        assert_eq!(g("flux", "nope", |_| {}), None);
    }
}
