//! The audit log from the API's side: every operator change is recorded with the caller's
//! tenant and key fingerprint, or reported as failed.

use gantry_safety::AuditEntry;

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

pub(crate) use crate::problem::safety_error;

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
