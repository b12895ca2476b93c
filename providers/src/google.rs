//! Google's Gemini API: Gemini image models (`:generateContent`, image parts inline as base64;
//! `finishReason: IMAGE_SAFETY` or no image part means refused), Imagen (`:predict`,
//! `predictions[].bytesBase64Encoded`, `raiFilteredReason`) and Veo (`:predictLongRunning`, an
//! operation polled until `done`, videos downloaded from their file URI with our key, which is
//! why the client downloads them itself). 429 `RESOURCE_EXHAUSTED` carries
//! `google.rpc.RetryInfo{retryDelay}` in the body; a per-day quota stays exhausted until reset.

use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::config::ProviderConfig;
use crate::error::{ProviderError, ProviderErrorClass, class_for_status};
use crate::http::{self, Endpoint, MAX_JSON_BYTES, Reply};
use crate::task::{Artifact, GenerateRequest, Generated, Mode, Observed, Submitted, TaskHandle};
use crate::{BuildError, Provider};

/// Largest video downloaded.
const MAX_VIDEO: usize = 256 << 20;

/// The client for one region.
#[derive(Debug)]
pub struct Google {
    ep: Endpoint,
}

/// Parses a protobuf duration (`"31s"`, `"1.5s"`).
pub fn parse_delay(s: &str) -> Option<Duration> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Classifies an error reply (`{error:{code,message,status,details}}`).
pub fn classify(provider: &'static str, r: &Reply) -> ProviderError {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let err = &v["error"];
    let details = err["details"].as_array().cloned().unwrap_or_default();
    let at_type = |d: &Value, t: &str| d["@type"].as_str().is_some_and(|x| x.ends_with(t));
    let retry_info = details
        .iter()
        .find(|d| at_type(d, "google.rpc.RetryInfo"))
        .and_then(|d| d["retryDelay"].as_str())
        .and_then(parse_delay);
    let daily = details
        .iter()
        .filter(|d| at_type(d, "google.rpc.QuotaFailure"))
        .any(|d| {
            d["violations"].as_array().is_some_and(|vs| {
                vs.iter().any(|v| {
                    ["quotaId", "quotaMetric"]
                        .iter()
                        .any(|k| v[*k].as_str().is_some_and(|s| s.contains("PerDay")))
                })
            })
        });
    let status = err["status"].as_str().unwrap_or_default().to_owned();
    let class = match (r.status, status.as_str()) {
        (429, _) | (_, "RESOURCE_EXHAUSTED") if daily => ProviderErrorClass::QuotaExhausted,
        (429, _) | (_, "RESOURCE_EXHAUSTED") => ProviderErrorClass::RateLimited {
            retry_after: retry_info.or(r.retry_after),
        },
        (_, "PERMISSION_DENIED" | "UNAUTHENTICATED") => ProviderErrorClass::Unauthorized,
        (_, "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND") => ProviderErrorClass::InvalidRequest,
        (s, _) => class_for_status(s, r.retry_after),
    };
    let message = err["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {}", r.status));
    let mut e = ProviderError::new(provider, class, message).status(r.status);
    if !status.is_empty() {
        e = e.code(status);
    }
    e
}

fn moderated(provider: &'static str, why: impl Into<String>) -> ProviderError {
    let why = why.into();
    ProviderError::new(provider, ProviderErrorClass::Moderated, why.clone()).code(why)
}

fn decode(provider: &'static str, b64: &str) -> Result<Vec<u8>, ProviderError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| {
            ProviderError::new(provider, ProviderErrorClass::Transient, format!("bad base64: {e}"))
                .code("malformed_response")
        })
}

