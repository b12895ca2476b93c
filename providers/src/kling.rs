//! Kling (Kuaishou): a JWT (HS256, `iss` = access key, `exp` = now + 30 min, `nbf` = now − 5 s)
//! signed with the secret key and re-signed five minutes before it expires; tasks submitted to
//! `/v1/videos/text2video`, `/v1/videos/image2video` or `/v1/images/generations` and polled at
//! `…/{task_id}`. Every submit carries our `external_task_id`, so a submit whose outcome is
//! unknown is looked up (`GET …?external_task_id=`; our reading of Kling's "query by task_id
//! or external_task_id", which the mock follows) instead of paid for twice.
//!
//! Kling overloads 429: code 1102 (resource pack used up) and 1101 (arrears) are quota, 1302
//! is rate, 1303 is the account's concurrency. Switch on `code`, never on the status alone.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::config::ProviderConfig;
use crate::error::{ProviderError, ProviderErrorClass, class_for_status};
use crate::http::{self, Reply};
use crate::task::{Artifact, GenerateRequest, Generated, Mode, Observed, Submitted, TaskHandle};
use crate::{BuildError, Provider};

const MAX_REPLY: usize = 1 << 20;
/// Token lifetime.
const TOKEN_TTL: Duration = Duration::from_secs(1800);
/// Re-sign when less than this is left.
const RESIGN_BEFORE: Duration = Duration::from_secs(300);

/// Signs Kling's HS256 tokens.
pub struct Signer {
    access_key: String,
    secret_key: String,
    cached: Mutex<Option<(String, u64)>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The access key names the account; the secret and the tokens stay out.
        f.debug_struct("Signer")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Signer {
    /// A signer for the key pair.
    pub fn new(access_key: String, secret_key: String) -> Self {
        Self {
            access_key,
            secret_key,
            cached: Mutex::new(None),
        }
    }

    /// A token signed at `now` (Unix seconds).
    pub fn sign_at(&self, now: u64) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = json!({"iss": self.access_key, "exp": now + TOKEN_TTL.as_secs(), "nbf": now.saturating_sub(5)});
        let claims = b64(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{claims}");
        let sig = hmac_sha256(self.secret_key.as_bytes(), signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&sig))
    }

    /// The current token, re-signed when it is close to expiry.
    pub fn token(&self) -> String {
        let now = now_secs();
        let mut g = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, exp)) = g.as_ref()
            && now + RESIGN_BEFORE.as_secs() < *exp
        {
            return t.clone();
        }
        let t = self.sign_at(now);
        *g = Some((t.clone(), now + TOKEN_TTL.as_secs()));
        t
    }

    /// Forgets the cached token (after Kling says it expired or is not yet valid).
    pub fn reset(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// HMAC-SHA256.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Checks a Kling token against the key pair at `now`; the mock uses it. Returns the reason
/// it is refused, as Kling's 401 code: 1002 invalid, 1003 not yet valid, 1004 expired.
pub fn verify_token(token: &str, access_key: &str, secret_key: &str, now: u64) -> Result<(), u32> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(1002);
    };
    let expect = hmac_sha256(secret_key.as_bytes(), format!("{h}.{c}").as_bytes());
    let dec = |x: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(x)
            .map_err(|_| 1002u32)
    };
    if dec(s)? != expect {
        return Err(1002);
    }
    let header: serde_json::Value = serde_json::from_slice(&dec(h)?).map_err(|_| 1002u32)?;
    if header["alg"] != "HS256" {
        return Err(1002);
    }
    let claims: serde_json::Value = serde_json::from_slice(&dec(c)?).map_err(|_| 1002u32)?;
    if claims["iss"] != access_key {
        return Err(1002);
    }
    let (Some(exp), Some(nbf)) = (claims["exp"].as_u64(), claims["nbf"].as_u64()) else {
        return Err(1002);
    };
    if now < nbf {
        return Err(1003);
    }
    if now >= exp {
        return Err(1004);
    }
    Ok(())
}

