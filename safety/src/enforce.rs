//! Taking matched content down, the one way every path does it: a worker's automatic block
//! (a sure match) and a reviewer's confirmation (a near-match a person looked at).
//!
//! In order, each step idempotent so a retry finishes what an attempt began:
//! 1. **preserve**, where the category's policy says so: the content is copied, sealed, into
//!    the quarantine ([`crate::evidence`]) *before* anything is deleted;
//! 2. **delete** it from the user-facing store (the job's files and the input they were made
//!    from);
//! 3. lower the user's **trust** (blocked below the threshold);
//! 4. record a **moderation event** per matching list (category, list, distance, action, the
//!    prompt's SHA-256 — never the prompt or the media);
//! 5. make the **report**, where the policy reports: queued at once when a reviewer confirmed
//!    it or the policy submits automatically, else awaiting a reviewer's confirmation.
//!
//! Without evidence keys nothing can be preserved: the takedown goes on (content must leave
//! the user-facing store at once), and the gap is logged as an error and said in the outcome.

use gantry_store::OutputStore;

use crate::error::SafetyError;
use crate::evidence::{Case, Vault};
use crate::moderation::{ModerationEvent, ModerationLog};
use crate::policy::{CategoryPolicy, Policies};
use crate::reports::{Report, ReportStatus, ReportedMatch, Reports};
use crate::review::ReviewMatch;
use crate::trust::{TrustRegistry, TrustStatus};

/// Trust taken per matched job and where blocking starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Penalty {
    /// Taken off the user's score.
    pub amount: f64,
    /// Below this the user is blocked.
    pub block_below: f64,
}

impl Default for Penalty {
    /// A hash match takes half the score; below 0.3 the user is blocked (a second match blocks).
    fn default() -> Self {
        Self {
            amount: 0.5,
            block_below: 0.3,
        }
    }
}

/// What to take down, and why.
#[derive(Clone, Debug)]
pub struct Takedown<'a> {
    /// The job's id (the case's).
    pub job_id: &'a str,
    /// Tenant.
    pub tenant: &'a str,
    /// The platform's user id.
    pub user: &'a str,
    /// The prompt's SHA-256, for a generate job.
    pub prompt_sha256: Option<String>,
    /// The object the job's outputs were made from (an upscale's or a transcode's, a
    /// csam_hash job's upload), taken down with them; the job's own files are found by its
    /// folder.
    pub input: Option<&'a str>,
    /// What matched (at least one).
    pub matches: &'a [ReviewMatch],
    /// The reviewer who confirmed it (`None`: an automatic block).
    pub reviewer: Option<&'a str>,
}

/// What a takedown did.
#[derive(Clone, Debug)]
pub struct TakenDown {
    /// Objects deleted.
    pub deleted: u32,
    /// The category acted on (the first match's).
    pub category: String,
    /// Its policy.
    pub policy: CategoryPolicy,
    /// The evidence preserved.
    pub evidence_id: Option<String>,
    /// Why nothing was preserved where the policy asked (no keys).
    pub unpreserved: Option<String>,
    /// The report made.
    pub report: Option<(String, ReportStatus)>,
    /// The user's standing after.
    pub standing: TrustStatus,
    /// The action recorded (`blocked_deleted`, `blocked_after_review`).
    pub action: &'static str,
    /// The moderation events' categories, one per matching list.
    pub categories: Vec<String>,
}

/// The takedown path, with everything it writes to.
#[derive(Clone, Debug)]
pub struct Enforcer {
    outputs: OutputStore,
    vault: Vault,
    policies: Policies,
    log: ModerationLog,
    trust: TrustRegistry,
    reports: Reports,
    penalty: Penalty,
}

impl Enforcer {
    /// An enforcer over the outputs' store and the rest of the safety records.
    pub fn new(
        outputs: OutputStore,
        vault: Vault,
        (policies, log, trust, reports): (Policies, ModerationLog, TrustRegistry, Reports),
        penalty: Penalty,
    ) -> Self {
        Self {
            outputs,
            vault,
            policies,
            log,
            trust,
            reports,
            penalty,
        }
    }

    /// The same enforcer preserving evidence in `vault`.
    pub fn with_vault(mut self, vault: Vault) -> Self {
        self.vault = vault;
        self
    }

