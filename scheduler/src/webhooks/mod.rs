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

    /// Whether `url` has the shape the API's document gives an endpoint: `http(s)://`, a host
    /// name (a letter, then letters, digits, `.` and `-`), a port up to 65535, a path without
    /// whitespace; or a literal address the operator allows.
    pub fn url_shape_ok(&self, url: &str) -> bool {
        self.guard.allows_literal(url) || url_shape(url)
    }
}

/// See [`Webhooks::url_shape_ok`] (the pattern in `openapi.json`).
fn url_shape(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return false;
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    // (ASCII whitespace only: regex engines disagree on what else `\s` means.)
    if path
        .bytes()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
    {
        return false;
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let host_ok = host.starts_with(|c: char| c.is_ascii_alphabetic())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| n <= 65_535)
    });
    host_ok && port_ok
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

#[cfg(test)]
mod url_tests {
    #[test]
    fn endpoint_urls_have_the_documented_shape() {
        for ok in ["https://hooks.example.com/x?y=1", "http://a:65535", "http://a-b.c/"] {
            assert!(super::url_shape(ok), "{ok}");
        }
        for bad in [
            "https://mHSUA0*",
            "http://cV:71781",
            "ftp://a",
            "http://1.2.3.4/",
            "http://a/b c",
            "http://a:",
        ] {
            assert!(!super::url_shape(bad), "{bad}");
        }
    }
}
