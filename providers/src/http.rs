//! The HTTP plumbing every client shares: bounded response bodies, `Retry-After`, transport
//! failures classified (including "the request may have reached the provider"), JSON replies.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;

use crate::error::{ProviderError, ProviderErrorClass};

/// Largest JSON reply read (base64 images make these large).
pub const MAX_JSON_BYTES: usize = 64 << 20;

/// A reply read in full.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` (or `retry-after-ms`), if sent.
    pub retry_after: Option<Duration>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON of type `T`; a body that is not is a transient failure.
    pub fn json<T: DeserializeOwned>(&self, provider: &'static str) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ProviderError::new(
                provider,
                ProviderErrorClass::Transient,
                format!("malformed response: {e}"),
            )
            .code("malformed_response")
            .status(self.status)
        })
    }
}

/// The delay a response asks for: `retry-after-ms`, else `Retry-After` in seconds (an HTTP
/// date is read as "soon": one second).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(3600.0)));
    }
    let v = get("retry-after")?;
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s.min(3600.0))),
        Ok(_) => None,
        Err(_) => Some(Duration::from_secs(1)),
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("key", &"<redacted>")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Sends `req` and reads the reply, at most `max_bytes` of body.
///
/// A connection that could not be made is `transient`; a failure after the request may have
/// been sent (a timeout, a reset mid-reply) is `transient` with `outcome_unknown` set, so a
/// caller does not blindly submit again where it can look the task up instead.
pub async fn send(
    provider: &'static str,
    req: reqwest::RequestBuilder,
    max_bytes: usize,
) -> Result<Reply, ProviderError> {
    let mut resp = req.send().await.map_err(|e| transport(provider, e))?;
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large(provider, max_bytes).status(status));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(provider, e).status(status))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_large(provider, max_bytes).status(status));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

fn too_large(provider: &'static str, max: usize) -> ProviderError {
    ProviderError::new(
        provider,
        ProviderErrorClass::Transient,
        format!("response exceeds {max} bytes"),
    )
    .code("too_large")
}

/// Classifies a reqwest failure. The URL is left out: it may be signed.
pub fn transport(provider: &'static str, e: reqwest::Error) -> ProviderError {
    let (code, unknown) = if e.is_connect() {
        ("connect", false)
    } else if e.is_timeout() {
        ("timeout", true)
    } else if e.is_body() || e.is_decode() {
        ("broken_body", true)
    } else if e.is_builder() {
        ("bad_request_built", false)
    } else {
        ("transport", true)
    };
    let mut err = ProviderError::new(
        provider,
        ProviderErrorClass::Transient,
        format!("{code}: {}", e.without_url()),
    )
    .code(code);
    err.outcome_unknown = unknown;
    err
}

/// What every API-key client holds: its provider's name, the region's base URL, the key, an
/// HTTP client and the provider's configuration.
pub struct Endpoint {
    /// The provider's name.
    pub name: &'static str,
    /// The region's base URL, without a trailing slash.
    pub base: String,
    /// The API key.
    pub key: String,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The provider's configuration.
    pub cfg: crate::ProviderConfig,
}

impl Endpoint {
    /// An endpoint at `base` with `cfg`'s API key.
    pub fn new(name: &'static str, base: &str, cfg: &crate::ProviderConfig) -> Result<Self, crate::BuildError> {
        let key = cfg.credentials.api_key().ok_or(crate::BuildError::MissingCredentials {
            provider: name.into(),
            what: "api key",
        })?;
        Ok(Self {
            name,
            base: base.trim_end_matches('/').to_owned(),
            key,
            http: client(Duration::from_secs(10))?,
            cfg: cfg.clone(),
        })
    }
}

/// A client with the fleet's defaults: rustls, connect timeout, no redirects to other hosts
/// carrying our keys (redirects are not followed at all: providers do not use them for APIs).
pub fn client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2026 07:28:00 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
        h.insert("retry-after", HeaderValue::from_static("-4"));
        assert_eq!(retry_after(&h), None);
    }
}
