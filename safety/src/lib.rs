//! Gantry safety: what the CSAM-hash path needs beyond hashing itself (that is in
//! `gantry_codecs::pdq`).
//!
//! - [`hashlists`]: named, versioned lists of known-bad hashes (PDQ, MD5, SHA-256) in Redis, so
//!   every worker shares them; a new version is written beside the old and made current in one
//!   command, and the old one expires after a grace period.
//! - [`matcher`]: a worker-side cache of the current versions as PDQ multi-indexes and digest
//!   sets, refreshed when a list's version changes; matches carry list, version and distance.
//! - [`moderation`]: moderation events (category, list, distance, action, tenant, user, prompt
//!   SHA-256 — never the prompt or the media), kept 90 days or, for critical categories, 7 years.
//! - [`trust`]: each end user's trust score and block flag, shared with the scheduler's admission.
//! - [`audit`]: the audit log of operators' actions (hash-list changes, replays, pauses).
//! - [`policy`]: what a match does per category (block or review, preserve, report).
//! - [`review`]: the review queue of near-matches withheld for a person's decision.
//! - [`evidence`]: taken-down content preserved, sealed, in the quarantine until its expiry.
//! - [`enforce`]: the takedown path (preserve, delete, trust, events, report).
//! - [`reports`] and [`cybertipline`]: reports to NCMEC's CyberTipline and their submission.

pub mod audit;
pub mod cybertipline;
pub mod enforce;
pub mod error;
pub mod evidence;
pub mod hashlists;
pub mod matcher;
pub mod moderation;
pub mod policy;
pub mod reports;
pub mod review;
pub mod trust;

pub use audit::{AuditEntry, AuditLog};
pub use enforce::{Enforcer, Penalty, Takedown, TakenDown};
pub use error::SafetyError;
pub use evidence::{EvidenceRecord, Vault};
pub use hashlists::{HashList, HashListStore, ListMeta};
pub use matcher::{Match, MatchKind, Matcher, Severity};
pub use moderation::{ModerationEvent, ModerationLog, Retention};
pub use policy::{CategoryAction, CategoryPolicy, Policies};
pub use reports::{Report, ReportStatus, Reports, Submitter};
pub use review::{ReviewItem, ReviewMatch, ReviewQueue, ReviewStatus};

/// The members of the sorted set `key` scored at or before `until` (a time, ms), lowest first,
/// at most `limit`: what is due (reports to submit, evidence to delete).
pub(crate) async fn due_by_score(
    conn: &gantry_queue::RedisConn,
    key: &str,
    until: u64,
    limit: usize,
) -> Result<Vec<String>, SafetyError> {
    let mut c = conn.clone();
    Ok(redis::cmd("ZRANGE")
        .arg(key)
        .arg("-inf")
        .arg(until)
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(&mut c)
        .await?)
}
pub use trust::{TrustAction, TrustChange, TrustRegistry, TrustStatus};