/// The image parts of a `generateContent` reply, or why there are none.
pub fn gemini_images(provider: &'static str, v: &Value) -> Result<Vec<Artifact>, ProviderError> {
    if let Some(reason) = v["promptFeedback"]["blockReason"].as_str() {
        return Err(moderated(provider, reason));
    }
    let mut out = Vec::new();
    let mut finish = None;
    for c in v["candidates"].as_array().into_iter().flatten() {
        finish = finish.or(c["finishReason"].as_str());
        for p in c["content"]["parts"].as_array().into_iter().flatten() {
            let inline = if p["inlineData"].is_object() {
                &p["inlineData"]
            } else {
                &p["inline_data"]
            };
            if let Some(data) = inline["data"].as_str() {
                out.push(Artifact::Inline {
                    bytes: decode(provider, data)?,
                    declared_type: inline["mimeType"].as_str().map(str::to_owned),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(match finish {
            Some(r @ ("IMAGE_SAFETY" | "SAFETY" | "PROHIBITED_CONTENT" | "BLOCKLIST" | "IMAGE_PROHIBITED_CONTENT")) => {
                moderated(provider, r)
            }
            // Only text came back: the model declined to draw.
            _ => moderated(provider, "NO_IMAGE"),
        });
    }
    Ok(out)
}

/// The images of an Imagen `predict` reply.
pub fn imagen_images(provider: &'static str, v: &Value) -> Result<Vec<Artifact>, ProviderError> {
    let mut out = Vec::new();
    let mut filtered = None;
    for p in v["predictions"].as_array().into_iter().flatten() {
        match p["bytesBase64Encoded"].as_str() {
            Some(b) => out.push(Artifact::Inline {
                bytes: decode(provider, b)?,
                declared_type: p["mimeType"].as_str().map(str::to_owned),
            }),
            None => filtered = filtered.or(p["raiFilteredReason"].as_str()),
        }
    }
    if out.is_empty() {
        return Err(moderated(provider, filtered.unwrap_or("ALL_FILTERED")));
    }
    Ok(out)
}

impl Google {
    /// A client for `base` with `cfg`'s key.
    pub fn new(name: &'static str, base: &str, cfg: &ProviderConfig) -> Result<Self, BuildError> {
        Ok(Self {
            ep: Endpoint::new(name, base, cfg)?,
        })
    }

    async fn call(&self, req: reqwest::RequestBuilder, max: usize) -> Result<Value, ProviderError> {
        let r = http::send(
            self.ep.name,
            req.header("x-goog-api-key", &self.ep.key)
                .timeout(self.ep.cfg.request_timeout()),
            max,
        )
        .await?;
        if !r.ok() {
            return Err(classify(self.ep.name, &r));
        }
        r.json(self.ep.name)
    }

    fn same_host(&self, url: &str) -> bool {
        let host = |u: &str| {
            reqwest::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
        };
        host(url).is_some() && host(url) == host(&self.ep.base)
    }

    fn model_url(&self, model: &str, method: &str) -> String {
        format!("{}/v1beta/models/{model}:{method}", self.ep.base)
    }
}

impl Provider for Google {
    fn name(&self) -> &'static str {
        self.ep.name
    }

    fn mode(&self) -> Mode {
        Mode::Poll
    }

    fn submit<'a>(&'a self, req: &'a GenerateRequest) -> BoxFuture<'a, Result<Submitted, ProviderError>> {
        Box::pin(async move {
            let model = self.ep.cfg.model_id(&req.model);
            let shape = req.shape(self.ep.name, crate::Api::Google)?;
            let samples = shape.samples;
            let outputs = |artifacts: Vec<Artifact>| {
                let n = artifacts.len() as u32;
                Submitted::Done(Generated {
                    artifacts,
                    usage: gantry_core::Usage {
                        outputs: Some(n),
                        ..Default::default()
                    },
                })
            };
            if model.starts_with("veo") {
                let mut params = json!({"sampleCount": samples, "durationSeconds": shape.duration_secs});
                if let Some(n) = &req.negative_prompt {
                    params["negativePrompt"] = n.as_str().into();
                }
                let body = json!({"instances": [{"prompt": req.prompt}], "parameters": params});
                let v = self
                    .call(
                        self.ep
                            .http
                            .post(self.model_url(model, "predictLongRunning"))
                            .json(&body),
                        1 << 20,
                    )
                    .await?;
                let name = v["name"].as_str().ok_or_else(|| {
                    ProviderError::new(self.ep.name, ProviderErrorClass::Transient, "no operation name")
                        .code("malformed_response")
                })?;
                return Ok(Submitted::Accepted(TaskHandle {
                    id: name.to_owned(),
                    poll_url: None,
                    family: Some("operation".into()),
                }));
            }
            if model.starts_with("imagen") {
                let mut params = json!({"sampleCount": samples});
                if let Some(n) = &req.negative_prompt {
                    params["negativePrompt"] = n.as_str().into();
                }
                let body = json!({"instances": [{"prompt": req.prompt}], "parameters": params});
                let v = self
                    .call(
                        self.ep.http.post(self.model_url(model, "predict")).json(&body),
                        MAX_JSON_BYTES,
                    )
                    .await?;
                return Ok(outputs(imagen_images(self.ep.name, &v)?));
            }
            let mut parts = vec![json!({"text": req.prompt})];
            for img in req.reference_images.iter().take(3) {
                let m = crate::media::reference(self.ep.name, img).await?;
                parts.push(json!({"inlineData": {"mimeType": m.content_type, "data": base64::engine::general_purpose::STANDARD.encode(&m.bytes)}}));
            }
            let body = json!({
                "contents": [{"parts": parts}],
                "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
            });
            let v = self
                .call(
                    self.ep.http.post(self.model_url(model, "generateContent")).json(&body),
                    MAX_JSON_BYTES,
                )
                .await?;
            Ok(outputs(gemini_images(self.ep.name, &v)?))
        })
    }

    fn poll<'a>(&'a self, task: &'a TaskHandle) -> BoxFuture<'a, Result<Observed, ProviderError>> {
        Box::pin(async move {
            let v = self
                .call(
                    self.ep.http.get(format!("{}/v1beta/{}", self.ep.base, task.id)),
                    1 << 20,
                )
                .await?;
            if !v["done"].as_bool().unwrap_or(false) {
                return Ok(Observed::Running(None));
            }
            if v["error"].is_object() {
                let r = Reply {
                    status: v["error"]["code"].as_u64().unwrap_or(500) as u16,
                    retry_after: None,
                    body: serde_json::to_vec(&json!({"error": v["error"]})).unwrap_or_default(),
                };
                let mut e = classify(self.ep.name, &r);
                if e.class.is_retryable() {
                    // The operation is over: a retry is a new operation, not a wait.
                    e.class = ProviderErrorClass::Transient;
                }
                return Ok(Observed::Failed(e));
            }
            let resp = &v["response"]["generateVideoResponse"];
            let uris: Vec<String> = resp["generatedSamples"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["video"]["uri"].as_str().map(str::to_owned))
                .collect();
            if uris.is_empty() {
                let why = resp["raiMediaFilteredReasons"][0].as_str().unwrap_or("ALL_FILTERED");
                return Ok(Observed::Failed(moderated(self.ep.name, why)));
            }
            let mut artifacts = Vec::new();
            for uri in uris {
                if !self.same_host(&uri) {
                    return Ok(Observed::Failed(
                        ProviderError::new(
                            self.ep.name,
                            ProviderErrorClass::Transient,
                            "video URI on a foreign host",
                        )
                        .code("untrusted_uri"),
                    ));
                }
                let r = http::send(
                    self.ep.name,
                    self.ep
                        .http
                        .get(&uri)
                        .header("x-goog-api-key", &self.ep.key)
                        .timeout(Duration::from_secs(300)),
                    MAX_VIDEO,
                )
                .await?;
                if matches!(r.status, 403 | 404 | 410) {
                    return Err(ProviderError::new(
                        self.ep.name,
                        ProviderErrorClass::Transient,
                        "the video has expired",
                    )
                    .code("result_expired")
                    .status(r.status));
                }
                if !r.ok() {
                    return Err(classify(self.ep.name, &r));
                }
                artifacts.push(Artifact::Inline {
                    bytes: r.body,
                    declared_type: Some("video/mp4".into()),
                });
            }
            let n = artifacts.len() as u32;
            let secs = v["metadata"]["durationSeconds"].as_u64().map(|s| s as u32);
            Ok(Observed::Succeeded(Generated {
                artifacts,
                usage: gantry_core::Usage {
                    outputs: Some(n),
                    // Per clip: a per-second price multiplies by the outputs.
                    seconds: secs,
                    ..Default::default()
                },
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_and_daily_quotas_are_read_from_the_body() {
        let body = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": "GenerateRequestsPerMinutePerProject"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}]}});
        let r = Reply {
            status: 429,
            retry_after: None,
            body: body.to_string().into_bytes(),
        };
        assert_eq!(classify("gemini", &r).retry_after(), Some(Duration::from_secs(31)));
        let daily = body.to_string().replace("PerMinute", "PerDay");
        let r = Reply {
            status: 429,
            retry_after: None,
            body: daily.into_bytes(),
        };
        assert_eq!(classify("gemini", &r).class, ProviderErrorClass::QuotaExhausted);
    }

    #[test]
    fn safety_refusals_are_moderation() {
        let v = json!({"candidates": [{"finishReason": "IMAGE_SAFETY", "content": {"parts": [{"text": "no"}]}}]});
        assert_eq!(
            gemini_images("gemini", &v).expect_err("refused").class,
            ProviderErrorClass::Moderated
        );
        let v = json!({"predictions": [{"raiFilteredReason": "filtered"}]});
        assert_eq!(
            imagen_images("gemini", &v).expect_err("refused").class,
            ProviderErrorClass::Moderated
        );
        let v = json!({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]}}]});
        assert_eq!(gemini_images("gemini", &v).expect("image").len(), 1);
    }
}
