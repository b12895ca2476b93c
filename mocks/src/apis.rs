//! Each provider's API shape: auth, submit, poll, results, and faults in the provider's own
//! words (Kling's business codes, OpenAI's `error.code`, Google's `RESOURCE_EXHAUSTED` with
//! `RetryInfo`, Ark's `SensitiveContentDetected`, BFL's poll statuses).

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::{
    Answer, Call, Directives, Fault, MockState, MockTask, generic, json as reply, prompt_key, with_retry_after,
};
use gantry_providers::{MOCK_ACCESS_KEY, MOCK_API_KEY, MOCK_SECRET_KEY};

/// The delay a response asked for, whatever the provider's way of saying it; the request
/// log reads it from here.
#[derive(Clone, Copy, Debug)]
pub struct RetryHint(pub u64);

fn hinted(mut r: Response, secs: u64) -> Response {
    r.extensions_mut().insert(RetryHint(secs));
    r
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// One of 16 tints, from the prompt's hash: different prompts get different images, and
/// the encoded images stay few enough to cache; `[mock:flagged]` gets the flagged picture.
fn tint(key: &str, d: &Directives) -> u8 {
    if d.flagged {
        return crate::media::FLAGGED_TINT;
    }
    if d.near {
        return crate::media::NEAR_TINT;
    }
    u8::from_str_radix(key.get(0..1).unwrap_or("8"), 16).unwrap_or(8) * 16
}

/// Which API a provider name speaks on the mock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    OpenAi,
    Google,
    Kling,
    Ark,
    Bfl,
}

fn api_of(provider: &str) -> Option<Api> {
    Some(match provider {
        "openai" => Api::OpenAi,
        "gemini" | "veo" => Api::Google,
        "kling" => Api::Kling,
        "seedream" | "seedance" => Api::Ark,
        "flux" => Api::Bfl,
        _ => return None,
    })
}

pub(crate) async fn handle(s: &Arc<MockState>, call: Call) -> Answer {
    let Some(api) = api_of(&call.provider) else {
        return Answer {
            response: (StatusCode::NOT_FOUND, "unknown provider").into_response(),
            key: String::new(),
        };
    };
    if call.path.starts_with("/files/") {
        return files(s, &call).await;
    }
    match api {
        Api::OpenAi => openai(s, &call).await,
        Api::Bfl => bfl(s, &call).await,
        Api::Kling => kling(s, &call).await,
        Api::Ark => ark(s, &call).await,
        Api::Google => google(s, &call).await,
    }
}

fn answer(response: Response, key: &str) -> Answer {
    Answer {
        response,
        key: key.to_owned(),
    }
}

fn not_found(key: &str) -> Answer {
    answer(
        (StatusCode::NOT_FOUND, "no such route on the mock").into_response(),
        key,
    )
}

/// The result files: `/files/{task}/{index}.{ext}`.
async fn files(s: &Arc<MockState>, call: &Call) -> Answer {
    let rest = call.path.trim_start_matches("/files/");
    let (id, file) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(t) = s.task(id) else {
        return answer((StatusCode::NOT_FOUND, "BlobNotFound").into_response(), id);
    };
    if t.directives.expired {
        return answer(
            (
                StatusCode::FORBIDDEN,
                "AuthenticationFailed: Signed expiry time has passed",
            )
                .into_response(),
            id,
        );
    }
    media(s, &t, file, id)
}

fn media(s: &Arc<MockState>, t: &MockTask, file: &str, key: &str) -> Answer {
    if t.video {
        return match s.media.video() {
            Ok(v) => answer(
                ([("content-type", "video/mp4")], v.as_ref().clone()).into_response(),
                key,
            ),
            Err(e) => answer((StatusCode::INTERNAL_SERVER_ERROR, e).into_response(), key),
        };
    }
    let jpeg = file.ends_with(".jpeg") || file.ends_with(".jpg");
    let bytes = s.media.image(t.width, t.height, jpeg, t.tint);
    let ct = if jpeg { "image/jpeg" } else { "image/png" };
    answer(([("content-type", ct)], bytes.as_ref().clone()).into_response(), key)
}

