//! Gantry providers: one client per remote generation-model API behind one [`Provider`] trait,
//! error classes the fleet acts on, usage for credit settlement, result verification, and the
//! resilience around them (backoff with full jitter, circuit breakers).
//!
//! Three delivery modes (synchronous, submit-then-poll, webhook) share one state machine
//! ([`task::Task`]: `queued → running → succeeded | failed | moderated | cancelled`); each
//! client maps its provider's statuses and error codes into [`ProviderErrorClass`]es.

pub mod ark;
pub mod bfl;
pub mod breaker;
pub mod config;
pub mod error;
pub mod fetch;
pub mod google;
pub mod http;
pub mod kling;
pub mod media;
pub mod openai;
pub mod retry;
pub mod run;
pub mod shape;
pub mod task;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use config::{Api, ProviderConfig, ProvidersConfig};
pub use error::{ProviderError, ProviderErrorClass};
pub use task::{Artifact, GenerateRequest, Generated, Mode, Observed, Submitted, TaskHandle, TaskState};

/// The API key the mock servers accept (and every mocked configuration sends).
/// (Distinctive, so the redaction test can search every log and output for it.)
pub const MOCK_API_KEY: &str = "mock-key-7d1c4e90";
/// Kling's access key on the mock servers.
pub const MOCK_ACCESS_KEY: &str = "mock-access-key-52b8e3f1";
/// Kling's secret key on the mock servers.
pub const MOCK_SECRET_KEY: &str = "mock-secret-key-a94f06cd";

/// One remote generation API in one region.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The provider's name (`kling`, `flux`, ...), as configured.
    fn name(&self) -> &'static str;

    /// How it delivers results.
    fn mode(&self) -> Mode;

    /// Starts a task (or, for a synchronous provider, runs it).
    fn submit<'a>(&'a self, req: &'a GenerateRequest) -> BoxFuture<'a, Result<Submitted, ProviderError>>;

    /// Reads an accepted task's state.
    fn poll<'a>(&'a self, task: &'a TaskHandle) -> BoxFuture<'a, Result<Observed, ProviderError>> {
        let _ = task;
        Box::pin(async move {
            Err(ProviderError::new(
                self.name(),
                ProviderErrorClass::InvalidRequest,
                "this provider answers synchronously; there is nothing to poll",
            ))
        })
    }

    /// Whether the provider can call a webhook when a task ends (and [`Provider::submit`]
    /// passes the request's `callback` on).
    fn accepts_webhooks(&self) -> bool {
        false
    }

    /// Reads a webhook call: the task's id and what it reports. `secret` is the callback's
    /// (for providers that sign their calls; the URL's token has been checked already).
    fn parse_webhook(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        secret: &str,
    ) -> Result<(String, Observed), ProviderError> {
        let _ = (headers, body, secret);
        Err(ProviderError::new(
            self.name(),
            ProviderErrorClass::InvalidRequest,
            "this provider does not call webhooks",
        ))
    }

    /// Whether [`Provider::find`] can look a task up by our external id.
    fn can_find(&self) -> bool {
        false
    }

    /// Looks up the task submitted for `req` (by its external id), for a submit whose outcome
    /// is unknown. `None`: the provider has no such task, so submitting again is safe.
    fn find<'a>(&'a self, req: &'a GenerateRequest) -> BoxFuture<'a, Result<Option<TaskHandle>, ProviderError>> {
        let _ = req;
        Box::pin(async { Ok(None) })
    }
}

/// Maps a provider name (as configured) to a `'static` name for errors and metrics labels:
/// the known ones, or `other` (label sets stay bounded).
pub fn static_name(name: &str) -> &'static str {
    match name {
        "openai" => "openai",
        "gemini" => "gemini",
        "veo" => "veo",
        "kling" => "kling",
        "seedream" => "seedream",
        "seedance" => "seedance",
        "flux" => "flux",
        _ => "other",
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// reqwest could not build a client (TLS backend).
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// Credentials are missing.
    #[error("provider {provider}: {what} not configured")]
    MissingCredentials {
        /// The provider.
        provider: String,
        /// Which credential.
        what: &'static str,
    },
}

/// The clients a worker has: one per configured (provider, region).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    clients: BTreeMap<(String, String), Arc<dyn Provider>>,
    configs: BTreeMap<String, ProviderConfig>,
}

impl Registry {
    /// Builds a client for every provider and region in `cfg`. Providers whose credentials are
    /// missing are left out (with a warning): their jobs fail as `unauthorized`.
    pub fn build(cfg: &ProvidersConfig) -> Result<Self, BuildError> {
        let mut clients: BTreeMap<(String, String), Arc<dyn Provider>> = BTreeMap::new();
        for (name, p) in &cfg.providers {
            for (region, base) in &p.regions {
                let made: Result<Arc<dyn Provider>, BuildError> = match p.api {
                    Api::Openai => openai::OpenAi::new(static_name(name), base, p).map(|c| Arc::new(c) as _),
                    Api::Bfl => bfl::Bfl::new(static_name(name), base, p).map(|c| Arc::new(c) as _),
                    Api::Kling => kling::Kling::new(static_name(name), base, p).map(|c| Arc::new(c) as _),
                    Api::Ark => ark::Ark::new(static_name(name), base, p).map(|c| Arc::new(c) as _),
                    Api::Google => google::Google::new(static_name(name), base, p).map(|c| Arc::new(c) as _),
                };
                match made {
                    Ok(c) => {
                        clients.insert((name.clone(), region.clone()), c);
                    }
                    Err(e @ BuildError::MissingCredentials { .. }) => {
                        tracing::warn!(provider = %name, region = %region, error = %e, "provider left out");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Self {
            clients,
            configs: cfg.providers.clone(),
        })
    }

    /// The client for `provider` in one of `regions` (in order; any region when empty).
    pub fn client(&self, provider: &str, regions: &[String]) -> Option<(String, Arc<dyn Provider>)> {
        let in_region = |r: &str| self.clients.get(&(provider.to_owned(), r.to_owned()));
        if regions.is_empty() {
            return self
                .clients
                .iter()
                .find(|((p, _), _)| p == provider)
                .map(|((_, r), c)| (r.clone(), c.clone()));
        }
        regions
            .iter()
            .find_map(|r| in_region(r).map(|c| (r.clone(), c.clone())))
    }

    /// Any client of `provider` (webhook calls are read the same in every region).
    pub fn any_client(&self, provider: &str) -> Option<Arc<dyn Provider>> {
        self.clients
            .iter()
            .find(|((p, _), _)| p == provider)
            .map(|(_, c)| c.clone())
    }

    /// The configuration of `provider`.
    pub fn config(&self, provider: &str) -> Option<&ProviderConfig> {
        self.configs.get(provider)
    }

    /// Replaces every client with `wrap(provider, region, client)` (a metering decorator).
    pub fn wrap(&mut self, wrap: impl Fn(&str, &str, Arc<dyn Provider>) -> Arc<dyn Provider>) {
        for ((p, r), c) in self.clients.iter_mut() {
            *c = wrap(p, r, c.clone());
        }
    }

    /// Configured (provider, region) pairs.
    pub fn endpoints(&self) -> impl Iterator<Item = (&str, &str)> {
        self.clients.keys().map(|(p, r)| (p.as_str(), r.as_str()))
    }
}
