//! OpenAI Images (`gpt-image-*`): synchronous `POST /v1/images/generations`, or
//! `POST /v1/images/edits` (multipart, up to 16 `image[]` parts) when the job has reference
//! images; results as base64 only, usage in tokens. Moderation is HTTP 400 with `moderation_blocked` (legacy
//! `content_policy_violation`); 429 means "slow down" unless its code is `insufficient_quota`.

use base64::Engine;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::config::ProviderConfig;
use crate::error::{ProviderError, ProviderErrorClass, class_for_status};
use crate::http::{self, Endpoint, MAX_JSON_BYTES, Reply};
use crate::task::{Artifact, GenerateRequest, Generated, Mode, Submitted};
use crate::{BuildError, Provider};

/// The client for one region.
#[derive(Debug)]
pub struct OpenAi {
    ep: Endpoint,
}

impl OpenAi {
    /// A client for `base` with `cfg`'s key.
    pub fn new(name: &'static str, base: &str, cfg: &ProviderConfig) -> Result<Self, BuildError> {
        Ok(Self {
            ep: Endpoint::new(name, base, cfg)?,
        })
    }
}

/// The sizes GPT image models accept, by aspect.
#[derive(Deserialize)]
struct ImagesReply {
    #[serde(default)]
    data: Vec<ImageData>,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct TokenUsage {
    #[serde(default)]
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ImageData {
    #[serde(default)]
    b64_json: Option<String>,
}

#[derive(Deserialize)]
struct ErrorReply {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: String,
}

/// Classifies an OpenAI error reply.
pub fn classify(provider: &'static str, r: &Reply) -> ProviderError {
    let parsed: Option<ErrorBody> = serde_json::from_slice::<ErrorReply>(&r.body).ok().map(|e| e.error);
    let code = parsed
        .as_ref()
        .and_then(|e| e.code.clone().or_else(|| e.kind.clone()))
        .unwrap_or_default();
    let class = match code.as_str() {
        "moderation_blocked" | "content_policy_violation" => ProviderErrorClass::Moderated,
        "insufficient_quota" | "billing_hard_limit_reached" => ProviderErrorClass::QuotaExhausted,
        _ => class_for_status(r.status, r.retry_after),
    };
    let message = parsed
        .map(|e| e.message)
        .unwrap_or_else(|| format!("HTTP {}", r.status));
    let mut e = ProviderError::new(provider, class, message).status(r.status);
    if !code.is_empty() {
        e = e.code(code);
    }
    e
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        self.ep.name
    }

    fn mode(&self) -> Mode {
        Mode::Synchronous
    }

    fn submit<'a>(&'a self, req: &'a GenerateRequest) -> BoxFuture<'a, Result<Submitted, ProviderError>> {
        Box::pin(async move {
            let shape = req.shape(self.ep.name, crate::Api::Openai)?;
            let body = json!({
                "model": self.ep.cfg.model_id(&req.model),
                "prompt": req.prompt,
                "n": shape.samples,
                "size": shape.size.map_or("auto".to_owned(), |(w, h)| format!("{w}x{h}")),
                "output_format": "png",
            });
            let post = if req.reference_images.is_empty() {
                self.ep
                    .http
                    .post(format!("{}/v1/images/generations", self.ep.base))
                    .json(&body)
            } else {
                let mut form = reqwest::multipart::Form::new();
                for (k, v) in body.as_object().into_iter().flatten() {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    form = form.text(k.clone(), text);
                }
                for (i, r) in req.reference_images.iter().take(16).enumerate() {
                    let m = crate::media::reference(self.ep.name, r).await?;
                    let part = reqwest::multipart::Part::bytes(m.bytes.clone())
                        .file_name(format!("reference-{i}.{}", m.extension()))
                        .mime_str(m.content_type)
                        .map_err(|e| {
                            ProviderError::new(self.ep.name, ProviderErrorClass::InvalidRequest, e.to_string())
                        })?;
                    form = form.part("image[]", part);
                }
                self.ep
                    .http
                    .post(format!("{}/v1/images/edits", self.ep.base))
                    .multipart(form)
            };
            let r = http::send(
                self.ep.name,
                post.bearer_auth(&self.ep.key).timeout(self.ep.cfg.request_timeout()),
                MAX_JSON_BYTES,
            )
            .await?;
            if !r.ok() {
                return Err(classify(self.ep.name, &r));
            }
            let reply: ImagesReply = r.json(self.ep.name)?;
            let units = reply
                .usage
                .and_then(|u| u.output_tokens)
                .map(|t| format!("{t} output tokens"));
            let mut artifacts = Vec::new();
            for d in reply.data {
                let Some(b64) = d.b64_json else { continue };
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
                    declared_type: Some("image/png".into()),
                });
            }
            if artifacts.is_empty() {
                return Err(ProviderError::new(
                    self.ep.name,
                    ProviderErrorClass::Transient,
                    "no image in the response",
                )
                .code("empty_result"));
            }
            let usage = gantry_core::Usage {
                outputs: Some(artifacts.len() as u32),
                provider_units: units,
                ..Default::default()
            };
            Ok(Submitted::Done(Generated { artifacts, usage }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            retry_after: Some(std::time::Duration::from_secs(2)),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn classifies_by_code_before_status() {
        let m = classify(
            "openai",
            &reply(
                400,
                r#"{"error":{"type":"image_generation_user_error","code":"moderation_blocked","message":"rejected"}}"#,
            ),
        );
        assert_eq!(m.class, ProviderErrorClass::Moderated);
        let q = classify(
            "openai",
            &reply(429, r#"{"error":{"code":"insufficient_quota","message":"quota"}}"#),
        );
        assert_eq!(q.class, ProviderErrorClass::QuotaExhausted);
        let r = classify(
            "openai",
            &reply(429, r#"{"error":{"code":"rate_limit_exceeded","message":"slow"}}"#),
        );
        assert_eq!(r.retry_after(), Some(std::time::Duration::from_secs(2)));
        let t = classify("openai", &reply(502, "<html>bad gateway</html>"));
        assert_eq!(t.class, ProviderErrorClass::Transient);
    }

    #[test]
    fn sizes_follow_the_aspect() {
        // The size sent is the shape's (crate::shape), as admission priced it.
        let size = |width, height| {
            crate::Api::Openai
                .shape(
                    false,
                    &crate::shape::Asked {
                        width,
                        height,
                        ..Default::default()
                    },
                )
                .map(|s| s.size.map_or("auto".to_owned(), |(w, h)| format!("{w}x{h}")))
                .unwrap_or_default()
        };
        assert_eq!(size(Some(1920), Some(1080)), "1536x1024");
        assert_eq!(size(Some(512), Some(512)), "1024x1024");
        assert_eq!(size(None, None), "auto");
    }
}
