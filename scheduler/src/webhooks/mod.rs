//! Webhooks: tenants' endpoints ([`store`]), signing per Standard Webhooks ([`signing`]), and
//! the dispatcher and sender that deliver job events to them, durably and at least once
//! ([`delivery`]). The routes that manage them are `crate::webhook_routes`.

pub mod delivery;
pub mod signing;
pub mod store;

use std::sync::Arc;

use gantry_providers::fetch::GuardedClient;
use tokio::sync::Notify;

use crate::config::{SchedulerConfig, WebhooksConfig};
use store::{Endpoint, Secret, Source, WebhookStore};

/// What the routes share: the store, the URL check, the configuration, and the sender's wake-up.
#[derive(Clone, Debug)]
pub struct Webhooks {
    /// Endpoints and deliveries.
    pub store: WebhookStore,
    /// Delivery settings.
    pub cfg: WebhooksConfig,
    /// Checks URLs as the sender will (scheme, credentials, special addresses).
    pub guard: GuardedClient,
    /// Wakes the sender (a replay).
    pub wake: Arc<Notify>,
}

impl Webhooks {
    /// Whether `url` may receive deliveries.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        self.guard.check(url).map(|_| ())
    }
}

/// Writes the endpoints the configuration defines (`[tenants.<t>.webhooks.<name>]`) to the
/// store as `cfg_<name>`, keeping the state of ones already there (failing, disabled). An
/// endpoint whose secret variable is unset or not a secret is skipped, and said so.
pub async fn sync_config(store: &WebhookStore, cfg: &SchedulerConfig) {
    let now = gantry_core::time::now_ms();
    for (tenant, t) in &cfg.tenants {
        for (name, w) in &t.webhooks {
            let id = format!("cfg_{name}");
            let secret = match std::env::var(&w.secret_env) {
                Ok(s) if signing::secret_key(&s).is_ok() => s,
                _ => {
                    tracing::error!(tenant, endpoint = %id, var = %w.secret_env, "webhook secret variable unset or not whsec_…; endpoint skipped");
                    continue;
                }
            };
            let types = w.types.iter().filter_map(|t| t.parse().ok()).collect();
            let prev = store.endpoint(tenant, &id).await.ok().flatten();
            let ep = Endpoint {
                id: id.clone(),
                url: w.url.clone(),
                types,
                secrets: vec![Secret {
                    value: secret,
                    expires_ms: None,
                }],
                created_ms: prev.as_ref().map_or(now, |p| p.created_ms),
                source: Source::Config,
                description: Some(format!("from the configuration ({name})")),
                disabled: prev.as_ref().and_then(|p| p.disabled.clone()),
                failing_since_ms: prev.as_ref().and_then(|p| p.failing_since_ms),
            };
            if let Err(e) = store.put(tenant, &ep).await {
                tracing::error!(tenant, endpoint = %id, error = %e, "writing a configured webhook failed");
            }
        }
    }
}