/// Calls `url` back when the task's pending time is over (50 ms a pending poll) with the
/// task as `body` renders it; signed like BFL's when `secret` is given. Retried three times,
/// a second apart, like Seedance's callbacks, when the receiver does not answer 2xx.
fn call_back(
    s: &Arc<MockState>,
    id: String,
    url: String,
    secret: Option<String>,
    body: fn(&Arc<MockState>, &MockTask) -> Value,
) {
    let s = s.clone();
    tokio::spawn(async move {
        let Some(t) = s.task(&id) else { return };
        if t.directives.lose_callback {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            50 * u64::from(t.directives.pending.max(1)),
        ))
        .await;
        let Some(t) = s.complete(&id) else { return };
        let payload = body(&s, &t).to_string();
        for _ in 0..4 {
            let mut req = s
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(payload.clone());
            if let Some(secret) = &secret {
                let sig: String = gantry_providers::kling::hmac_sha256(secret.as_bytes(), payload.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                req = req.header("x-bfl-signature", format!("sha256={sig}"));
            }
            let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            s.log_callback(&t, &url, status);
            if (200..300).contains(&status) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

/// Runs the gate and the prompt's non-counted refusals; `Some` is the answer to give.
async fn refuse(
    s: &Arc<MockState>,
    call: &Call,
    key: &str,
    d: &Directives,
    at_submit: bool,
    render: impl Fn(Fault, u64) -> Response,
) -> Option<Response> {
    let ra = s.retry_after_secs();
    if let Some(f) = s.gate(&call.provider, key, d).await {
        return Some(generic(f).unwrap_or_else(|| render(f, ra)));
    }
    if at_submit && d.quota {
        return Some(render(Fault::Quota, ra));
    }
    None
}

fn size_of(v: &Value, default: (u32, u32)) -> (u32, u32) {
    let parse = |s: &str| {
        let (w, h) = s.split_once('x')?;
        Some((w.parse().ok()?, h.parse().ok()?))
    };
    v.as_str().and_then(parse).unwrap_or(default)
}

fn task(
    s: &Arc<MockState>,
    call: &Call,
    prefix: &str,
    family: &str,
    model: &str,
    key: &str,
    d: Directives,
) -> MockTask {
    let tint = tint(key, &d);
    MockTask {
        id: s.next_id(prefix),
        provider: call.provider.clone(),
        region: call.region.clone(),
        family: family.to_owned(),
        model: model.to_owned(),
        directives: d,
        polls: 0,
        video: false,
        outputs: 1,
        width: 1024,
        height: 1024,
        duration: 0,
        external_id: None,
        tint,
    }
}

// ---------------------------------------------------------------- OpenAI

/// The fields of an `/v1/images/edits` form as JSON, and how many `image[]` parts are images.
async fn edit_form(call: &Call) -> Result<(Value, usize), String> {
    use axum::extract::FromRequest;
    let mut req = axum::http::Request::builder().method("POST").uri("/");
    if let Some(ct) = call.header("content-type") {
        req = req.header("content-type", ct);
    }
    let req = req
        .body(axum::body::Body::from(call.body.clone()))
        .map_err(|e| e.to_string())?;
    let mut form = axum::extract::Multipart::from_request(req, &())
        .await
        .map_err(|e| e.body_text())?;
    let (mut fields, mut images) = (serde_json::Map::new(), 0);
    while let Some(field) = form.next_field().await.map_err(|e| e.body_text())? {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(|e| e.body_text())?;
        if name == "image[]" || name == "image" {
            if gantry_providers::media::sniff(&bytes).is_some_and(|t| t.starts_with("image/")) {
                images += 1;
            } else {
                return Err("an image[] part is not a PNG, JPEG or WebP".into());
            }
        } else {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let v = text.parse::<u64>().map(Value::from).unwrap_or(Value::String(text));
            fields.insert(name, v);
        }
    }
    Ok((Value::Object(fields), images))
}

async fn openai(s: &Arc<MockState>, call: &Call) -> Answer {
    let edits = call.path == "/v1/images/edits";
    if call.method != Method::POST || !(edits || call.path == "/v1/images/generations") {
        return not_found("");
    }
    if call.bearer() != Some(MOCK_API_KEY) {
        let r = reply(
            401,
            json!({"error": {"code": "invalid_api_key", "type": "invalid_request_error", "message": "Incorrect API key provided."}}),
        );
        return answer(r, "");
    }
    let body = if edits {
        match edit_form(call).await {
            Ok((v, n)) if n > 0 => v,
            Ok(_) => {
                return answer(
                    reply(
                        400,
                        json!({"error": {"code": "missing_image", "type": "invalid_request_error", "message": "image[] is required for edits."}}),
                    ),
                    "",
                );
            }
            Err(m) => {
                return answer(
                    reply(
                        400,
                        json!({"error": {"code": "invalid_image", "type": "invalid_request_error", "message": m}}),
                    ),
                    "",
                );
            }
        }
    } else {
        call.json()
    };
    let prompt = body["prompt"].as_str().unwrap_or_default();
    let key = prompt_key(prompt);
    let d = Directives::parse(prompt);
    let render = |f: Fault, ra: u64| match f {
        Fault::RateLimited | Fault::Concurrency => hinted(
            with_retry_after(
                reply(
                    429,
                    json!({"error": {"code": "rate_limit_exceeded", "type": "requests", "message": "Rate limit reached for images per minute."}}),
                ),
                ra,
            ),
            ra,
        ),
        Fault::Quota => reply(
            429,
            json!({"error": {"code": "insufficient_quota", "type": "insufficient_quota", "message": "You exceeded your current quota."}}),
        ),
        Fault::Moderated => moderation_blocked("input"),
        _ => reply(
            500,
            json!({"error": {"code": null, "type": "server_error", "message": "The server had an error while processing your request."}}),
        ),
    };
    if let Some(r) = refuse(s, call, &key, &d, true, render).await {
        return answer(r, &key);
    }
    if d.moderated || d.moderated_output {
        return answer(moderation_blocked(if d.moderated { "input" } else { "output" }), &key);
    }
    if d.fail {
        return answer(render(Fault::ServerError, 0), &key);
    }
    let n = body["n"].as_u64().unwrap_or(1).clamp(1, 10) as usize;
    let (w, h) = size_of(&body["size"], (1024, 1024));
    // Each sample its own picture (a flagged prompt's are all the flagged one), as a real
    // model's differ.
    let base = tint(&key, &d);
    let data: Vec<Value> = (0..n)
        .map(|i| {
            let t = if d.flagged {
                base
            } else {
                base.wrapping_add(7 * i as u8)
            };
            json!({"b64_json": b64(&s.media.image(w, h, false, t))})
        })
        .collect();
    let r = reply(
        200,
        json!({
            "created": 1_790_000_000u64,
            "data": data,
            "size": format!("{w}x{h}"), "quality": "medium", "output_format": "png",
            "usage": {"input_tokens": 50, "input_tokens_details": {"text_tokens": 50, "image_tokens": 0},
                      "output_tokens": 1056 * n, "total_tokens": 50 + 1056 * n},
        }),
    );
    answer(r, &key)
}

fn moderation_blocked(stage: &str) -> Response {
    reply(
        400,
        json!({"error": {"type": "image_generation_user_error", "code": "moderation_blocked",
        "message": "Your request was rejected by the safety system.",
        "moderation_details": {"moderation_stage": stage, "categories": ["violence"]}}}),
    )
}

// ---------------------------------------------------------------- BFL

/// A BFL task as `get_result` (and its webhook) reports it.
fn bfl_task(s: &Arc<MockState>, t: &MockTask) -> Value {
    let id = &t.id;
    let d = &t.directives;
    let status = if t.polls <= d.pending {
        "Pending"
    } else if d.moderated {
        "Request Moderated"
    } else if d.moderated_output {
        "Content Moderated"
    } else if d.fail {
        "Error"
    } else {
        "Ready"
    };
    // While pending, how far along (BFL reports a fraction): the polls so far of those it takes.
    let progress = (status == "Pending").then(|| f64::from(t.polls) / f64::from(d.pending + 1));
    let mut v = json!({"id": id, "status": status, "progress": progress});
    if status == "Ready" {
        let prefix = s.prefix(&t.provider, &t.region);
        v["result"] = json!({"sample": format!("{prefix}/files/{id}/0.png?se=expiring&sig=secret"), "seed": 42});
    }
    v
}

async fn bfl(s: &Arc<MockState>, call: &Call) -> Answer {
    if call.header("x-key") != Some(MOCK_API_KEY) {
        return answer(
            reply(403, json!({"detail": "Not authenticated - Invalid Authentication"})),
            "",
        );
    }
    let render = |f: Fault, ra: u64| match f {
        Fault::RateLimited | Fault::Concurrency => hinted(
            with_retry_after(
                reply(429, json!({"error": "rate_limit_exceeded", "retry_after": ra})),
                ra,
            ),
            ra,
        ),
        Fault::Quota => reply(402, json!({"detail": "Insufficient credits"})),
        Fault::Moderated => reply(200, json!({"status": "Request Moderated"})),
        _ => reply(500, json!({"detail": "Internal Server Error"})),
    };
    if call.method == Method::GET && call.path == "/v1/get_result" {
        let id = call.query.get("id").cloned().unwrap_or_default();
        let Some(t) = s.poll_task(&id) else {
            return answer(reply(200, json!({"id": id, "status": "Task not found"})), &id);
        };
        if let Some(r) = refuse(s, call, &id, &t.directives, false, render).await {
            return answer(r, &id);
        }
        let v = bfl_task(s, &t);
        return answer(reply(200, v), &id);
    }
    if call.method != Method::POST || !call.path.starts_with("/v1/") {
        return not_found("");
    }
    let model = call.path.trim_start_matches("/v1/").to_owned();
    let body = call.json();
    let prompt = body["prompt"].as_str().unwrap_or_default();
    let key = prompt_key(prompt);
    let d = Directives::parse(prompt);
    if let Some(r) = refuse(s, call, &key, &d, true, render).await {
        return answer(r, &key);
    }
    let mut t = task(s, call, "bfl-", "image", &model, &key, d);
    t.width = body["width"].as_u64().unwrap_or(1024) as u32;
    t.height = body["height"].as_u64().unwrap_or(768) as u32;
    let id = t.id.clone();
    let polling_url = format!("{}/v1/get_result?id={id}", s.prefix(&call.provider, &call.region));
    s.insert_task(t);
    if let Some(url) = body["webhook_url"].as_str() {
        let secret = body["webhook_secret"].as_str().map(str::to_owned);
        call_back(s, id.clone(), url.to_owned(), secret, bfl_task);
    }
    answer(
        reply(200, json!({"id": id, "polling_url": polling_url, "cost": 4.5})),
        &key,
    )
}

// ---------------------------------------------------------------- Kling

fn kling_env(status: u16, code: i64, message: &str, data: Value) -> Response {
    reply(
        status,
        json!({"code": code, "message": message, "request_id": "req-mock", "data": data}),
    )
}

fn kling_task(s: &Arc<MockState>, t: &MockTask) -> Value {
    let d = &t.directives;
    let (status, msg) = if t.polls <= d.pending / 2 {
        ("submitted", "")
    } else if t.polls <= d.pending {
        ("processing", "")
    } else if d.moderated_output {
        ("failed", "Failure to pass the risk control system")
    } else if d.fail {
        ("failed", "Task failed due to an internal error")
    } else {
        ("succeed", "")
    };
    let mut v = json!({
        "task_id": t.id, "task_status": status, "task_status_msg": msg,
        "task_info": {"external_task_id": t.external_id},
        "created_at": 1_790_000_000_000u64, "updated_at": 1_790_000_001_000u64,
    });
    if status == "succeed" {
        let prefix = s.prefix(&t.provider, &t.region);
        if t.video {
            v["task_result"] = json!({"videos": [{"id": format!("{}-v", t.id), "url": format!("{prefix}/files/{}/0.mp4", t.id), "duration": t.duration.to_string()}]});
            v["final_unit_deduction"] = json!(format!("{:.1}", 0.6 * f64::from(t.duration)));
        } else {
            let images: Vec<Value> = (0..t.outputs)
                .map(|i| json!({"index": i, "url": format!("{prefix}/files/{}/{i}.png", t.id)}))
                .collect();
            v["task_result"] = json!({"images": images});
            v["final_unit_deduction"] = json!(format!("{}", 8 * t.outputs));
        }
    }
    v
}

async fn kling(s: &Arc<MockState>, call: &Call) -> Answer {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let token = call.bearer().unwrap_or_default();
    if token.is_empty() {
        return answer(kling_env(401, 1001, "Authorization is empty", Value::Null), "");
    }
    if let Err(code) = gantry_providers::kling::verify_token(token, MOCK_ACCESS_KEY, MOCK_SECRET_KEY, now) {
        let msg = match code {
            1003 => "Authorization is not yet valid",
            1004 => "Authorization has expired",
            _ => "Authorization is invalid",
        };
        return answer(kling_env(401, i64::from(code), msg, Value::Null), "");
    }
    let render = |f: Fault, _ra: u64| match f {
        // Kling sends no Retry-After; its 429s differ only by code.
        Fault::RateLimited => kling_env(429, 1302, "The API request rate is too fast", Value::Null),
        Fault::Concurrency => kling_env(429, 1303, "Concurrency exceeds the resource pack limit", Value::Null),
        Fault::Quota => kling_env(429, 1102, "The resource pack has been used up", Value::Null),
        Fault::Moderated => kling_env(
            400,
            1301,
            "The content triggered the platform's content security",
            Value::Null,
        ),
        _ => kling_env(500, 5000, "Server internal error", Value::Null),
    };
    let families = [
        "/v1/videos/text2video",
        "/v1/videos/image2video",
        "/v1/images/generations",
    ];
    let Some(family) = families.iter().find(|f| call.path.starts_with(**f)) else {
        return not_found("");
    };
    let rest = call.path[family.len()..].trim_start_matches('/').to_owned();
    if call.method == Method::GET {
        let found = if rest.is_empty() {
            let ext = call.query.get("external_task_id").cloned().unwrap_or_default();
            s.task_by_external(&call.provider, &ext)
                .and_then(|t| s.poll_task(&t.id))
        } else {
            s.poll_task(&rest)
        };
        let Some(t) = found.filter(|t| t.family == *family) else {
            return answer(kling_env(404, 1200, "task not found", Value::Null), &rest);
        };
        if let Some(r) = refuse(s, call, &t.id, &t.directives, false, render).await {
            return answer(r, &t.id);
        }
        return answer(kling_env(200, 0, "SUCCEED", kling_task(s, &t)), &t.id);
    }
    if call.method != Method::POST || !rest.is_empty() {
        return not_found("");
    }
    let body = call.json();
    let prompt = body["prompt"].as_str().unwrap_or_default();
    let key = prompt_key(prompt);
    let d = Directives::parse(prompt);
    if body["model_name"].as_str().is_none_or(str::is_empty) {
        return answer(kling_env(400, 1201, "model_name is required", Value::Null), &key);
    }
    let ext = body["external_task_id"].as_str().map(str::to_owned);
    if let Some(e) = &ext
        && s.task_by_external(&call.provider, e).is_some()
    {
        return answer(
            kling_env(400, 1201, "external_task_id already exists", Value::Null),
            &key,
        );
    }
    if let Some(r) = refuse(s, call, &key, &d, true, render).await {
        return answer(r, &key);
    }
    if d.moderated {
        return answer(render(Fault::Moderated, 0), &key);
    }
    let model = body["model_name"].as_str().unwrap_or_default().to_owned();
    let mut t = task(s, call, "", family, &model, &key, d);
    t.external_id = ext;
    if family.starts_with("/v1/videos") {
        t.video = true;
        t.duration = body["duration"].as_str().and_then(|v| v.parse().ok()).unwrap_or(5);
    } else {
        t.outputs = body["n"].as_u64().unwrap_or(1).clamp(1, 9) as u32;
    }
    t.polls = 0;
    let v = kling_task(s, &t);
    let hold = t.directives.slow_reply_ms;
    let id = t.id.clone();
    s.insert_task(t);
    if let Some(url) = body["callback_url"].as_str() {
        call_back(s, id, url.to_owned(), None, kling_task);
    }
    if hold > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(hold)).await;
    }
    answer(kling_env(200, 0, "SUCCEED", v), &key)
}

// ---------------------------------------------------------------- BytePlus Ark

/// A Seedance task as its query (and its callback) reports it.
fn ark_task(s: &Arc<MockState>, t: &MockTask) -> Value {
    let id = &t.id;
    let d = &t.directives;
    let status = if t.polls <= d.pending / 2 {
        "queued"
    } else if t.polls <= d.pending {
        "running"
    } else if d.moderated_output || d.fail {
        "failed"
    } else {
        "succeeded"
    };
    let mut v = json!({"id": id, "model": t.model, "status": status, "created_at": 1_790_000_000u64, "updated_at": 1_790_000_054u64});
    if status == "succeeded" {
        let prefix = s.prefix(&t.provider, &t.region);
        v["content"] = json!({"video_url": format!("{prefix}/files/{id}/0.mp4")});
        v["duration"] = json!(t.duration);
        v["resolution"] = json!("720p");
        v["usage"] = json!({"completion_tokens": 108_900 * t.duration / 5, "total_tokens": 108_900 * t.duration / 5});
    } else if status == "failed" {
        v["error"] = if d.moderated_output {
            json!({"code": "OutputVideoSensitiveContentDetected", "message": "The generated video may contain sensitive information."})
        } else {
            json!({"code": "InternalServiceError", "message": "internal error"})
        };
    }
    v
}

fn ark_error(status: u16, code: &str, message: &str) -> Response {
    reply(
        status,
        json!({"error": {"code": code, "message": message, "type": "BadRequest"}}),
    )
}

async fn ark(s: &Arc<MockState>, call: &Call) -> Answer {
    if call.bearer() != Some(MOCK_API_KEY) {
        return answer(
            ark_error(
                401,
                "AuthenticationError",
                "The API key in the request is missing or invalid.",
            ),
            "",
        );
    }
    let render = |f: Fault, _ra: u64| match f {
        Fault::RateLimited | Fault::Concurrency => ark_error(
            429,
            "ModelAccountRpmRateLimitExceeded",
            "Request per minute has exceeded the limit.",
        ),
        Fault::Quota => ark_error(
            403,
            "AccountOverdueError",
            "The request failed because your account has an overdue balance.",
        ),
        Fault::Moderated => ark_error(
            400,
            "InputTextSensitiveContentDetected",
            "The request failed because the input text may contain sensitive information.",
        ),
        _ => ark_error(
            500,
            "InternalServiceError",
            "The service encountered an unexpected internal error.",
        ),
    };
    const TASKS: &str = "/api/v3/contents/generations/tasks";
    if call.method == Method::GET && call.path.starts_with(TASKS) {
        let id = call.path[TASKS.len()..].trim_start_matches('/').to_owned();
        let Some(t) = s.poll_task(&id) else {
            return answer(
                ark_error(404, "ResourceNotFound", "The specified task does not exist."),
                &id,
            );
        };
        if let Some(r) = refuse(s, call, &id, &t.directives, false, render).await {
            return answer(r, &id);
        }
        let v = ark_task(s, &t);
        return answer(reply(200, v), &id);
    }
    if call.method != Method::POST {
        return not_found("");
    }
    let body = call.json();
    let video = call.path == TASKS;
    if !video && call.path != "/api/v3/images/generations" {
        return not_found("");
    }
    let prompt = if video {
        body["content"][0]["text"].as_str().unwrap_or_default().to_owned()
    } else {
        body["prompt"].as_str().unwrap_or_default().to_owned()
    };
    let key = prompt_key(&prompt);
    let d = Directives::parse(&prompt);
    if let Some(r) = refuse(s, call, &key, &d, true, render).await {
        return answer(r, &key);
    }
    if d.moderated {
        return answer(render(Fault::Moderated, 0), &key);
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    if video {
        let mut t = task(s, call, "cgt-", "video", &model, &key, d);
        t.video = true;
        t.duration = prompt
            .split("--dur ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        let id = t.id.clone();
        s.insert_task(t);
        if let Some(url) = body["callback_url"].as_str() {
            call_back(s, id.clone(), url.to_owned(), None, ark_task);
        }
        return answer(reply(200, json!({"id": id})), &key);
    }
    let n = if body["sequential_image_generation"] == "auto" {
        body["sequential_image_generation_options"]["max_images"]
            .as_u64()
            .unwrap_or(1)
            .clamp(1, 15) as u32
    } else {
        1
    };
    let (w, h) = match body["size"].as_str() {
        Some("1K") => (1024, 1024),
        Some("2K") | None => (2048, 2048),
        Some("4K") => (4096, 4096),
        Some(other) => size_of(&json!(other), (2048, 2048)),
    };
    let mut t = task(s, call, "img-", "image", &model, &key, d.clone());
    t.outputs = n;
    t.width = w;
    t.height = h;
    let id = t.id.clone();
    s.insert_task(t);
    let prefix = s.prefix(&call.provider, &call.region);
    let (data, billed): (Vec<Value>, u32) = if d.moderated_output || d.fail {
        let code = if d.fail {
            "InternalServiceError"
        } else {
            "OutputImageSensitiveContentDetected"
        };
        ((0..n).map(|_| json!({"error": {"code": code, "message": "The generated image may contain sensitive information."}})).collect(), 0)
    } else {
        (
            (0..n)
                .map(|i| json!({"url": format!("{prefix}/files/{id}/{i}.jpeg"), "size": format!("{w}x{h}")}))
                .collect(),
            n,
        )
    };
    let r = reply(
        200,
        json!({"model": model, "created": 1_790_000_000u64, "data": data,
        "usage": {"generated_images": billed, "output_tokens": 16_384 * billed, "total_tokens": 16_384 * billed}}),
    );
    answer(r, &key)
}

// ---------------------------------------------------------------- Google

fn google_error(code: u16, status: &str, message: &str, details: Value) -> Response {
    reply(
        code,
        json!({"error": {"code": code, "message": message, "status": status, "details": details}}),
    )
}

fn exhausted(ra: u64, daily: bool) -> Response {
    let quota = if daily {
        "GenerateRequestsPerDayPerProjectPerModel"
    } else {
        "GenerateRequestsPerMinutePerProjectPerModel"
    };
    let mut details = vec![
        json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_requests", "quotaId": quota}]}),
    ];
    if !daily {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{ra}s")}));
    }
    let r = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota.",
        json!(details),
    );
    if daily { r } else { hinted(r, ra) }
}

async fn google(s: &Arc<MockState>, call: &Call) -> Answer {
    if call.header("x-goog-api-key") != Some(MOCK_API_KEY) {
        return answer(
            google_error(
                403,
                "PERMISSION_DENIED",
                "API key not valid. Please pass a valid API key.",
                json!([]),
            ),
            "",
        );
    }
    let render = |f: Fault, ra: u64| match f {
        Fault::RateLimited | Fault::Concurrency => exhausted(ra, false),
        Fault::Quota => exhausted(ra, true),
        Fault::Moderated => google_error(
            400,
            "INVALID_ARGUMENT",
            "The prompt could not be submitted: it violates the usage guidelines.",
            json!([]),
        ),
        _ => google_error(500, "INTERNAL", "An internal error has occurred.", json!([])),
    };
    let path = call.path.trim_start_matches("/v1beta/");
    // Video downloads: files/{task}:download.
    if let Some(file) = path.strip_prefix("files/") {
        let id = file.split(':').next().unwrap_or_default().to_owned();
        return match s.task(&id) {
            Some(t) if !t.directives.expired => media(s, &t, "0.mp4", &id),
            _ => answer(google_error(404, "NOT_FOUND", "File not found.", json!([])), &id),
        };
    }
    // Operations: models/{model}/operations/{id}.
    if call.method == Method::GET {
        let Some(id) = path.split("/operations/").nth(1).map(str::to_owned) else {
            return not_found("");
        };
        let Some(t) = s.poll_task(&id) else {
            return answer(google_error(404, "NOT_FOUND", "Operation not found.", json!([])), &id);
        };
        if let Some(r) = refuse(s, call, &id, &t.directives, false, render).await {
            return answer(r, &id);
        }
        let name = format!("models/{}/operations/{id}", t.model);
        let d = &t.directives;
        let v = if t.polls <= d.pending {
            json!({"name": name, "done": false})
        } else if d.fail {
            json!({"name": name, "done": true, "error": {"code": 13, "message": "Video generation failed."}})
        } else if d.moderated_output {
            json!({"name": name, "done": true, "response": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                "generateVideoResponse": {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": ["The video was filtered by our safety filters."]}}})
        } else {
            let prefix = s.prefix(&t.provider, &t.region);
            let samples: Vec<Value> = (0..t.outputs)
                .map(|_| json!({"video": {"uri": format!("{prefix}/v1beta/files/{id}:download?alt=media")}}))
                .collect();
            json!({"name": name, "done": true, "response": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                "generateVideoResponse": {"generatedSamples": samples}}})
        };
        return answer(reply(200, v), &id);
    }
    let Some((model, method)) = path.strip_prefix("models/").and_then(|m| m.rsplit_once(':')) else {
        return not_found("");
    };
    let (model, method) = (model.to_owned(), method.to_owned());
    let body = call.json();
    let prompt = match method.as_str() {
        "generateContent" => body["contents"][0]["parts"][0]["text"].as_str(),
        _ => body["instances"][0]["prompt"].as_str(),
    }
    .unwrap_or_default()
    .to_owned();
    let key = prompt_key(&prompt);
    let d = Directives::parse(&prompt);
    if let Some(r) = refuse(s, call, &key, &d, true, render).await {
        return answer(r, &key);
    }
    let samples = body["parameters"]["sampleCount"].as_u64().unwrap_or(1).clamp(1, 4) as usize;
    let img = || b64(&s.media.image(1024, 1024, false, tint(&key, &d)));
    match method.as_str() {
        "generateContent" => {
            let v = if d.moderated || d.moderated_output {
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "I can't create that image."}]}, "finishReason": "IMAGE_SAFETY"}]})
            } else if d.fail {
                return answer(render(Fault::ServerError, 0), &key);
            } else {
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Here is your image."}, {"inlineData": {"mimeType": "image/png", "data": img()}}]}, "finishReason": "STOP"}],
                       "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302}})
            };
            answer(reply(200, v), &key)
        }
        "predict" => {
            let v = if d.moderated || d.moderated_output {
                json!({"predictions": [{"raiFilteredReason": "Your current safety filter threshold filtered out the generated images."}]})
            } else if d.fail {
                return answer(render(Fault::ServerError, 0), &key);
            } else {
                let data = img();
                json!({"predictions": (0..samples).map(|_| json!({"bytesBase64Encoded": data, "mimeType": "image/png"})).collect::<Vec<_>>()})
            };
            answer(reply(200, v), &key)
        }
        "predictLongRunning" => {
            // Veo reports refusals in the finished operation, not at submit.
            let mut d = d;
            d.moderated_output |= d.moderated;
            let mut t = task(s, call, "op", "operation", &model, &key, d);
            t.video = true;
            t.outputs = samples.min(2) as u32;
            t.duration = body["parameters"]["durationSeconds"].as_u64().unwrap_or(8) as u32;
            let name = format!("models/{model}/operations/{}", t.id);
            s.insert_task(t);
            answer(reply(200, json!({"name": name})), &key)
        }
        _ => not_found(&key),
    }
}
