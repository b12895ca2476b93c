//! Erasure on request (GDPR Art. 17, CCPA), the service behind `DELETE /v1/users/{user_id}/data`.
//!
//! A tenant's `jobs:write` key erases its own users; an operator's `admin` key names the tenant
//! with `?tenant=`. In every pool the user's waiting jobs are cancelled (credits refunded) and
//! deleted, running ones are asked to stop and deleted once they have, and finished and
//! dead-lettered records go with their dead-letter entries and idempotency keys; then every
//! object the user's jobs wrote is deleted from the object store, however old. What retention
//! requires for moderation stays: moderation events (category, list, action, time, the prompt's
//! SHA-256 — never its text) and the user's trust standing. The receipt counts what went;
//! `200` when nothing is left, `202` when a running job had not stopped within
//! `erasure_wait_secs` (call again: the request is idempotent). Every erasure is audited under
//! the user's pseudonymous key, never the user id.
//!
//! [`Eraser`] is the one implementation: the route (`crate::users`) and `gantry users erase` both
//! call it.

use std::time::Duration;

use gantry_queue::{ErasureCounts, QueueClient, QueueError};
use gantry_safety::{AuditEntry, AuditLog, SafetyError};
use gantry_store::{OutputError, OutputStore};

/// Why an erasure failed.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// The user id is empty, too long or has control characters.
    #[error("user_id must be 1..=128 characters without control characters")]
    InvalidUser,
    /// The queue failed (Redis).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The job records are gone, but the output store failed; call again.
    #[error("the output store failed during an erasure: {0}")]
    Store(#[source] OutputError),
    /// Everything was erased, but the audit log could not be written.
    #[error("erased, but writing the audit log failed: {0}")]
    Audit(#[source] SafetyError),
}

/// What an erasure removed and what it kept.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Receipt {
    /// The tenant.
    pub tenant: String,
    /// The user's pseudonymous key, as the audit log names this erasure.
    pub user_key: String,
    /// Nothing of the user's is left but what `kept` names.
    pub complete: bool,
    /// Job records cancelled, deleted, still running; dead-letter entries removed.
    pub jobs: ErasureCounts,
    /// Objects deleted from the output store.
    pub outputs_deleted: usize,
    /// What retention keeps, and why.
    pub kept: Kept,
    /// When (ms since the epoch).
    pub erased_at_ms: u64,
}

/// What an erasure keeps.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Kept {
    /// Moderation events.
    pub moderation_events: &'static str,
    /// Trust records.
    pub trust: &'static str,
}

/// Erases users: their job records in every pool, then their outputs, then an audit entry.
#[derive(Clone, Debug)]
pub struct Eraser {
    queue: QueueClient,
    outputs: OutputStore,
    audit: AuditLog,
    /// How long to wait for the user's running jobs to stop before answering "pending".
    wait: Duration,
}

impl Eraser {
    /// Over these stores; running jobs are waited for up to `wait`.
    pub fn new(queue: QueueClient, outputs: OutputStore, audit: AuditLog, wait: Duration) -> Self {
        Self {
            queue,
            outputs,
            audit,
            wait,
        }
    }

    /// Erases `user` of `tenant` for `actor` (`tenant/key:fingerprint` or `cli/USER`):
    /// idempotent; `complete: false` when a running job had not stopped within the wait.
    pub async fn erase(&self, actor: &str, tenant: &str, user: &str) -> Result<Receipt, ErasureError> {
        // Characters, as the OpenAPI document's maxLength counts them.
        let valid = |s: &str| !s.is_empty() && s.chars().count() <= 128 && !s.chars().any(char::is_control);
        if !valid(user) {
            return Err(ErasureError::InvalidUser);
        }
        let pools = self.queue.pools().await?;
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut jobs = ErasureCounts::default();
        let running = loop {
            let mut running = 0;
            for pool in &pools {
                let c = self.queue.erase_user(pool, tenant, user).await?;
                running += c.running;
                jobs += ErasureCounts { running: 0, ..c };
            }
            if running == 0 || tokio::time::Instant::now() >= deadline {
                break running;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        jobs.running = running;
        // After the records: a job that stopped in the loop above wrote nothing later.
        let outputs_deleted = self
            .outputs
            .delete_user(tenant, user)
            .await
            .map_err(ErasureError::Store)?;
        let receipt = Receipt {
            user_key: gantry_queue::user_key(tenant, user),
            tenant: tenant.to_owned(),
            complete: running == 0,
            jobs,
            outputs_deleted,
            kept: Kept {
                moderation_events: "kept for their retention period: category, list, action, time and the prompt's SHA-256, never its text",
                trust: "the user's trust standing, so a block still holds",
            },
            erased_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        tracing::info!(
            tenant = %receipt.tenant,
            user_key = %receipt.user_key,
            deleted = jobs.deleted,
            cancelled = jobs.cancelled,
            outputs = outputs_deleted,
            still_running = running,
            "user data erased"
        );
        let entry = AuditEntry::new(actor, "users.erase", format!("{}/{}", receipt.tenant, receipt.user_key)).details(
            serde_json::json!({ "jobs": jobs, "outputs_deleted": outputs_deleted, "complete": receipt.complete }),
        );
        self.audit.record(&entry).await.map_err(ErasureError::Audit)?;
        Ok(receipt)
    }
}
