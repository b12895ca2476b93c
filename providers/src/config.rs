//! Provider configuration: where each provider's API is per region, which credentials to use,
//! our model names mapped to the provider's ids, timeouts, polling pace and the account's
//! concurrency cap. Endpoints, keys, regions and model ids are configuration, never code.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::task::PollSchedule;

/// Every provider the worker can call.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    /// By provider name (`openai`, `gemini`, `kling`, `seedream`, `flux`, `veo`).
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Where a job goes while its provider's circuit is open, by output class, in order of
    /// preference (each still only within the job's consented regions).
    #[serde(default)]
    pub fallbacks: Fallbacks,
}

/// Fallback targets by output class.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Fallbacks {
    /// For image models.
    #[serde(default)]
    pub image: Vec<Target>,
    /// For video models.
    #[serde(default)]
    pub video: Vec<Target>,
}

/// A provider and one of its models (our name).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The provider.
    pub provider: String,
    /// Our model name.
    pub model: String,
}

/// Which API a configured provider speaks.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// OpenAI Images (`/v1/images/generations`).
    Openai,
    /// Gemini `generateContent`, Imagen `predict` and Veo long-running operations.
    Google,
    /// Kling (JWT; text2video, image2video, images).
    Kling,
    /// BytePlus ModelArk: Seedream images, Seedance video tasks.
    Ark,
    /// Black Forest Labs Flux (submit, poll `polling_url`).
    Bfl,
}

/// One provider.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The API it speaks.
    pub api: Api,
    /// Base URL per region (a jurisdiction code such as `US`, `EU`, `SG`, `CN`).
    pub regions: BTreeMap<String, String>,
    /// Credentials.
    #[serde(default)]
    pub credentials: Credentials,
    /// Our model name → the provider's model id (unlisted names pass through unchanged).
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// Our model names that make video (the rest make images).
    #[serde(default)]
    pub video_models: Vec<String>,
    /// Time allowed for one HTTP request, in seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// First wait before polling a task, in milliseconds.
    #[serde(default = "default_poll_initial")]
    pub poll_initial_ms: u64,
    /// Longest wait between polls, in milliseconds.
    #[serde(default = "default_poll_max")]
    pub poll_max_ms: u64,
    /// Tasks the account may have in flight, fleet-wide (the provider's concurrency cap).
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Hosts a `polling_url` may point at besides the region's own (BFL: `bfl.ai`, which
    /// covers its subdomains). Our key is never sent anywhere else.
    #[serde(default)]
    pub poll_hosts: Vec<String>,
}

fn default_request_timeout() -> u64 {
    60
}
fn default_poll_initial() -> u64 {
    1000
}
fn default_poll_max() -> u64 {
    10_000
}

impl ProviderConfig {
    /// The provider's id for our model name.
    pub fn model_id<'a>(&'a self, ours: &'a str) -> &'a str {
        self.models.get(ours).map_or(ours, String::as_str)
    }

    /// Time allowed for one HTTP request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    /// How often to poll.
    pub fn poll_schedule(&self) -> PollSchedule {
        PollSchedule {
            initial: Duration::from_millis(self.poll_initial_ms.max(1)),
            max: Duration::from_millis(self.poll_max_ms.max(self.poll_initial_ms).max(1)),
        }
    }
}

/// `<redacted>` for a secret that is set, for `Debug` output that may reach a log.
pub(crate) fn redacted(v: &Option<String>) -> &'static str {
    if v.is_some() { "<redacted>" } else { "<none>" }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The variables' names, never the values.
        f.debug_struct("Credentials")
            .field("api_key_env", &self.api_key_env)
            .field("api_key_value", &redacted(&self.api_key_value))
            .field("access_key_env", &self.access_key_env)
            .field("access_key_value", &redacted(&self.access_key_value))
            .field("secret_key_env", &self.secret_key_env)
            .field("secret_key_value", &redacted(&self.secret_key_value))
            .finish()
    }
}

/// Where a provider's secrets come from. Values are read from the environment variables named
/// here (so config files hold no secrets); `*_value` fields exist for mocks and tests.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The API key itself (mocks and tests only).
    #[serde(default)]
    pub api_key_value: Option<String>,
    /// Environment variable holding Kling's access key.
    #[serde(default)]
    pub access_key_env: Option<String>,
    /// Kling's access key itself (mocks and tests only).
    #[serde(default)]
    pub access_key_value: Option<String>,
    /// Environment variable holding Kling's secret key.
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// Kling's secret key itself (mocks and tests only).
    #[serde(default)]
    pub secret_key_value: Option<String>,
}

fn resolve(value: &Option<String>, env: &Option<String>) -> Option<String> {
    value
        .clone()
        .or_else(|| env.as_ref().and_then(|e| std::env::var(e).ok()))
        .filter(|v| !v.is_empty())
}

