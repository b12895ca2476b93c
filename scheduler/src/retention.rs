//! Retention enforced and reported ([`RetentionPolicy`], from `GANTRY_RETENTION`).
//!
//! Redis records carry their own TTLs (set by the scripts as jobs end); the [`Sweeper`] removes
//! what has none: job outputs in the object store past `outputs_days`, audit entries past
//! `audit_days` on a quiet log, and expired ids in the moderation index. Every scheduler
//! replica runs one; a Redis lock lets one sweep per interval. [`report`] lists, per data
//! class, what is stored, what a sweep would remove now and when the next removal falls due
//! (`gantry retention report`).

use std::time::Duration;

use gantry_queue::retention::days;
use gantry_queue::{JobKind, Pool, QueueClient, QueueError, RedisConn, RetentionPolicy};
use gantry_safety::{AuditLog, ModerationLog, SafetyError};
use gantry_store::{OutputError, OutputStore};
use tokio_util::sync::CancellationToken;

/// The lock one sweeping replica holds per interval.
const LOCK: &str = "gantry:{retention}:sweep-lock";

/// Why a sweep or a report failed.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The audit or moderation log failed.
    #[error(transparent)]
    Safety(#[from] SafetyError),
    /// The object store failed.
    #[error(transparent)]
    Outputs(#[from] OutputError),
}

impl From<redis::RedisError> for RetentionError {
    fn from(e: redis::RedisError) -> Self {
        Self::Queue(e.into())
    }
}

/// What one sweep removed (or, as a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepOutcome {
    /// Outputs older than `outputs_days`.
    pub outputs: u64,
    /// Their bytes.
    pub output_bytes: u64,
    /// Audit entries older than `audit_days`.
    pub audit_entries: u64,
    /// Moderation index ids whose record had expired.
    pub moderation_index: u64,
    /// Users' data export archives older than `exports_days` (counted among `outputs` too).
    pub exports: u64,
    /// Preserved evidence cases past their expiry (their category's `evidence_days`).
    pub evidence: u64,
    /// Whether anything was left as it was (a dry run).
    pub dry_run: bool,
}

/// Removes what is past its retention.
#[derive(Clone, Debug)]
pub struct Sweeper {
    policy: RetentionPolicy,
    conn: RedisConn,
    outputs: Option<OutputStore>,
    audit: AuditLog,
    moderation: ModerationLog,
    metrics: Option<std::sync::Arc<crate::metrics::SchedulerMetrics>>,
    vault: Option<gantry_safety::Vault>,
}

impl Sweeper {
    /// A sweeper over the fleet's Redis (`conn`) and, if given, its output store.
    pub fn new(policy: RetentionPolicy, conn: RedisConn, outputs: Option<OutputStore>) -> Self {
        Self {
            audit: AuditLog::new(conn.clone(), days(policy.audit_days)),
            moderation: ModerationLog::new(conn.clone(), (&policy).into()),
            policy,
            conn,
            outputs,
            metrics: None,
            vault: None,
        }
    }

    /// Deletes preserved evidence past its expiry from `vault` too (each case audited).
    pub fn with_vault(mut self, vault: gantry_safety::Vault) -> Self {
        self.vault = Some(vault);
        self
    }

    /// Counts what each sweep removes in `metrics` (`gantry_retention_removed_total`).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::SchedulerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One sweep now; `dry_run` counts without removing (audit entries and index ids are
    /// counted only when removed, so a dry run reports the outputs alone).
    pub async fn sweep(&self, dry_run: bool) -> Result<SweepOutcome, RetentionError> {
        let now = now_ms(&self.conn).await?;
        let mut out = SweepOutcome {
            dry_run,
            ..Default::default()
        };
        if let Some(store) = &self.outputs {
            let cutoff = now.saturating_sub(days(self.policy.outputs_days).as_millis() as u64);
            let exports = now.saturating_sub(days(self.policy.export_days()).as_millis() as u64);
            let r = store.sweep(cutoff as i64, exports as i64, dry_run).await?;
            out.outputs = r.expired;
            out.output_bytes = r.expired_bytes;
            out.exports = r.exports_expired;
            if !dry_run && r.exports_expired > 0 {
                // Users were told their archive would be deleted; the log says when it was.
                let entry = gantry_safety::AuditEntry::new("retention", "users.export.expire", "outputs").details(
                    serde_json::json!({ "archives": r.exports_expired, "exports_days": self.policy.exports_days }),
                );
                if let Err(e) = self.audit.record(&entry).await {
                    tracing::error!(error = %e, "auditing expired export archives failed");
                }
            }
        }
        if let Some(vault) = &self.vault {
            let expired = vault.expired(now, 1000).await?;
            out.evidence = expired.len() as u64;
            if !dry_run {
                for id in expired {
                    let Some(r) = vault.destroy(&id).await? else { continue };
                    // Deleted as the law's period ran out: the log says what and when.
                    let entry =
                        gantry_safety::AuditEntry::new("retention", "evidence.expire", format!("evidence:{id}"))
                            .details(serde_json::json!({
                                "category": r.category, "files": r.files.len(),
                                "preserved_at_ms": r.preserved_at_ms, "expires_at_ms": r.expires_at_ms,
                            }));
                    self.audit.record(&entry).await?;
                    tracing::info!(case = %id, category = %r.category, "preserved evidence expired: deleted");
                }
            }
        }
        if !dry_run {
            out.audit_entries = self.audit.trim(now).await?;
            out.moderation_index = self.moderation.prune_index(now, 10_000).await?;
        }
        Ok(out)
    }

