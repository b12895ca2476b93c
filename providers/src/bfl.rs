//! Black Forest Labs Flux: `POST /v1/{model}` returns `{id, polling_url}`; poll that URL (the
//! global and regional hosts require it) until `Ready` with `result.sample`, a signed URL that
//! lives 10 minutes. Moderation arrives as a poll status (`Request Moderated`, `Content
//! Moderated`), not an HTTP error. 402 means the account is out of credits.
//!
//! Our key goes only to the region's host or a configured `poll_hosts` domain: a `polling_url`
//! elsewhere is refused.

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::config::ProviderConfig;
use crate::error::{ProviderError, ProviderErrorClass, class_for_status};
use crate::http::{self, Endpoint, Reply};
use crate::task::{Artifact, GenerateRequest, Generated, Mode, Observed, Submitted, TaskHandle};
use crate::{BuildError, Provider};

const MAX_REPLY: usize = 1 << 20;

/// The client for one region.
#[derive(Debug)]
pub struct Bfl {
    ep: Endpoint,
}

impl Bfl {
    /// A client for `base` with `cfg`'s key.
    pub fn new(name: &'static str, base: &str, cfg: &ProviderConfig) -> Result<Self, BuildError> {
        Ok(Self {
            ep: Endpoint::new(name, base, cfg)?,
        })
    }

    /// Whether `url` may receive our key.
    fn trusted(&self, url: &str) -> bool {
        let host = |u: &str| {
            reqwest::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
        };
        let (Some(h), Some(base)) = (host(url), host(&self.ep.base)) else {
            return false;
        };
        h == base
            || self
                .ep
                .cfg
                .poll_hosts
                .iter()
                .any(|d| h == *d || h.ends_with(&format!(".{d}")))
    }
}

#[derive(Deserialize)]
struct SubmitReply {
    id: String,
    #[serde(default)]
    polling_url: Option<String>,
}

#[derive(Deserialize)]
struct PollReply {
    status: String,
    #[serde(default)]
    result: Option<PollResult>,
    /// How far along a pending task is: a fraction (0–1), or null.
    #[serde(default)]
    progress: Option<f64>,
}

#[derive(Deserialize)]
struct PollResult {
    #[serde(default)]
    sample: Option<String>,
}