/// The client for one region.
#[derive(Debug)]
pub struct Kling {
    name: &'static str,
    base: String,
    signer: Signer,
    http: reqwest::Client,
    cfg: ProviderConfig,
}

impl Kling {
    /// A client for `base` with `cfg`'s access and secret keys.
    pub fn new(name: &'static str, base: &str, cfg: &ProviderConfig) -> Result<Self, BuildError> {
        let missing = |what| BuildError::MissingCredentials {
            provider: name.into(),
            what,
        };
        let ak = cfg.credentials.access_key().ok_or_else(|| missing("access key"))?;
        let sk = cfg.credentials.secret_key().ok_or_else(|| missing("secret key"))?;
        Ok(Self {
            name,
            base: base.trim_end_matches('/').to_owned(),
            signer: Signer::new(ak, sk),
            http: http::client(Duration::from_secs(10))?,
            cfg: cfg.clone(),
        })
    }

    /// The endpoint family for a request.
    fn family(req: &GenerateRequest) -> &'static str {
        match (req.video, req.reference_images.is_empty()) {
            (true, true) => "videos/text2video",
            (true, false) => "videos/image2video",
            (false, _) => "images/generations",
        }
    }

    /// Sends with the current token; once more with a fresh one if Kling says it expired.
    async fn call(&self, build: impl Fn(&str) -> reqwest::RequestBuilder) -> Result<Envelope, ProviderError> {
        for fresh in [false, true] {
            if fresh {
                self.signer.reset();
            }
            let r = http::send(
                self.name,
                build(&self.signer.token()).timeout(self.cfg.request_timeout()),
                MAX_REPLY,
            )
            .await?;
            let env: Option<Envelope> = serde_json::from_slice(&r.body).ok();
            match env {
                Some(e) if r.ok() && e.code == 0 => return Ok(e),
                Some(e) if matches!(e.code, 1003 | 1004) && !fresh => continue,
                _ => return Err(classify(self.name, &r)),
            }
        }
        Err(ProviderError::new(
            self.name,
            ProviderErrorClass::Unauthorized,
            "token refused twice",
        ))
    }
}

#[derive(Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: Option<TaskData>,
}

