//! Replaying and purging dead letters, with their audit entry: the one implementation the
//! operator API (`POST /v1/admin/dead-letters:replay|purge`) and the CLI (`gantry dlq replay|
//! purge`) both run. Each change is written to the audit log after it is made; a change that
//! cannot be audited is reported as failed (it has happened, and is idempotent to repeat).

use gantry_queue::{DeadAction, DeadFilter, JobId, QueueClient, QueueError, QueueName};
use gantry_safety::{AuditEntry, AuditLog, SafetyError};

/// Why an action on dead letters failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The queue refused or failed (not found, not dead-lettered, Redis).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The change was made but could not be audited.
    #[error("{action} done, but writing the audit log failed: {source}")]
    Audit {
        /// The audited action (`dead_letters.replay`).
        action: &'static str,
        /// Why.
        source: SafetyError,
    },
}

/// What a filter selected, as the audit log names it (`*` for any).
#[derive(Clone, Debug, Default)]
pub struct Selection<'a> {
    /// The pool asked for.
    pub pool: Option<&'a str>,
    /// The kind asked for.
    pub kind: Option<&'a str>,
}

/// Acts on dead letters for one actor (`tenant/key:fingerprint` or `cli/USER`).
#[derive(Clone, Debug)]
pub struct DeadLetters {
    queue: QueueClient,
    audit: AuditLog,
}

/// The audit log's name for `action`.
pub fn audit_action(action: DeadAction) -> &'static str {
    match action {
        DeadAction::Replay => "dead_letters.replay",
        DeadAction::Purge => "dead_letters.purge",
    }
}

/// The past tense the answers use (`replayed`, `purged`).
pub fn done_word(action: DeadAction) -> &'static str {
    match action {
        DeadAction::Replay => "replayed",
        DeadAction::Purge => "purged",
    }
}

impl DeadLetters {
    /// Over `queue`, auditing to `audit`.
    pub fn new(queue: QueueClient, audit: AuditLog) -> Self {
        Self { queue, audit }
    }

    async fn record(
        &self,
        actor: &str,
        action: DeadAction,
        target: String,
        details: serde_json::Value,
    ) -> Result<(), DeadLetterError> {
        let action = audit_action(action);
        let entry = AuditEntry::new(actor, action, target).details(details);
        self.audit
            .record(&entry)
            .await
            .map(|_| ())
            .map_err(|source| DeadLetterError::Audit { action, source })
    }

    /// Replays or purges one dead-lettered job, audited.
    pub async fn act_on_one(&self, actor: &str, id: JobId, action: DeadAction) -> Result<(), DeadLetterError> {
        self.queue.act_on_one(id, action).await?;
        self.record(actor, action, id.to_string(), serde_json::Value::Null)
            .await
    }

    /// [`DeadLetters::count`] reading at most `budget` records over all `queues` for a class
    /// or tenant filter: the count, and whether it is complete (else a lower bound).
    pub async fn count_within(
        &self,
        queues: &[QueueName],
        filter: &DeadFilter,
        budget: usize,
    ) -> Result<(u64, bool), DeadLetterError> {
        let (mut n, mut left) = (0, budget);
        for q in queues {
            if left == 0 {
                return Ok((n, false));
            }
            let (count, read, complete) = self.queue.count_dead_within(q, filter, left).await?;
            n += count;
            left = left.saturating_sub(read);
            if !complete {
                return Ok((n, false));
            }
        }
        Ok((n, true))
    }

    /// How many dead letters `filter` selects in `queues` (a dry run).
    pub async fn count(&self, queues: &[QueueName], filter: &DeadFilter) -> Result<u64, DeadLetterError> {
        let mut n = 0;
        for q in queues {
            n += self.queue.count_dead(q, filter).await?;
        }
        Ok(n)
    }

    /// Replays or purges every dead letter `filter` selects in `queues`, calling `progress` with
    /// each batch's count; then audits the whole action once. Returns how many were acted on.
    pub async fn act_on_matching(
        &self,
        actor: &str,
        queues: &[QueueName],
        filter: &DeadFilter,
        selection: &Selection<'_>,
        action: DeadAction,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, DeadLetterError> {
        let mut n = 0;
        for q in queues {
            n += self.queue.act_on_matching(q, filter, action, &mut progress).await?;
        }
        let target = format!(
            "pool={} kind={} class={} tenant={}",
            selection.pool.unwrap_or("*"),
            selection.kind.unwrap_or("*"),
            filter.class.map_or("*", |c| c.as_str()),
            filter.tenant.as_deref().unwrap_or("*")
        );
        let details =
            serde_json::json!({ done_word(action): n, "since_ms": filter.since_ms, "until_ms": filter.until_ms });
        self.record(actor, action, target, details).await?;
        tracing::info!(
            action = action.as_str(),
            count = n,
            "dead letters acted on by an operator"
        );
        Ok(n)
    }
}
