//! The audit log from the API's side: every operator change is recorded with the caller's
//! tenant and key fingerprint, or reported as failed.

use gantry_safety::{AuditEntry, SafetyError};

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

/// The API's answer for a safety-store failure: the caller's fault as 400/404, Redis as 503,
/// anything else logged and 500.
pub(crate) fn safety_error(e: SafetyError) -> ApiError {
    match e {
        SafetyError::InvalidName(_) | SafetyError::InvalidEntry { .. } | SafetyError::Hash(_) => {
            ApiError::InvalidRequest(e.to_string())
        }
        SafetyError::NotFound(_) => ApiError::NotFound,
        SafetyError::Queue(q) => q.into(),
        other => {
            tracing::error!(error = %other, "safety store failed during a request");
            ApiError::Internal
        }
    }
}

/// Records an operator's change; a change that cannot be audited is reported as failed, so no
/// unaudited change goes unnoticed (the change itself has happened: the caller may retry it,
/// every change here being idempotent).
pub(crate) async fn audited(
    state: &AppState,
    who: &Caller,
    action: &str,
    target: impl Into<String>,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    let entry = AuditEntry::new(who.actor(), action, target).details(details);
    state.audit.record(&entry).await.map(|_| ()).map_err(safety_error)
}
