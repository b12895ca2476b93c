//! What a match does, per violation category (`csam`, `ncii`, `terrorism`, `other`, or any
//! category an operator names): block at once or send to review, keep the content as evidence
//! (and for how long), and report it to an authority (and whether without a person's say).
//!
//! Policies live in Redis (`gantry:{safety}:categories`, a hash of category → JSON) so every
//! worker and scheduler applies the same ones; a category nobody configured takes its built-in
//! default ([`CategoryPolicy::default_for`]).

use std::collections::BTreeMap;

use gantry_queue::RedisConn;
use redis::AsyncCommands;

use crate::error::SafetyError;

const KEY: &str = "gantry:{safety}:categories";

/// What a match at or under a list's block distance does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CategoryAction {
    /// Taken down at once: the content deleted (and preserved where the policy says), the
    /// user's trust lowered, the job `blocked`.
    Block,
    /// Every match of the category is withheld for a person to confirm or clear.
    Review,
    /// Recorded as a moderation event only; the content is released (a signal list).
    Log,
}

/// One category's policy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryPolicy {
    /// What a sure match does.
    pub action: CategoryAction,
    /// Whether taken-down content is preserved, sealed, in the quarantine.
    pub preserve: bool,
    /// How long preserved content is kept, in days (then deleted by the retention sweep).
    pub evidence_days: u32,
    /// Whether a confirmed case makes a report to the authority (NCMEC's CyberTipline).
    pub report: bool,
    /// Whether a report made by an automatic block is submitted without a reviewer's
    /// confirmation (off: a reviewer submits it).
    pub auto_submit: bool,
}

/// Days US law asks a provider to preserve a reported CSAM case (18 U.S.C. § 2258A(h) as the
/// REPORT Act of 2024 amended it: one year).
pub const CSAM_EVIDENCE_DAYS: u32 = 365;
/// Days the EU's terrorist-content regulation (2021/784, art. 6) asks removed content to be
/// preserved: six months.
pub const TERRORISM_EVIDENCE_DAYS: u32 = 183;

impl CategoryPolicy {
    /// The built-in policy of `category`: CSAM blocks, preserves a year and reports (a
    /// reviewer submits); NCII (StopNCII-style lists) blocks and preserves 90 days for
    /// appeals; terrorism blocks and preserves six months; anything else blocks and keeps
    /// nothing.
    pub fn default_for(category: &str) -> Self {
        let (preserve, evidence_days, report) = match category {
            "csam" => (true, CSAM_EVIDENCE_DAYS, true),
            "ncii" => (true, 90, false),
            "terrorism" => (true, TERRORISM_EVIDENCE_DAYS, false),
            _ => (false, 0, false),
        };
        Self {
            action: CategoryAction::Block,
            preserve,
            evidence_days,
            report,
            auto_submit: false,
        }
    }

    /// Checks that the policy holds together.
    pub fn validate(&self) -> Result<(), SafetyError> {
        let bad = |m: &str| Err(SafetyError::InvalidPolicy(m.into()));
        if self.preserve && !(1..=3653).contains(&self.evidence_days) {
            return bad("evidence_days: 1-3653 when preserve is on");
        }
        if !self.preserve && self.evidence_days != 0 {
            return bad("evidence_days: 0 when preserve is off");
        }
        if self.report && !self.preserve {
            return bad("report needs preserve: a report points at the preserved evidence");
        }
        if self.auto_submit && !self.report {
            return bad("auto_submit needs report");
        }
        if self.action == CategoryAction::Log && (self.preserve || self.report) {
            return bad("a log-only category neither preserves nor reports");
        }
        Ok(())
    }
}

/// Checks a category's name: 1-32 of `a-z`, `0-9`, `_`.
pub fn check_category(category: &str) -> Result<(), SafetyError> {
    let ok = !category.is_empty()
        && category.len() <= 32
        && category
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SafetyError::InvalidCategory(category.chars().take(40).collect()))
    }
}

/// The categories' policies, in Redis.
#[derive(Clone, Debug)]
pub struct Policies {
    conn: RedisConn,
}

impl Policies {
    /// Policies on `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Self { conn }
    }

    /// `category`'s policy: the configured one, else its default.
    pub async fn get(&self, category: &str) -> Result<CategoryPolicy, SafetyError> {
        let mut c = self.conn.clone();
        let raw: Option<String> = c.hget(KEY, category).await?;
        match raw {
            Some(json) => serde_json::from_str(&json).map_err(|source| SafetyError::Json {
                what: "category policy",
                source,
            }),
            None => Ok(CategoryPolicy::default_for(category)),
        }
    }

    /// Every configured policy, with the built-in categories' defaults where not configured.
    pub async fn all(&self) -> Result<BTreeMap<String, CategoryPolicy>, SafetyError> {
        let mut c = self.conn.clone();
        let raw: BTreeMap<String, String> = c.hgetall(KEY).await?;
        let mut out: BTreeMap<String, CategoryPolicy> = ["csam", "ncii", "terrorism", "other"]
            .into_iter()
            .map(|n| (n.to_owned(), CategoryPolicy::default_for(n)))
            .collect();
        for (name, json) in raw {
            let p = serde_json::from_str(&json).map_err(|source| SafetyError::Json {
                what: "category policy",
                source,
            })?;
            out.insert(name, p);
        }
        Ok(out)
    }

    /// Sets `category`'s policy (checked first).
    pub async fn set(&self, category: &str, policy: &CategoryPolicy) -> Result<(), SafetyError> {
        check_category(category)?;
        policy.validate()?;
        let json = serde_json::to_string(policy).map_err(|source| SafetyError::Json {
            what: "category policy",
            source,
        })?;
        let mut c = self.conn.clone();
        let _: () = c.hset(KEY, category, json).await?;
        Ok(())
    }

    /// Forgets `category`'s configured policy (its default applies again); whether it had one.
    pub async fn reset(&self, category: &str) -> Result<bool, SafetyError> {
        check_category(category)?;
        let mut c = self.conn.clone();
        let n: u32 = c.hdel(KEY, category).await?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_together_and_bad_policies_are_refused() {
        for c in ["csam", "ncii", "terrorism", "other", "spam"] {
            assert!(CategoryPolicy::default_for(c).validate().is_ok(), "{c}");
        }
        let csam = CategoryPolicy::default_for("csam");
        assert!(csam.preserve && csam.report && !csam.auto_submit && csam.evidence_days == 365);
        let mut p = csam.clone();
        p.preserve = false;
        assert!(p.validate().is_err(), "report without preserve");
        let mut p = CategoryPolicy::default_for("other");
        p.auto_submit = true;
        assert!(p.validate().is_err(), "auto_submit without report");
        let mut p = csam;
        p.evidence_days = 0;
        assert!(p.validate().is_err(), "preserved for no days");
        assert!(check_category("Bad-Name").is_err() && check_category("ncii").is_ok());
    }
}