#[derive(Deserialize)]
struct TaskData {
    task_id: String,
    #[serde(default)]
    task_status: String,
    #[serde(default)]
    task_status_msg: Option<String>,
    #[serde(default)]
    task_result: Option<TaskResult>,
    #[serde(default)]
    final_unit_deduction: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct TaskResult {
    #[serde(default)]
    videos: Vec<Output>,
    #[serde(default)]
    images: Vec<Output>,
}

#[derive(Deserialize)]
struct Output {
    url: String,
    #[serde(default)]
    duration: Option<serde_json::Value>,
}

/// The class of a Kling business code.
pub fn class_for_code(code: i64, status: u16, retry_after: Option<Duration>) -> ProviderErrorClass {
    match code {
        1000..=1004 | 1103 | 1304 => ProviderErrorClass::Unauthorized,
        1101 | 1102 => ProviderErrorClass::QuotaExhausted,
        1302 => ProviderErrorClass::RateLimited { retry_after },
        1303 => ProviderErrorClass::ConcurrencyFull,
        1300 | 1301 => ProviderErrorClass::Moderated,
        1200..=1299 => ProviderErrorClass::InvalidRequest,
        5000..=5999 => ProviderErrorClass::Transient,
        _ => class_for_status(status, retry_after),
    }
}

/// Classifies an error reply by its business code.
pub fn classify(provider: &'static str, r: &Reply) -> ProviderError {
    match serde_json::from_slice::<Envelope>(&r.body) {
        Ok(e) => ProviderError::new(provider, class_for_code(e.code, r.status, r.retry_after), e.message)
            .code(e.code.to_string())
            .status(r.status),
        Err(_) => ProviderError::new(
            provider,
            class_for_status(r.status, r.retry_after),
            format!("HTTP {}", r.status),
        )
        .status(r.status),
    }
}

fn observe(provider: &'static str, d: TaskData) -> Observed {
    match d.task_status.as_str() {
        "submitted" => Observed::Queued,
        "processing" => Observed::Running(None),
        "succeed" => {
            let res = d.task_result.unwrap_or_default();
            let seconds: f64 = res
                .videos
                .iter()
                .filter_map(|v| match &v.duration {
                    Some(serde_json::Value::String(s)) => s.parse::<f64>().ok(),
                    Some(serde_json::Value::Number(n)) => n.as_f64(),
                    _ => None,
                })
                .sum();
            let outputs: Vec<Artifact> = res
                .videos
                .into_iter()
                .chain(res.images)
                .map(|o| Artifact::Url { url: o.url })
                .collect();
            if outputs.is_empty() {
                return Observed::Failed(
                    ProviderError::new(provider, ProviderErrorClass::Transient, "succeeded without outputs")
                        .code("empty_result"),
                );
            }
            let units = d.final_unit_deduction.as_ref().map(|u| match u {
                serde_json::Value::String(s) => format!("{s} units"),
                other => format!("{other} units"),
            });
            Observed::Succeeded(Generated {
                usage: gantry_core::Usage {
                    outputs: Some(outputs.len() as u32),
                    seconds: (seconds > 0.0).then(|| seconds.ceil() as u32),
                    provider_units: units,
                    ..Default::default()
                },
                artifacts: outputs,
            })
        }
        "failed" => {
            let msg = d.task_status_msg.unwrap_or_else(|| "failed".into());
            let lower = msg.to_ascii_lowercase();
            let class = if lower.contains("risk") || lower.contains("sensitive") || lower.contains("moderat") {
                ProviderErrorClass::Moderated
            } else {
                ProviderErrorClass::Transient
            };
            Observed::Failed(ProviderError::new(provider, class, msg).code("task_failed"))
        }
        other => Observed::Failed(
            ProviderError::new(
                provider,
                ProviderErrorClass::Transient,
                format!("unknown task status {other:?}"),
            )
            .code("unknown_status"),
        ),
    }
}

impl Provider for Kling {
    fn name(&self) -> &'static str {
        self.name
    }

    fn mode(&self) -> Mode {
        Mode::Poll
    }

    fn submit<'a>(&'a self, req: &'a GenerateRequest) -> BoxFuture<'a, Result<Submitted, ProviderError>> {
        Box::pin(async move {
            let family = Self::family(req);
            // "kling-v3/pro" → model_name kling-v3, mode pro.
            let (model, mode) = match self.cfg.model_id(&req.model).split_once('/') {
                Some((m, mode)) => (m.to_owned(), mode.to_owned()),
                None => (self.cfg.model_id(&req.model).to_owned(), "std".to_owned()),
            };
            let shape = req.shape(self.name, crate::Api::Kling)?;
            let aspect = match (req.width, req.height) {
                (Some(w), Some(h)) if w > h => "16:9",
                (Some(w), Some(h)) if w < h => "9:16",
                _ => "1:1",
            };
            let mut body = json!({
                "model_name": model,
                "prompt": req.prompt,
                "aspect_ratio": aspect,
                "external_task_id": req.external_id,
            });
            if let Some(n) = &req.negative_prompt {
                body["negative_prompt"] = n.as_str().into();
            }
            if let Some(cb) = &req.callback {
                body["callback_url"] = cb.url.as_str().into();
            }
            if req.video {
                body["mode"] = mode.into();
                body["duration"] = shape.duration_secs.unwrap_or_default().to_string().into();
                if let Some(img) = req.reference_images.first() {
                    // Raw base64 without a data: prefix, or a URL.
                    body["image"] = crate::media::url_or_raw_base64(img).into();
                }
            } else {
                body["n"] = shape.samples.into();
            }
            let url = format!("{}/v1/{family}", self.base);
            let env = self
                .call(|token| self.http.post(&url).bearer_auth(token).json(&body))
                .await?;
            let d = env.data.ok_or_else(|| {
                ProviderError::new(self.name, ProviderErrorClass::Transient, "no task in the reply")
                    .code("malformed_response")
            })?;
            Ok(Submitted::Accepted(TaskHandle {
                id: d.task_id,
                poll_url: None,
                family: Some(family.into()),
            }))
        })
    }