    /// The categories' policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The moderation log.
    pub fn log(&self) -> &ModerationLog {
        &self.log
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The reports.
    pub fn reports(&self) -> &Reports {
        &self.reports
    }

    /// The outputs' store.
    pub fn outputs(&self) -> &OutputStore {
        &self.outputs
    }

    /// What `t` takes down, as (name, object key): every file under the job's folder, and its
    /// input (named `input-<name>`) unless the folder holds it.
    async fn objects_of(&self, t: &Takedown<'_>) -> Result<Vec<(String, String)>, SafetyError> {
        let name = |k: &str| k.rsplit('/').next().unwrap_or(k).to_owned();
        let mut objects: Vec<(String, String)> = self
            .outputs
            .list_job_of(t.tenant, t.user, t.job_id)
            .await?
            .into_iter()
            .map(|(k, _)| (name(&k), k))
            .collect();
        if let Some(input) = t.input
            && !objects.iter().any(|(_, k)| k == input)
        {
            objects.push((format!("input-{}", name(input)), input.to_owned()));
        }
        Ok(objects)
    }

    /// Takes `t` down (see the module's steps).
    pub async fn take_down(&self, t: &Takedown<'_>) -> Result<TakenDown, SafetyError> {
        let first = t
            .matches
            .first()
            .ok_or_else(|| SafetyError::Conflict("no match to act on".into()))?;
        let policy = self.policies.get(&first.category).await?;
        let user_key = gantry_queue::user_key(t.tenant, t.user);
        let objects = self.objects_of(t).await?;
        let (mut evidence_id, mut unpreserved) = (None, None);
        if policy.preserve {
            if self.vault.can_preserve() {
                let case = Case {
                    id: t.job_id,
                    category: &first.category,
                    tenant: t.tenant,
                    user_key: &user_key,
                    days: policy.evidence_days,
                };
                // Objects already gone (a retried attempt deleted them) are not preserved twice:
                // the record of the first attempt stands.
                let record = self.vault.preserve(&case, &self.outputs, &objects).await?;
                evidence_id = Some(record.id);
            } else {
                let why = "no evidence keys (GANTRY_EVIDENCE_KEYS): the content was deleted without being preserved";
                tracing::error!(job_id = %t.job_id, category = %first.category, "{why}");
                unpreserved = Some(why.to_owned());
            }
        }
        let mut deleted = 0u32;
        for (_, key) in &objects {
            if self.outputs.delete(key).await? {
                deleted += 1;
            }
        }
        let action = if t.reviewer.is_some() {
            "blocked_after_review"
        } else {
            "blocked_deleted"
        };
        let why = match t.reviewer {
            Some(r) => format!(
                "job {}: a reviewer ({r}) confirmed its match with hash list {} v{} ({})",
                t.job_id, first.list, first.list_version, first.category
            ),
            None => format!(
                "job {} matched hash list {} v{} ({})",
                t.job_id, first.list, first.list_version, first.category
            ),
        };
        let standing = self
            .trust
            .penalize(
                t.tenant,
                t.user,
                self.penalty.amount,
                self.penalty.block_below,
                ("hash_match", &why),
            )
            .await?;
        let categories = self.record_events(t, action, deleted, standing, "").await?;
        let report = if policy.report {
            let status = if t.reviewer.is_some() || policy.auto_submit {
                ReportStatus::Queued
            } else {
                ReportStatus::AwaitingConfirmation
            };
            let now = crate::trust::now_ms();
            let r = self
                .reports
                .create(Report {
                    id: t.job_id.to_owned(),
                    created_at_ms: now,
                    status,
                    category: first.category.clone(),
                    incident_at_ms: now,
                    tenant: t.tenant.to_owned(),
                    user: t.user.to_owned(),
                    job_id: t.job_id.to_owned(),
                    matches: t
                        .matches
                        .iter()
                        .map(|m| ReportedMatch {
                            list: m.list.clone(),
                            list_version: m.list_version,
                            match_kind: m.match_kind.clone(),
                            distance: m.distance,
                            entry: m.entry.clone(),
                        })
                        .collect(),
                    evidence_id: evidence_id.clone(),
                    viewed_by_reviewer: t.reviewer.is_some(),
                    confirmed_by: t.reviewer.map(str::to_owned),
                    authority_report_id: None,
                    uploaded: Vec::new(),
                    attempts: 0,
                    last_error: None,
                    submitted_at_ms: None,
                    history: Vec::new(),
                })
                .await?;
            Some((r.id, r.status))
        } else {
            None
        };
        Ok(TakenDown {
            deleted,
            category: first.category.clone(),
            policy,
            evidence_id,
            unpreserved,
            report,
            standing,
            action,
            categories,
        })
    }

    /// Records one moderation event per matching list ([`record_events`]).
    pub async fn record_events(
        &self,
        t: &Takedown<'_>,
        action: &str,
        deleted: u32,
        standing: TrustStatus,
        suffix: &str,
    ) -> Result<Vec<String>, SafetyError> {
        record_events(&self.log, t, action, (deleted, standing), suffix).await
    }

    /// The user's standing, unchanged (what a hold or a clear records).
    pub async fn standing(&self, tenant: &str, user: &str) -> Result<TrustStatus, SafetyError> {
        Ok(self.trust.status(tenant, user).await?)
    }
}

/// Records in `log` one moderation event per matching list of `t` (at its first match) with
/// `action`, the objects `deleted` and the user's `standing`; `suffix` keeps events of one job's
/// different actions apart (`-review`). Returns the categories recorded, one per list.
pub async fn record_events(
    log: &ModerationLog,
    t: &Takedown<'_>,
    action: &str,
    (deleted, standing): (u32, TrustStatus),
    suffix: &str,
) -> Result<Vec<String>, SafetyError> {
    let now = crate::trust::now_ms();
    let mut seen = std::collections::BTreeSet::new();
    let mut categories = Vec::new();
    for m in t.matches {
        if !seen.insert(m.list.clone()) {
            continue;
        }
        let event = ModerationEvent {
            id: format!("{}-{}{suffix}", t.job_id, m.list),
            at_ms: now,
            category: m.category.clone(),
            list: m.list.clone(),
            list_version: m.list_version,
            match_kind: m.match_kind.clone(),
            distance: m.distance,
            action: action.into(),
            objects_deleted: deleted,
            tenant: t.tenant.to_owned(),
            user: t.user.to_owned(),
            job_id: t.job_id.to_owned(),
            prompt_sha256: t.prompt_sha256.clone(),
            trust_score: standing.score,
            user_blocked: standing.blocked,
        };
        log.record(&event).await?;
        categories.push(m.category.clone());
    }
    Ok(categories)
}
