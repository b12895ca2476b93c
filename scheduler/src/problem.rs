//! API errors as RFC 7807 `application/problem+json`, each with a stable machine-readable `code`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_queue::{QueueError, ValidationError};

/// Everything the API answers with an error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown API key.
    #[error("a valid API key is required (Authorization: Bearer <key>)")]
    Unauthenticated,
    /// The key lacks a scope.
    #[error("this API key lacks the {0} scope")]
    Forbidden(&'static str),
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body is too large.
    #[error("request body over {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body did not arrive whole in time (or the client broke it off).
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The job (or a field of it) is invalid.
    #[error("{0}")]
    InvalidRequest(String),
    /// A pipeline that is not well formed: names the step (where there is one) and the field.
    #[error("{}{field}: {reason}", step.as_deref().map(|s| format!("step {s}: ")).unwrap_or_default())]
    InvalidPipeline {
        /// The step.
        step: Option<String>,
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// Unknown provider or model (in this deployment: the request itself is well formed).
    #[error("{0}")]
    UnknownModel(String),
    /// Well formed, but not something this deployment does: a model's limits (samples, clip
    /// length, size), fields that contradict each other.
    #[error("{0}")]
    Unprocessable(String),
    /// Not enough credits.
    #[error("insufficient credits: {needed} needed, {balance} available")]
    InsufficientCredits {
        /// Balance.
        balance: i64,
        /// Needed.
        needed: i64,
    },
    /// Over the plan's rate.
    #[error("rate limit exceeded; retry after {} ms", .0.as_millis())]
    RateLimited(Duration),
    /// More jobs in one batch than the plan's burst allows at once.
    #[error("batch larger than the plan's burst; split it")]
    BatchExceedsBurst,
    /// The user is blocked (or below the trust floor).
    #[error("user is blocked")]
    UserBlocked,
    /// Residency rules leave no provider.
    #[error("{0}")]
    NoAllowedProvider(String),
    /// No declared pool can run the job.
    #[error("{0}")]
    Unplaceable(String),
    /// No such job (or not this tenant's).
    #[error("job not found")]
    NotFound,
    /// A search cursor that names no page (garbled, or another search's).
    #[error("{0}")]
    UnknownCursor(String),
    /// The job already ended.
    #[error("{0}")]
    Conflict(String),
    /// The route does not exist.
    #[error("no such route")]
    NoRoute,
    /// Redis is unreachable or failed.
    #[error("the queue is unavailable; retry")]
    Unavailable,
    /// A capability this deployment has not been configured for.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// A bug.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Why a body could not be read: over `limit` bytes (413), or not whole in time (408).
    pub fn of_body(e: axum::extract::rejection::BytesRejection, limit: usize) -> Self {
        use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
        match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::PayloadTooLarge { limit }
            }
            BytesRejection::FailedToBufferBody(_) => ApiError::BodyTimeout,
            other => ApiError::InvalidRequest(other.body_text()),
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidPipeline { .. } => "invalid_pipeline",
            ApiError::UnknownModel(_) => "unknown_model",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::InsufficientCredits { .. } => "insufficient_credits",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::BatchExceedsBurst => "batch_exceeds_burst",
            ApiError::UserBlocked => "user_blocked",
            ApiError::NoAllowedProvider(_) => "no_allowed_provider",
            ApiError::Unplaceable(_) => "unplaceable",
            ApiError::NotFound => "not_found",
            ApiError::UnknownCursor(_) => "unknown_cursor",
            ApiError::Conflict(_) => "conflict",
            ApiError::NoRoute => "no_route",
            ApiError::Unavailable => "unavailable",
            ApiError::NotConfigured(_) => "not_configured",
            ApiError::Internal => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::UserBlocked => StatusCode::FORBIDDEN,
            // 400: the request does not match the API's document; 422: it does, but this
            // deployment will not do it (see `openapi.json`'s info).
            ApiError::MalformedJson(_) | ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::RateLimited(_) | ApiError::BatchExceedsBurst => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoAllowedProvider(_)
            | ApiError::Unplaceable(_)
            | ApiError::InvalidPipeline { .. }
            | ApiError::UnknownModel(_)
            | ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound | ApiError::NoRoute | ApiError::UnknownCursor(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable | ApiError::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(v: ValidationError) -> Self {
        match v {
            ValidationError::MalformedJson(m) => ApiError::MalformedJson(m),
            // Every field within its bounds, the whole too large: what no schema can say.
            ValidationError::PayloadTooLarge { limit, .. } => ApiError::PayloadTooLarge { limit },
            other => ApiError::InvalidRequest(other.to_string()),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Invalid(v) => v.into(),
            QueueError::NotFound(_) => ApiError::NotFound,
            QueueError::UnknownCursor(_) => ApiError::UnknownCursor(e.to_string()),
            QueueError::AlreadyFinished { .. } | QueueError::NotDeadLettered(_) => ApiError::Conflict(e.to_string()),
            QueueError::Redis { .. } => {
                tracing::warn!(error = %e, "redis failed during a request");
                ApiError::Unavailable
            }
            other => {
                tracing::error!(error = %other, "queue error during a request");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = serde_json::json!({
            "type": format!("https://gantry.dev/problems/{}", self.code()),
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
            "code": self.code(),
        });
        // A pipeline's refusal names the step (where there is one) and the field.
        if let (ApiError::InvalidPipeline { step, field, .. }, Some(o)) = (&self, body.as_object_mut()) {
            if let Some(step) = step {
                o.insert("step".into(), step.clone().into());
            }
            o.insert("field".into(), field.clone().into());
        }
        let mut r = (status, body.to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::RateLimited(d) = &self {
            let secs = d.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// The API's answer for a safety-store failure: the caller's fault as 400/404, Redis as 503,
/// anything else logged and 500.
pub(crate) fn safety_error(e: gantry_safety::SafetyError) -> ApiError {
    match e {
        gantry_safety::SafetyError::InvalidName(_)
        | gantry_safety::SafetyError::InvalidCategory(_)
        | gantry_safety::SafetyError::InvalidEntry { .. }
        | gantry_safety::SafetyError::Hash(_) => ApiError::InvalidRequest(e.to_string()),
        // Well formed, but not a band or a policy that holds together.
        gantry_safety::SafetyError::InvalidThresholds(_) | gantry_safety::SafetyError::InvalidPolicy(_) => {
            ApiError::Unprocessable(e.to_string())
        }
        gantry_safety::SafetyError::NotFound(_) | gantry_safety::SafetyError::NoRecord { .. } => ApiError::NotFound,
        gantry_safety::SafetyError::Conflict(m) => ApiError::Conflict(m),
        gantry_safety::SafetyError::Queue(q) => q.into(),
        other => {
            tracing::error!(error = %other, "safety store failed during a request");
            ApiError::Internal
        }
    }
}