    fn poll<'a>(&'a self, task: &'a TaskHandle) -> BoxFuture<'a, Result<Observed, ProviderError>> {
        Box::pin(async move {
            let family = task.family.as_deref().unwrap_or("videos/text2video");
            let url = format!("{}/v1/{family}/{}", self.base, task.id);
            let env = self.call(|token| self.http.get(&url).bearer_auth(token)).await?;
            let d = env.data.ok_or_else(|| {
                ProviderError::new(self.name, ProviderErrorClass::Transient, "no task in the reply")
                    .code("malformed_response")
            })?;
            Ok(observe(self.name, d))
        })
    }

    fn can_find(&self) -> bool {
        true
    }

    fn accepts_webhooks(&self) -> bool {
        true
    }

    /// Kling's callback body is the task object its query returns; it is not signed (the
    /// callback URL's token authenticates it).
    fn parse_webhook(
        &self,
        _headers: &reqwest::header::HeaderMap,
        body: &[u8],
        _secret: &str,
    ) -> Result<(String, Observed), ProviderError> {
        let d: TaskData = serde_json::from_slice(body).map_err(|e| {
            ProviderError::new(
                self.name,
                ProviderErrorClass::InvalidRequest,
                format!("callback body: {e}"),
            )
        })?;
        Ok((d.task_id.clone(), observe(self.name, d)))
    }

    fn find<'a>(&'a self, req: &'a GenerateRequest) -> BoxFuture<'a, Result<Option<TaskHandle>, ProviderError>> {
        Box::pin(async move {
            let family = Self::family(req);
            let url = reqwest::Url::parse_with_params(
                &format!("{}/v1/{family}", self.base),
                &[("external_task_id", req.external_id.as_str())],
            )
            .map_err(|e| ProviderError::new(self.name, ProviderErrorClass::InvalidRequest, e.to_string()))?;
            let found = self.call(|token| self.http.get(url.clone()).bearer_auth(token)).await;
            match found {
                Ok(Envelope { data: Some(d), .. }) => Ok(Some(TaskHandle {
                    id: d.task_id,
                    poll_url: None,
                    family: Some(family.into()),
                })),
                Ok(_) => Ok(None),
                Err(e) if e.status == Some(404) || e.code.as_deref() == Some("1203") => Ok(None),
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_expire() {
        let s = Signer::new("ak".into(), "sk".into());
        let t = s.sign_at(1_000_000);
        assert_eq!(verify_token(&t, "ak", "sk", 1_000_000), Ok(()));
        assert_eq!(verify_token(&t, "ak", "other", 1_000_000), Err(1002));
        assert_eq!(verify_token(&t, "zz", "sk", 1_000_000), Err(1002));
        assert_eq!(verify_token(&t, "ak", "sk", 1_000_000 - 10), Err(1003));
        assert_eq!(verify_token(&t, "ak", "sk", 1_000_000 + 1800), Err(1004));
        assert_eq!(verify_token("a.b", "ak", "sk", 0), Err(1002));
        let cached = s.token();
        assert_eq!(s.token(), cached, "reused until close to expiry");
    }

    #[test]
    fn codes_decide_not_statuses() {
        let ra = Some(Duration::from_secs(1));
        assert_eq!(class_for_code(1102, 429, ra), ProviderErrorClass::QuotaExhausted);
        assert_eq!(
            class_for_code(1302, 429, ra),
            ProviderErrorClass::RateLimited { retry_after: ra }
        );
        assert_eq!(class_for_code(1303, 429, ra), ProviderErrorClass::ConcurrencyFull);
        assert_eq!(class_for_code(1301, 400, None), ProviderErrorClass::Moderated);
        assert_eq!(class_for_code(1201, 400, None), ProviderErrorClass::InvalidRequest);
        assert_eq!(class_for_code(5001, 503, None), ProviderErrorClass::Transient);
    }
}