/// Classifies an error reply: `{"detail": ...}` or `{"error": ..., "retry_after": N}`.
pub fn classify(provider: &'static str, r: &Reply) -> ProviderError {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let body_retry = v["retry_after"].as_f64().filter(|s| s.is_finite() && *s >= 0.0);
    let retry_after = r
        .retry_after
        .or(body_retry.map(|s| std::time::Duration::from_secs_f64(s.min(3600.0))));
    let message = v["detail"]
        .as_str()
        .or(v["error"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {}", r.status));
    let mut e = ProviderError::new(provider, class_for_status(r.status, retry_after), message).status(r.status);
    if let Some(c) = v["error"].as_str() {
        e = e.code(c);
    }
    e
}

/// A poll's `progress` as a percent: BFL reports a fraction; a value over 1 is taken as a
/// percent already; anything else (negative, not finite) as unknown.
fn percent(progress: Option<f64>) -> Option<u8> {
    let p = progress.filter(|p| p.is_finite() && *p >= 0.0)?;
    let p = if p <= 1.0 { p * 100.0 } else { p };
    Some(p.min(100.0).round() as u8)
}

/// Maps a poll status (and, while pending, its progress).
pub fn observe(provider: &'static str, status: &str, sample: Option<String>, progress: Option<f64>) -> Observed {
    match status {
        "Pending" | "Queued" => Observed::Running(percent(progress)),
        "Ready" => match sample {
            Some(url) => Observed::Succeeded(Generated {
                artifacts: vec![Artifact::Url { url }],
                usage: gantry_core::Usage {
                    outputs: Some(1),
                    ..Default::default()
                },
            }),
            None => Observed::Failed(
                ProviderError::new(provider, ProviderErrorClass::Transient, "Ready without a sample")
                    .code("empty_result"),
            ),
        },
        "Request Moderated" | "Content Moderated" => Observed::Failed(
            ProviderError::new(provider, ProviderErrorClass::Moderated, status.to_owned()).code(status.to_owned()),
        ),
        "Task not found" => Observed::Failed(
            ProviderError::new(provider, ProviderErrorClass::Transient, "the task is gone").code("task_not_found"),
        ),
        other => Observed::Failed(
            ProviderError::new(provider, ProviderErrorClass::Transient, format!("task ended: {other}"))
                .code(other.to_owned()),
        ),
    }
}

impl Provider for Bfl {
    fn name(&self) -> &'static str {
        self.ep.name
    }

    fn mode(&self) -> Mode {
        Mode::Poll
    }

    fn submit<'a>(&'a self, req: &'a GenerateRequest) -> BoxFuture<'a, Result<Submitted, ProviderError>> {
        Box::pin(async move {
            let mut body = json!({"prompt": req.prompt, "output_format": "png"});
            // Width and height as the shape snaps them (multiples of 16, at least 64).
            if let Some((w, h)) = req.shape(self.name(), crate::Api::Bfl)?.size {
                body["width"] = w.into();
                body["height"] = h.into();
            }
            if let Some(cb) = &req.callback {
                body["webhook_url"] = cb.url.as_str().into();
                body["webhook_secret"] = cb.secret.as_str().into();
            }
            for (i, img) in req.reference_images.iter().take(8).enumerate() {
                let key = if i == 0 {
                    "input_image".to_owned()
                } else {
                    format!("input_image_{}", i + 1)
                };
                body[key] = crate::media::url_or_raw_base64(img).into();
            }
            let model = self.ep.cfg.model_id(&req.model);
            let r = http::send(
                self.ep.name,
                self.ep
                    .http
                    .post(format!("{}/v1/{model}", self.ep.base))
                    .header("x-key", &self.ep.key)
                    .timeout(self.ep.cfg.request_timeout())
                    .json(&body),
                MAX_REPLY,
            )
            .await?;
            if !r.ok() {
                return Err(classify(self.ep.name, &r));
            }
            let s: SubmitReply = r.json(self.ep.name)?;
            let poll_url = s
                .polling_url
                .unwrap_or_else(|| format!("{}/v1/get_result?id={}", self.ep.base, s.id));
            if !self.trusted(&poll_url) {
                return Err(ProviderError::new(
                    self.ep.name,
                    ProviderErrorClass::Transient,
                    "polling_url points at a host we do not send keys to",
                )
                .code("untrusted_polling_url"));
            }
            Ok(Submitted::Accepted(TaskHandle {
                id: s.id,
                poll_url: Some(poll_url),
                family: None,
            }))
        })
    }

    fn accepts_webhooks(&self) -> bool {
        true
    }

    /// BFL signs the body: `X-BFL-Signature: sha256=<hex HMAC-SHA256(webhook_secret, body)>`.
    fn parse_webhook(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        secret: &str,
    ) -> Result<(String, Observed), ProviderError> {
        let sig = headers
            .get("x-bfl-signature")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("sha256="))
            .unwrap_or_default();
        let expected: String = crate::kling::hmac_sha256(secret.as_bytes(), body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if sig.len() != expected.len() || !sig.eq_ignore_ascii_case(&expected) {
            return Err(
                ProviderError::new(self.ep.name, ProviderErrorClass::InvalidRequest, "bad X-BFL-Signature")
                    .code("bad_signature"),
            );
        }
        #[derive(Deserialize)]
        struct Call {
            id: String,
            status: String,
            #[serde(default)]
            result: Option<PollResult>,
        }
        let c: Call = serde_json::from_slice(body).map_err(|e| {
            ProviderError::new(
                self.ep.name,
                ProviderErrorClass::InvalidRequest,
                format!("webhook body: {e}"),
            )
        })?;
        let seen = observe(self.ep.name, &c.status, c.result.and_then(|r| r.sample), None);
        Ok((c.id, seen))
    }

    fn poll<'a>(&'a self, task: &'a TaskHandle) -> BoxFuture<'a, Result<Observed, ProviderError>> {
        Box::pin(async move {
            let url = task
                .poll_url
                .clone()
                .unwrap_or_else(|| format!("{}/v1/get_result?id={}", self.ep.base, task.id));
            if !self.trusted(&url) {
                return Err(ProviderError::new(
                    self.ep.name,
                    ProviderErrorClass::InvalidRequest,
                    "untrusted polling_url",
                )
                .code("untrusted_polling_url"));
            }
            let r = http::send(
                self.ep.name,
                self.ep
                    .http
                    .get(url)
                    .header("x-key", &self.ep.key)
                    .timeout(self.ep.cfg.request_timeout()),
                MAX_REPLY,
            )
            .await?;
            if !r.ok() {
                return Err(classify(self.ep.name, &r));
            }
            let p: PollReply = r.json(self.ep.name)?;
            Ok(observe(
                self.ep.name,
                &p.status,
                p.result.and_then(|r| r.sample),
                p.progress,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskState;

    /// A client for the EU host that also trusts `*.bfl.ai` for polling.
    fn client() -> Bfl {
        let cfg = ProviderConfig {
            api: crate::Api::Bfl,
            regions: Default::default(),
            credentials: crate::config::Credentials {
                api_key_value: Some("k".into()),
                ..Default::default()
            },
            models: Default::default(),
            video_models: vec![],
            request_timeout_secs: 5,
            poll_initial_ms: 10,
            poll_max_ms: 10,
            max_in_flight: None,
            poll_hosts: vec!["bfl.ai".into()],
        };
        Bfl::new("flux", "https://api.eu.bfl.ai", &cfg).expect("client")
    }

    #[test]
    fn statuses_map_onto_the_state_machine() {
        assert_eq!(observe("flux", "Pending", None, None).state(), TaskState::Running);
        assert_eq!(
            observe("flux", "Pending", None, Some(0.42)),
            Observed::Running(Some(42))
        );
        assert_eq!(
            observe("flux", "Pending", None, Some(73.0)),
            Observed::Running(Some(73))
        );
        assert_eq!(
            observe("flux", "Pending", None, Some(1e9)),
            Observed::Running(Some(100))
        );
        assert_eq!(observe("flux", "Pending", None, Some(-1.0)), Observed::Running(None));
        assert_eq!(
            observe("flux", "Pending", None, Some(f64::NAN)),
            Observed::Running(None)
        );
        assert_eq!(
            observe("flux", "Ready", Some("u".into()), None).state(),
            TaskState::Succeeded
        );
        assert_eq!(
            observe("flux", "Content Moderated", None, None).state(),
            TaskState::Moderated
        );
        assert_eq!(
            observe("flux", "Request Moderated", None, None).state(),
            TaskState::Moderated
        );
        assert_eq!(observe("flux", "Error", None, None).state(), TaskState::Failed);
        assert_eq!(observe("flux", "Ready", None, None).state(), TaskState::Failed);
    }

    #[test]
    fn retry_after_comes_from_the_body_too() {
        let r = Reply {
            status: 429,
            retry_after: None,
            body: br#"{"error":"rate_limit_exceeded","retry_after":5}"#.to_vec(),
        };
        let e = classify("flux", &r);
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(5)));
        let r = Reply {
            status: 402,
            retry_after: None,
            body: br#"{"detail":"Insufficient credits"}"#.to_vec(),
        };
        assert_eq!(classify("flux", &r).class, ProviderErrorClass::QuotaExhausted);
    }

    #[test]
    fn webhooks_must_carry_the_body_signature() {
        let c = client();
        let body = br#"{"id":"t1","status":"Ready","result":{"sample":"https://delivery.bfl.ai/x.png"}}"#;
        let sig: String = crate::kling::hmac_sha256(b"task-secret", body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-bfl-signature", format!("sha256={sig}").parse().expect("header"));
        let (id, seen) = c.parse_webhook(&h, body, "task-secret").expect("signed");
        assert_eq!((id.as_str(), seen.state()), ("t1", crate::TaskState::Succeeded));
        assert!(c.parse_webhook(&h, body, "other-secret").is_err(), "wrong secret");
        assert!(c.parse_webhook(&h, b"{}", "task-secret").is_err(), "body changed");
        assert!(
            c.parse_webhook(&reqwest::header::HeaderMap::new(), body, "task-secret")
                .is_err()
        );
    }

    #[test]
    fn keys_go_only_to_trusted_hosts() {
        let c = client();
        assert!(c.trusted("https://api.eu.bfl.ai/v1/get_result?id=1"));
        assert!(c.trusted("https://api.us2.bfl.ai/v1/get_result?id=1"));
        assert!(!c.trusted("https://evil-bfl.ai/x"));
        assert!(!c.trusted("https://bfl.ai.evil.com/x"));
    }
}
