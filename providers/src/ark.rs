//! BytePlus ModelArk: Seedream images are synchronous (`POST /api/v3/images/generations`,
//! URLs valid 24 h; only successful images are billed, `usage.generated_images`); Seedance
//! videos are tasks (`POST /api/v3/contents/generations/tasks`, poll `…/tasks/{id}`). Errors
//! are `{error:{code,message}}`: `*SensitiveContentDetected*` is moderation, `AccountOverdueError`
//! and `QuotaExceeded` are quota, `*RateLimitExceeded*` is rate.

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::config::ProviderConfig;
use crate::error::{ProviderError, ProviderErrorClass, class_for_status};
use crate::http::{self, Endpoint, MAX_JSON_BYTES, Reply};
use crate::task::{Artifact, GenerateRequest, Generated, Mode, Observed, Submitted, TaskHandle};
use crate::{BuildError, Provider};

/// The client for one region.
#[derive(Debug)]
pub struct Ark {
    ep: Endpoint,
}

impl Ark {
    /// A client for `base` with `cfg`'s key.
    pub fn new(name: &'static str, base: &str, cfg: &ProviderConfig) -> Result<Self, BuildError> {
        Ok(Self {
            ep: Endpoint::new(name, base, cfg)?,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder, max: usize) -> Result<Reply, ProviderError> {
        let r = http::send(
            self.ep.name,
            req.bearer_auth(&self.ep.key).timeout(self.ep.cfg.request_timeout()),
            max,
        )
        .await?;
        if r.ok() { Ok(r) } else { Err(classify(self.ep.name, &r)) }
    }
}

#[derive(Deserialize)]
struct ErrorReply {
    error: ApiError,
}

#[derive(Deserialize, Clone)]
struct ApiError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The class of an Ark error code.
pub fn class_for_code(code: &str, status: u16, retry_after: Option<std::time::Duration>) -> ProviderErrorClass {
    if code.contains("SensitiveContentDetected") {
        ProviderErrorClass::Moderated
    } else if matches!(code, "AccountOverdueError" | "QuotaExceeded" | "SetLimitExceeded") {
        ProviderErrorClass::QuotaExhausted
    } else if code.contains("RateLimitExceeded") {
        ProviderErrorClass::RateLimited { retry_after }
    } else if code == "ServerOverloaded" {
        ProviderErrorClass::Transient
    } else if code == "AuthenticationError" {
        ProviderErrorClass::Unauthorized
    } else {
        class_for_status(status, retry_after)
    }
}

/// Classifies an error reply.
pub fn classify(provider: &'static str, r: &Reply) -> ProviderError {
    match serde_json::from_slice::<ErrorReply>(&r.body) {
        Ok(e) => ProviderError::new(
            provider,
            class_for_code(&e.error.code, r.status, r.retry_after),
            e.error.message,
        )
        .code(e.error.code)
        .status(r.status),
        Err(_) => ProviderError::new(
            provider,
            class_for_status(r.status, r.retry_after),
            format!("HTTP {}", r.status),
        )
        .status(r.status),
    }
}

#[derive(Deserialize)]
struct ImagesReply {
    #[serde(default)]
    data: Vec<ImageItem>,
    #[serde(default)]
    usage: Option<ImagesUsage>,
}

#[derive(Deserialize)]
struct ImageItem {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    b64_json: Option<String>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ImagesUsage {
    #[serde(default)]
    generated_images: Option<u32>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct TaskUsage {
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct TaskCreated {
    id: String,
}

#[derive(Deserialize)]
struct TaskReply {
    #[serde(default)]
    id: String,
    status: String,
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    content: Option<TaskContent>,
    #[serde(default)]
    duration: Option<u32>,
    #[serde(default)]
    usage: Option<TaskUsage>,
}

#[derive(Deserialize)]
struct TaskContent {
    #[serde(default)]
    video_url: Option<String>,
}

impl Ark {
    async fn images(&self, req: &GenerateRequest) -> Result<Submitted, ProviderError> {
        let mut body = json!({
            "model": self.ep.cfg.model_id(&req.model),
            "prompt": req.prompt,
            "response_format": "url",
            "watermark": false,
        });
        let shape = req.shape(self.ep.name, crate::Api::Ark)?;
        body["size"] = match shape.size {
            Some((w, h)) => format!("{w}x{h}").into(),
            None => "2K".into(),
        };
        if shape.samples > 1 {
            body["sequential_image_generation"] = "auto".into();
            body["sequential_image_generation_options"] = json!({"max_images": shape.samples});
        }
        if !req.reference_images.is_empty() {
            body["image"] = req.reference_images.iter().take(10).cloned().collect::<Vec<_>>().into();
        }
        let r = self
            .send(
                self.ep
                    .http
                    .post(format!("{}/api/v3/images/generations", self.ep.base))
                    .json(&body),
                MAX_JSON_BYTES,
            )
            .await?;
        let reply: ImagesReply = r.json(self.ep.name)?;
        let mut artifacts = Vec::new();
        let mut refused = None;
        for item in reply.data {
            match (item.url, item.b64_json, item.error) {
                (Some(url), _, _) => artifacts.push(Artifact::Url { url }),
                (None, Some(b64), _) => {
                    use base64::Engine;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64.as_bytes())
                        .map_err(|e| {
                            ProviderError::new(
                                self.ep.name,
                                ProviderErrorClass::Transient,
                                format!("bad base64 image: {e}"),
                            )
                            .code("malformed_response")
                        })?;
                    artifacts.push(Artifact::Inline {
                        bytes,
                        declared_type: None,
                    });
                }
                (None, None, Some(e)) => refused = Some(e),
                (None, None, None) => {}
            }
        }
        if artifacts.is_empty() {
            // Every image refused (moderation of one image does not stop the others).
            let e = refused.unwrap_or(ApiError {
                code: "empty_result".into(),
                message: "no image in the response".into(),
            });
            return Err(ProviderError::new(self.ep.name, class_for_code(&e.code, 200, None), e.message).code(e.code));
        }
        let billed = reply.usage.as_ref().and_then(|u| u.generated_images);
        let usage = gantry_core::Usage {
            outputs: Some(billed.unwrap_or(artifacts.len() as u32)),
            provider_units: reply.usage.and_then(|u| u.total_tokens).map(|t| format!("{t} tokens")),
            ..Default::default()
        };
        Ok(Submitted::Done(Generated { artifacts, usage }))
    }

    async fn video(&self, req: &GenerateRequest) -> Result<Submitted, ProviderError> {
        let secs = req
            .shape(self.ep.name, crate::Api::Ark)?
            .duration_secs
            .unwrap_or_default();
        let mut content =
            vec![json!({"type": "text", "text": format!("{} --dur {secs} --rs 720p --wm false", req.prompt)})];
        if let Some(img) = req.reference_images.first() {
            content.push(json!({"type": "image_url", "image_url": {"url": img}, "role": "first_frame"}));
        }
        let mut body = json!({"model": self.ep.cfg.model_id(&req.model), "content": content});
        if let Some(cb) = &req.callback {
            body["callback_url"] = cb.url.as_str().into();
        }
        let r = self
            .send(
                self.ep
                    .http
                    .post(format!("{}/api/v3/contents/generations/tasks", self.ep.base))
                    .json(&body),
                1 << 20,
            )
            .await?;
        let t: TaskCreated = r.json(self.ep.name)?;
        Ok(Submitted::Accepted(TaskHandle {
            id: t.id,
            poll_url: None,
            family: Some("video".into()),
        }))
    }
}

fn observe(provider: &'static str, t: TaskReply) -> Observed {
    match t.status.as_str() {
        "queued" => Observed::Queued,
        "running" => Observed::Running(None),
        "succeeded" => match t.content.and_then(|c| c.video_url) {
            Some(url) => Observed::Succeeded(Generated {
                artifacts: vec![Artifact::Url { url }],
                usage: gantry_core::Usage {
                    outputs: Some(1),
                    seconds: t.duration,
                    provider_units: t
                        .usage
                        .and_then(|u| u.completion_tokens)
                        .map(|n| format!("{n} completion tokens")),
                    ..Default::default()
                },
            }),
            None => Observed::Failed(
                ProviderError::new(provider, ProviderErrorClass::Transient, "succeeded without a video")
                    .code("empty_result"),
            ),
        },
        "cancelled" => Observed::Cancelled,
        _ => {
            let e = t.error.unwrap_or(ApiError {
                code: "task_failed".into(),
                message: "failed".into(),
            });
            let class = match class_for_code(&e.code, 200, None) {
                ProviderErrorClass::Moderated => ProviderErrorClass::Moderated,
                ProviderErrorClass::QuotaExhausted => ProviderErrorClass::QuotaExhausted,
                _ => ProviderErrorClass::Transient,
            };
            Observed::Failed(ProviderError::new(provider, class, e.message).code(e.code))
        }
    }
}

impl Provider for Ark {
    fn name(&self) -> &'static str {
        self.ep.name
    }

    fn mode(&self) -> Mode {
        Mode::Poll
    }

    fn submit<'a>(&'a self, req: &'a GenerateRequest) -> BoxFuture<'a, Result<Submitted, ProviderError>> {
        Box::pin(async move {
            if req.video {
                self.video(req).await
            } else {
                self.images(req).await
            }
        })
    }

    /// Seedance video tasks call back with the task object; images are synchronous.
    fn accepts_webhooks(&self) -> bool {
        true
    }

    fn parse_webhook(
        &self,
        _headers: &reqwest::header::HeaderMap,
        body: &[u8],
        _secret: &str,
    ) -> Result<(String, Observed), ProviderError> {
        let t: TaskReply = serde_json::from_slice(body).map_err(|e| {
            ProviderError::new(
                self.ep.name,
                ProviderErrorClass::InvalidRequest,
                format!("callback body: {e}"),
            )
        })?;
        Ok((t.id.clone(), observe(self.ep.name, t)))
    }

    fn poll<'a>(&'a self, task: &'a TaskHandle) -> BoxFuture<'a, Result<Observed, ProviderError>> {
        Box::pin(async move {
            let r = self
                .send(
                    self.ep.http.get(format!(
                        "{}/api/v3/contents/generations/tasks/{}",
                        self.ep.base, task.id
                    )),
                    1 << 20,
                )
                .await?;
            let t: TaskReply = r.json(self.ep.name)?;
            Ok(observe(self.ep.name, t))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_classes() {
        assert_eq!(
            class_for_code("OutputImageSensitiveContentDetected", 400, None),
            ProviderErrorClass::Moderated
        );
        assert_eq!(
            class_for_code("AccountOverdueError", 403, None),
            ProviderErrorClass::QuotaExhausted
        );
        assert!(matches!(
            class_for_code("ModelAccountRpmRateLimitExceeded", 429, None),
            ProviderErrorClass::RateLimited { .. }
        ));
        assert_eq!(
            class_for_code("ServerOverloaded", 503, None),
            ProviderErrorClass::Transient
        );
        assert_eq!(
            class_for_code("InvalidParameter", 400, None),
            ProviderErrorClass::InvalidRequest
        );
    }
}