impl Credentials {
    /// The API key, if configured.
    pub fn api_key(&self) -> Option<String> {
        resolve(&self.api_key_value, &self.api_key_env)
    }
    /// Kling's access key, if configured.
    pub fn access_key(&self) -> Option<String> {
        resolve(&self.access_key_value, &self.access_key_env)
    }
    /// Kling's secret key, if configured.
    pub fn secret_key(&self) -> Option<String> {
        resolve(&self.secret_key_value, &self.secret_key_env)
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML, or not the expected shape.
    #[error("provider configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A base URL is not http(s).
    #[error("provider {provider} region {region}: base URL must start with http:// or https://")]
    BadUrl {
        /// The provider.
        provider: String,
        /// The region.
        region: String,
    },
}

impl ProvidersConfig {
    /// Parses and checks a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text)?;
        for (name, p) in &cfg.providers {
            for (region, url) in &p.regions {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::BadUrl {
                        provider: name.clone(),
                        region: region.clone(),
                    });
                }
            }
        }
        Ok(cfg)
    }

    /// The embedded default: the real endpoints, keys from the usual environment variables.
    pub fn production() -> Self {
        // The embedded document is checked by a unit test; an empty configuration is the
        // only possible fallback and would be caught there first.
        Self::from_toml(include_str!("providers.toml")).unwrap_or_default()
    }

    /// Every provider pointed at the mock server at `base` (`http://127.0.0.1:PORT`): each
    /// region's URL becomes `base/{provider}/{region}`, with the mock's credentials.
    pub fn mocked(mut self, base: &str) -> Self {
        let base = base.trim_end_matches('/');
        for (name, p) in &mut self.providers {
            for (region, url) in &mut p.regions {
                *url = format!("{base}/{name}/{}", region.to_ascii_lowercase());
            }
            p.credentials = Credentials {
                api_key_value: Some(crate::MOCK_API_KEY.into()),
                access_key_value: Some(crate::MOCK_ACCESS_KEY.into()),
                secret_key_value: Some(crate::MOCK_SECRET_KEY.into()),
                ..Default::default()
            };
            p.poll_hosts.clear();
            p.poll_initial_ms = p.poll_initial_ms.min(100);
            p.poll_max_ms = p.poll_max_ms.min(500);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_configuration_parses() {
        let cfg = ProvidersConfig::from_toml(include_str!("providers.toml")).expect("providers.toml");
        for p in ["openai", "gemini", "veo", "kling", "seedream", "flux"] {
            assert!(cfg.providers.contains_key(p), "{p}");
        }
        let m = cfg.mocked("http://127.0.0.1:9");
        assert_eq!(m.providers["kling"].regions["SG"], "http://127.0.0.1:9/kling/sg");
        assert_eq!(
            m.providers["kling"].credentials.api_key().as_deref(),
            Some(crate::MOCK_API_KEY)
        );
    }

    #[test]
    fn bad_urls_are_refused() {
        let e = ProvidersConfig::from_toml("[providers.x]\napi = \"bfl\"\nregions = { EU = \"ftp://x\" }\n")
            .expect_err("ftp");
        assert!(e.to_string().contains("base URL"), "{e}");
    }

    #[test]
    fn debug_output_never_holds_a_secret() {
        let creds = Credentials {
            api_key_env: Some("OPENAI_API_KEY".into()),
            api_key_value: Some("sk-live-0123456789".into()),
            secret_key_value: Some("kling-secret-abcdef".into()),
            ..Default::default()
        };
        let ep = crate::http::Endpoint {
            name: "openai",
            base: "https://api.openai.com".into(),
            key: "sk-live-0123456789".into(),
            http: reqwest::Client::new(),
            cfg: ProviderConfig {
                credentials: creds.clone(),
                ..ProvidersConfig::production().providers["openai"].clone()
            },
        };
        let signer = crate::kling::Signer::new("ak-visible".into(), "kling-secret-abcdef".into());
        let req = crate::GenerateRequest {
            external_id: "j-1".into(),
            model: "m".into(),
            prompt: "a private prompt".into(),
            negative_prompt: None,
            reference_images: vec!["https://x/y.png?X-Amz-Signature=abc".into()],
            width: None,
            height: None,
            duration_secs: None,
            samples: 1,
            video: false,
            callback: Some(crate::task::Callback {
                url: "https://w/hook?token=t0k3n".into(),
                secret: "whsec-zzz".into(),
            }),
        };
        for d in [
            format!("{creds:?}"),
            format!("{ep:?}"),
            format!("{signer:?}"),
            format!("{req:?}"),
        ] {
            for secret in [
                "sk-live-0123456789",
                "kling-secret-abcdef",
                "a private prompt",
                "X-Amz-Signature",
                "t0k3n",
                "whsec",
            ] {
                assert!(!d.contains(secret), "{secret} in {d}");
            }
        }
        assert!(
            format!("{creds:?}").contains("OPENAI_API_KEY"),
            "names of variables are fine"
        );
    }
}
