//! Provider errors, classified by what the fleet should do about them. Each provider maps its
//! own statuses and codes into these classes; where a provider overloads an HTTP status (Kling
//! answers 429 both for "slow down" and for "your resource pack is used up") the mapping reads
//! the body, not the status.

use std::time::Duration;

/// What kind of failure, as the fleet acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderErrorClass {
    /// Too many requests: retry after `retry_after` (the provider's, when it gave one).
    RateLimited {
        /// The provider's `Retry-After` (header, or Gemini's `RetryInfo` in the body).
        retry_after: Option<Duration>,
    },
    /// The account's concurrent-task slots are full: retry later.
    ConcurrencyFull,
    /// The account's quota, credits or resource pack is used up: not retried.
    QuotaExhausted,
    /// The provider's safety system refused the prompt or the output: not retried, refunded.
    Moderated,
    /// The request is wrong (parameters, model, input image): not retried.
    InvalidRequest,
    /// Our credentials were refused: not retried (an operator must fix the configuration).
    Unauthorized,
    /// Anything that may work next time: 5xx, timeouts, broken bodies, expired result URLs.
    Transient,
}

impl ProviderErrorClass {
    /// The stable name used in job errors, logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderErrorClass::RateLimited { .. } => "rate_limited",
            ProviderErrorClass::ConcurrencyFull => "concurrency_full",
            ProviderErrorClass::QuotaExhausted => "quota_exhausted",
            ProviderErrorClass::Moderated => "moderated",
            ProviderErrorClass::InvalidRequest => "invalid_request",
            ProviderErrorClass::Unauthorized => "unauthorized",
            ProviderErrorClass::Transient => "transient",
        }
    }

    /// Whether trying again can help.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ProviderErrorClass::RateLimited { .. }
                | ProviderErrorClass::ConcurrencyFull
                | ProviderErrorClass::Transient
        )
    }

    /// Whether the failure says the provider is unwell (counts against its circuit breaker).
    /// Rate limits and refusals of our request say nothing about its health.
    pub fn is_outage(self) -> bool {
        matches!(self, ProviderErrorClass::Transient)
    }

    /// The queue's class for a job attempt that ends with this error.
    pub fn job_class(self) -> gantry_core::ErrorClass {
        if self.is_retryable() {
            gantry_core::ErrorClass::Retryable
        } else {
            gantry_core::ErrorClass::Permanent
        }
    }
}

impl std::fmt::Display for ProviderErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider call that did not succeed. The message never holds the prompt, image bytes or a
/// signed URL: it is the provider's own error text (truncated) or ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{provider} {class}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct ProviderError {
    /// The provider (`kling`, `flux`, ...).
    pub provider: &'static str,
    /// What to do about it.
    pub class: ProviderErrorClass,
    /// The provider's own code (`1102`, `moderation_blocked`, `Request Moderated`), if any.
    pub code: Option<String>,
    /// The HTTP status, if the failure came with one.
    pub status: Option<u16>,
    /// What happened.
    pub message: String,
    /// The request may have reached the provider (a timeout after sending): the task may exist.
    pub outcome_unknown: bool,
}

/// Longest provider message kept.
const MAX_MESSAGE: usize = 300;

impl ProviderError {
    /// An error of `class` with `message` (truncated).
    pub fn new(provider: &'static str, class: ProviderErrorClass, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Self {
            provider,
            class,
            code: None,
            status: None,
            message,
            outcome_unknown: false,
        }
    }

    /// With the provider's code.
    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// With the HTTP status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// What a tenant is told: the provider, the class, the provider's code when it is a plain
    /// token, and a fixed sentence for the class. The provider's own text (which can quote a
    /// fragment of our key, an account id or the request back) is for the operator's log only.
    pub fn tenant_message(&self) -> String {
        let what = match self.class {
            ProviderErrorClass::RateLimited { .. } => "the provider is rate limiting the fleet; the job is retried",
            ProviderErrorClass::ConcurrencyFull => "the provider's concurrent task slots are full; the job is retried",
            ProviderErrorClass::QuotaExhausted => "the fleet's account at the provider is out of quota",
            ProviderErrorClass::Moderated => "the provider's safety system refused the prompt or the output",
            ProviderErrorClass::InvalidRequest => "the provider refused the request's parameters or inputs",
            ProviderErrorClass::Unauthorized => {
                "the provider refused the fleet's credentials; the operators are alerted"
            }
            ProviderErrorClass::Transient => "the provider failed or did not answer in time",
        };
        let code = self
            .code
            .as_deref()
            .filter(|c| {
                !c.is_empty()
                    && c.len() <= 40
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b' '))
            })
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        format!("{} {}{code}: {what}", self.provider, self.class)
    }

    /// The delay the provider asked for, if it is rate limiting.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.class {
            ProviderErrorClass::RateLimited { retry_after } => retry_after,
            _ => None,
        }
    }
}

/// The class for an HTTP status when the body says nothing more specific.
pub fn class_for_status(status: u16, retry_after: Option<Duration>) -> ProviderErrorClass {
    match status {
        401 | 403 => ProviderErrorClass::Unauthorized,
        402 => ProviderErrorClass::QuotaExhausted,
        408 | 425 | 500..=599 => ProviderErrorClass::Transient,
        429 => ProviderErrorClass::RateLimited { retry_after },
        400..=499 => ProviderErrorClass::InvalidRequest,
        _ => ProviderErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_truncated_on_a_char_boundary() {
        let e = ProviderError::new("kling", ProviderErrorClass::Transient, "é".repeat(400));
        assert!(e.message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(e.message.ends_with('…'));
    }

    #[test]
    fn statuses_have_default_classes() {
        assert_eq!(class_for_status(402, None), ProviderErrorClass::QuotaExhausted);
        assert_eq!(class_for_status(503, None), ProviderErrorClass::Transient);
        assert_eq!(class_for_status(404, None), ProviderErrorClass::InvalidRequest);
        assert!(!ProviderErrorClass::Moderated.is_retryable());
        assert!(ProviderErrorClass::ConcurrencyFull.is_retryable());
        assert_eq!(
            ProviderErrorClass::QuotaExhausted.job_class(),
            gantry_core::ErrorClass::Permanent
        );
    }

    #[test]
    fn tenants_get_a_fixed_sentence_not_the_providers_text() {
        let e = ProviderError::new(
            "openai",
            ProviderErrorClass::Unauthorized,
            "Incorrect API key provided: sk-proj-Ab12********************xyZ9. You can find your API key at ...",
        )
        .code("invalid_api_key")
        .status(401);
        let m = e.tenant_message();
        assert!(!m.contains("sk-proj") && !m.contains("xyZ9"), "{m}");
        assert_eq!(
            m,
            "openai unauthorized (invalid_api_key): the provider refused the fleet's credentials; the operators are alerted"
        );
        let weird = ProviderError::new("kling", ProviderErrorClass::Transient, "x").code("<script>sk-123</script>");
        assert_eq!(
            weird.tenant_message(),
            "kling transient: the provider failed or did not answer in time"
        );
    }
}
