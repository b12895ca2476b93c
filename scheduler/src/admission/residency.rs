//! Data residency: a generate job goes only to a provider that processes data in a region its
//! user consented to. When the asked provider is outside them, the job falls back to an allowed
//! provider with a model of the same class (the cheapest first); when there is none, it is
//! refused. Local kinds (upscale, transcode, hashing) never leave the fleet.

use gantry_queue::{GeneratePayload, Payload};

use crate::config::{ModelConfig, SchedulerConfig};

/// Why a job cannot be routed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The provider or model is not in the configuration.
    #[error("unknown model {provider}/{model}")]
    UnknownModel {
        /// Provider asked for.
        provider: String,
        /// Model asked for.
        model: String,
    },
    /// No configured provider processes data in the consented regions.
    #[error("no provider of {class} models processes data in {regions:?}")]
    NoAllowedProvider {
        /// The model class.
        class: String,
        /// The regions the user consented to.
        regions: Vec<String>,
    },
}

/// Where a generate job goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// Whether it differs from what was asked (a residency fallback).
    pub fell_back: bool,
}

fn allowed(jurisdictions: &[String], regions: &[String]) -> bool {
    regions.is_empty()
        || jurisdictions
            .iter()
            .any(|j| regions.iter().any(|r| r.eq_ignore_ascii_case(j)))
}

/// Chooses the provider and model for `g` under the consented `regions`.
pub fn route(cfg: &SchedulerConfig, g: &GeneratePayload, regions: &[String]) -> Result<Route, RouteError> {
    let unknown = || RouteError::UnknownModel {
        provider: g.provider.clone(),
        model: g.model.clone(),
    };
    let provider = cfg.providers.get(&g.provider).ok_or_else(unknown)?;
    let model = provider.models.get(&g.model).ok_or_else(unknown)?;
    if allowed(&provider.jurisdictions, regions) {
        return Ok(Route {
            provider: g.provider.clone(),
            model: g.model.clone(),
            fell_back: false,
        });
    }
    let mut options: Vec<(i64, &String, &String)> = cfg
        .providers
        .iter()
        .filter(|(_, p)| allowed(&p.jurisdictions, regions))
        .flat_map(|(pn, p)| {
            p.models
                .iter()
                .filter(|(_, m)| m.class == model.class)
                .map(move |(mn, m)| (unit_price(m), pn, mn))
        })
        .collect();
    options.sort();
    match options.first() {
        Some((_, p, m)) => Ok(Route {
            provider: (*p).clone(),
            model: (*m).clone(),
            fell_back: true,
        }),
        None => Err(RouteError::NoAllowedProvider {
            class: model.class.clone(),
            regions: regions.to_vec(),
        }),
    }
}

/// A model's price for one default output, to rank fallbacks.
fn unit_price(m: &ModelConfig) -> i64 {
    use crate::admission::pricing::Rate;
    match m.price {
        Rate::Image { credits } | Rate::Second { credits } | Rate::Minute { credits } | Rate::Job { credits } => {
            credits
        }
        Rate::Megapixel { first, .. } => first,
    }
}

/// Routes a job's payload in place (generate only). Returns the route taken, if any.
pub fn route_payload(
    cfg: &SchedulerConfig,
    body: &mut Payload,
    regions: &[String],
) -> Result<Option<Route>, RouteError> {
    let Payload::Generate(g) = body else { return Ok(None) };
    let r = route(cfg, g, regions)?;
    g.provider = r.provider.clone();
    g.model = r.model.clone();
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(provider: &str, model: &str) -> GeneratePayload {
        GeneratePayload {
            provider: provider.into(),
            model: model.into(),
            prompt: "p".into(),
            ..Default::default()
        }
    }

    #[test]
    fn consented_regions_decide_the_provider() {
        let cfg = SchedulerConfig::demo();
        let us = vec!["US".to_owned()];
        // Seedream processes in CN/SG: a US-only user falls back to a US image model.
        let r = route(&cfg, &job("seedream", "seedream-4.0"), &us).expect("an allowed provider");
        assert!(r.fell_back);
        assert!(cfg.providers[&r.provider].jurisdictions.contains(&"US".to_owned()));
        // Allowed as asked.
        let r = route(&cfg, &job("seedream", "seedream-4.0"), &["SG".into()]).expect("an allowed provider");
        assert_eq!((r.provider.as_str(), r.fell_back), ("seedream", false));
        // No restriction stated: as asked.
        assert!(
            !route(&cfg, &job("kling", "kling-v3-std"), &[])
                .expect("no consent limit")
                .fell_back
        );
        // Nobody makes video in the EU in the demo table.
        assert!(matches!(
            route(&cfg, &job("kling", "kling-v3-std"), &["EU".into()]),
            Err(RouteError::NoAllowedProvider { .. })
        ));
        assert!(matches!(
            route(&cfg, &job("nobody", "x"), &us),
            Err(RouteError::UnknownModel { .. })
        ));
    }
}