    /// Sweeps every `every` until `stop`, when this replica wins the interval's lock.
    pub async fn run(self, every: Duration, stop: CancellationToken) {
        let me = format!(
            "{}-{}",
            std::process::id(),
            now_ms(&self.conn).await.unwrap_or_default()
        );
        loop {
            match self.lock(&me, every).await {
                Ok(true) => match self.sweep(false).await {
                    Ok(o) => {
                        if let Some(m) = &self.metrics {
                            for (class, n) in [
                                ("outputs", o.outputs),
                                ("export_archives", o.exports),
                                ("evidence", o.evidence),
                                ("audit_entries", o.audit_entries),
                                ("moderation_index", o.moderation_index),
                            ] {
                                m.retention_removed
                                    .get_or_create(&crate::metrics::ClassLabels { class: class.into() })
                                    .inc_by(n);
                            }
                        }
                        tracing::info!(
                            outputs = o.outputs,
                            output_bytes = o.output_bytes,
                            export_archives = o.exports,
                            evidence = o.evidence,
                            audit_entries = o.audit_entries,
                            moderation_index = o.moderation_index,
                            "retention sweep"
                        )
                    }
                    Err(e) => tracing::warn!(error = %e, "retention sweep failed; next interval retries"),
                },
                Ok(false) => tracing::debug!("another replica sweeps this interval"),
                Err(e) => tracing::warn!(error = %e, "retention sweep lock unavailable"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn lock(&self, me: &str, every: Duration) -> Result<bool, RetentionError> {
        let mut c = self.conn.clone();
        let hold = (every.as_millis() as u64).saturating_sub(1000).max(1000);
        let r: Option<String> = redis::cmd("SET")
            .arg(LOCK)
            .arg(me)
            .arg("NX")
            .arg("PX")
            .arg(hold)
            .query_async(&mut c)
            .await?;
        Ok(r.is_some())
    }
}

async fn now_ms(conn: &RedisConn) -> Result<u64, RetentionError> {
    let mut c = conn.clone();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
    Ok(secs * 1000 + micros / 1000)
}

/// One data class in a [`report`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClassReport {
    /// The class (`job_records`, `dead_letters`, `idempotency_keys`, `moderation_events`,
    /// `audit_log`, `outputs`).
    pub class: &'static str,
    /// What the policy keeps, in words.
    pub kept: String,
    /// Items stored.
    pub stored: u64,
    /// Items kept while they are in use (running or waiting jobs), with no expiry yet.
    pub active: u64,
    /// Items a sweep would remove now (classes that expire by TTL show 0: Redis removes them).
    pub due_now: u64,
    /// When the next item goes (ms since the epoch), if any will.
    pub next_removal_ms: Option<u64>,
}

/// Per data class: what is stored, what is due, and when the next removal falls.
pub async fn report(
    policy: &RetentionPolicy,
    queue: &QueueClient,
    outputs: Option<&OutputStore>,
) -> Result<Vec<ClassReport>, RetentionError> {
    let conn = queue.connection();
    let now = now_ms(&conn).await?;
    let d = |n: u32| format!("{n} days");
    let mut records = ClassReport {
        class: "job_records",
        kept: format!(
            "{} after a job ends; {} once dead-lettered",
            d(policy.job_records_days),
            d(policy.dead_letters_days)
        ),
        stored: 0,
        active: 0,
        due_now: 0,
        next_removal_ms: None,
    };
    let mut idem = ClassReport {
        class: "idempotency_keys",
        kept: format!("{} after the first job", d(policy.idempotency_days)),
        ..records.clone()
    };
    let mut dead = ClassReport {
        class: "dead_letters",
        kept: format!("{} after the job died", d(policy.dead_letters_days)),
        ..records.clone()
    };
    for pool in queue.pools().await? {
        ttl_scan(&conn, &format!("{}job:*", pool.prefix()), now, &mut records).await?;
        ttl_scan(&conn, &format!("{}idem:*", pool.prefix()), now, &mut idem).await?;
        dead_letters(&conn, &pool, policy, now, &mut dead).await?;
    }
    let mut moderation = ClassReport {
        class: "moderation_events",
        kept: format!(
            "{}; {} for {}",
            d(policy.moderation_days),
            d(policy.moderation_critical_days),
            policy.critical_categories.join(", ")
        ),
        ..zero(&records)
    };
    ttl_scan(&conn, "gantry:{moderation}:event:*", now, &mut moderation).await?;
    let audit = AuditLog::new(conn.clone(), days(policy.audit_days));
    let (len, oldest) = audit.extent().await?;
    let keep_ms = days(policy.audit_days).as_millis() as u64;
    let audit_report = ClassReport {
        class: "audit_log",
        kept: d(policy.audit_days),
        stored: len,
        active: 0,
        due_now: u64::from(oldest.is_some_and(|o| o + keep_ms <= now)),
        next_removal_ms: oldest.map(|o| o + keep_ms),
    };
    let mut classes = vec![records, dead, idem, moderation, audit_report];
    if let Some(store) = outputs {
        let keep_ms = days(policy.outputs_days).as_millis() as u64;
        let exports_ms = days(policy.export_days()).as_millis() as u64;
        let r = store
            .sweep(
                now.saturating_sub(keep_ms) as i64,
                now.saturating_sub(exports_ms) as i64,
                true,
            )
            .await?;
        classes.push(ClassReport {
            class: "outputs",
            kept: format!("{} after they were written", d(policy.outputs_days)),
            stored: r.scanned,
            active: 0,
            due_now: r.expired,
            next_removal_ms: if r.expired > 0 {
                Some(now)
            } else {
                r.oldest_kept_ms.map(|t| t.max(0) as u64 + keep_ms)
            },
        });
        // Users' data exports: archives among the outputs, kept a shorter time.
        classes.push(ClassReport {
            class: "export_archives",
            kept: format!("{} after they were made", d(policy.export_days())),
            stored: r.exports_scanned,
            active: 0,
            due_now: r.exports_expired,
            next_removal_ms: (r.exports_expired > 0).then_some(now),
        });
    }
    Ok(classes)
}

fn zero(template: &ClassReport) -> ClassReport {
    ClassReport {
        stored: 0,
        active: 0,
        due_now: 0,
        next_removal_ms: None,
        ..template.clone()
    }
}

/// Counts the keys matching `pattern` (one hash tag) and finds the soonest expiry.
async fn ttl_scan(conn: &RedisConn, pattern: &str, now: u64, into: &mut ClassReport) -> Result<(), RetentionError> {
    let mut cursor = 0;
    loop {
        let (next, keys) = conn.scan_page(pattern, cursor, 1000).await?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("PTTL").arg(k);
            }
            let ttls: Vec<i64> = pipe.query_async(&mut conn.clone()).await?;
            for t in ttls {
                match t {
                    -2 => {}
                    -1 => {
                        into.stored += 1;
                        into.active += 1;
                    }
                    ms => {
                        into.stored += 1;
                        let at = now + ms.max(0) as u64;
                        into.next_removal_ms = Some(into.next_removal_ms.map_or(at, |n| n.min(at)));
                    }
                }
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The dead-letter entries of a pool: scored by when the job died; the reaper drops them
/// `dead_letters_days` later.
async fn dead_letters(
    conn: &RedisConn,
    pool: &Pool,
    policy: &RetentionPolicy,
    now: u64,
    into: &mut ClassReport,
) -> Result<(), RetentionError> {
    let keep_ms = days(policy.dead_letters_days).as_millis() as u64;
    let mut pipe = redis::pipe();
    for kind in JobKind::ALL {
        let key = pool.queue_key(kind, "dead");
        pipe.cmd("ZCARD").arg(&key);
        pipe.cmd("ZRANGE").arg(&key).arg(0).arg(0).arg("WITHSCORES");
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut conn.clone()).await?;
    for pair in replies.chunks(2) {
        let n: u64 = redis::from_redis_value(pair[0].clone()).unwrap_or(0);
        let oldest: Vec<(String, f64)> = redis::from_redis_value(pair[1].clone()).unwrap_or_default();
        into.stored += n;
        if let Some((_, died)) = oldest.first() {
            let at = *died as u64 + keep_ms;
            if at <= now {
                into.due_now += 1;
            }
            into.next_removal_ms = Some(into.next_removal_ms.map_or(at, |m| m.min(at)));
        }
    }
    Ok(())
}
