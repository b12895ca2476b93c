//! How long each class of data is kept: one typed policy that every process reads from the
//! same place (`GANTRY_RETENTION`, TOML, or the file `GANTRY_RETENTION_FILE` names), so the
//! workers that write records, the scheduler that sweeps and the CLI that reports all agree.
//!
//! Redis classes carry their TTL from the moment they are written (job records when they end,
//! dead letters, idempotency keys, moderation events); the sweeper deletes what has no TTL of
//! its own: objects in the output store, audit entries past their age (the stream is trimmed on
//! every append too, but an idle log would keep them), and the moderation index's expired ids.
//! Server logs go to stdout; their 12 months belong to the platform's log pipeline.
//!
//! ```toml
//! job_records_days = 7
//! dead_letters_days = 30
//! idempotency_days = 7
//! outputs_days = 30
//! exports_days = 7
//! moderation_days = 90
//! moderation_critical_days = 2557
//! critical_categories = ["csam"]
//! audit_days = 365
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::QueueConfig;

/// Why a retention policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The file named in `GANTRY_RETENTION_FILE` cannot be read.
    #[error("cannot read the retention policy {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML of this schema.
    #[error("invalid retention policy: {0}")]
    Parse(#[source] toml::de::Error),
    /// Values that contradict each other or the promises.
    #[error("invalid retention policy: {0}")]
    Invalid(String),
}

/// Days each class of data is kept. The doc comments are the user documentation.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// A finished job's record (succeeded, cancelled, blocked: spec, result, history), counted
    /// from when it ended (default 7).
    pub job_records_days: u32,
    /// A dead-lettered job, its record and its dead-letter entry, kept for replay (default 30).
    pub dead_letters_days: u32,
    /// How long an idempotency key leads to its first job (default 7).
    pub idempotency_days: u32,
    /// Outputs and intermediate files in the object store, from when they were written
    /// (default 30).
    pub outputs_days: u32,
    /// A user's data export (its archive in the object store), from when it was made
    /// (default 7; an archive is an output too, so `outputs_days` caps it).
    pub exports_days: u32,
    /// Moderation events (category, list, action, time, the prompt's SHA-256; default 90).
    pub moderation_days: u32,
    /// Moderation events of the critical categories (default 2557, seven years).
    pub moderation_critical_days: u32,
    /// The critical categories (default `["csam"]`).
    pub critical_categories: Vec<String>,
    /// The audit log of operators' actions (default 365).
    pub audit_days: u32,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            job_records_days: 7,
            dead_letters_days: 30,
            idempotency_days: 7,
            outputs_days: 30,
            exports_days: 7,
            moderation_days: 90,
            moderation_critical_days: 7 * 365 + 2,
            critical_categories: vec!["csam".into()],
            audit_days: 365,
        }
    }
}

/// Longest any class may be kept: a century, so a typo cannot overflow a TTL.
const MAX_DAYS: u32 = 36_500;

/// `days` as a duration.
pub fn days(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * 86_400)
}

impl RetentionPolicy {
    /// Days an export's archive is kept: `exports_days`, or `outputs_days` if that is shorter.
    pub fn export_days(&self) -> u32 {
        self.exports_days.min(self.outputs_days)
    }

    /// Parses and checks a policy in TOML.
    pub fn from_toml(text: &str) -> Result<Self, RetentionError> {
        let p: Self = toml::from_str(text).map_err(RetentionError::Parse)?;
        p.check()?;
        Ok(p)
    }

    /// Parses the one-line form (`;` for line breaks), as `GANTRY_RETENTION` holds it.
    pub fn from_line(text: &str) -> Result<Self, RetentionError> {
        Self::from_toml(&text.replace(';', "\n"))
    }

    /// The policy from the environment: `GANTRY_RETENTION` (TOML; `;` may stand for a line
    /// break, so it fits one variable), else the file `GANTRY_RETENTION_FILE` names, else the
    /// defaults.
    pub fn from_env() -> Result<Self, RetentionError> {
        if let Ok(text) = std::env::var("GANTRY_RETENTION")
            && !text.trim().is_empty()
        {
            return Self::from_line(&text);
        }
        match std::env::var("GANTRY_RETENTION_FILE") {
            Ok(path) if !path.trim().is_empty() => {
                let text = std::fs::read_to_string(&path).map_err(|source| RetentionError::Read { path, source })?;
                Self::from_toml(&text)
            }
            _ => Ok(Self::default()),
        }
    }

    fn check(&self) -> Result<(), RetentionError> {
        let classes = [
            ("job_records_days", self.job_records_days),
            ("dead_letters_days", self.dead_letters_days),
            ("idempotency_days", self.idempotency_days),
            ("outputs_days", self.outputs_days),
            ("exports_days", self.exports_days),
            ("moderation_days", self.moderation_days),
            ("moderation_critical_days", self.moderation_critical_days),
            ("audit_days", self.audit_days),
        ];
        for (name, d) in classes {
            if d == 0 || d > MAX_DAYS {
                return Err(RetentionError::Invalid(format!("{name} must be 1..={MAX_DAYS}")));
            }
        }
        if self.moderation_critical_days < self.moderation_days {
            return Err(RetentionError::Invalid(
                "moderation_critical_days is shorter than moderation_days".into(),
            ));
        }
        Ok(())
    }

    /// The queue configuration with this policy's record, dead-letter and idempotency TTLs.
    pub fn apply(&self, mut cfg: QueueConfig) -> QueueConfig {
        cfg.finished_ttl = days(self.job_records_days);
        cfg.dead_ttl = days(self.dead_letters_days);
        cfg.idempotency_ttl = days(self.idempotency_days);
        cfg
    }

    /// Days a moderation event of `category` is kept.
    pub fn moderation_days_for(&self, category: &str) -> u32 {
        if self.critical_categories.iter().any(|c| c == category) {
            self.moderation_critical_days
        } else {
            self.moderation_days
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_the_promises_and_bad_values_are_refused() {
        let p = RetentionPolicy::default();
        assert_eq!(RetentionPolicy::from_toml("").ok(), Some(p.clone()));
        assert_eq!(p.moderation_days_for("csam"), 2557);
        assert_eq!(p.moderation_days_for("spam"), 90);
        let cfg = p.apply(QueueConfig::default());
        assert_eq!(cfg.dead_ttl, Duration::from_secs(30 * 86_400));
        let short = RetentionPolicy::from_toml("outputs_days = 1\naudit_days = 30").expect("valid");
        assert_eq!(
            (short.outputs_days, short.audit_days, short.job_records_days),
            (1, 30, 7)
        );
        // The line the Helm chart renders from its defaults.
        let helm = "audit_days = 365;critical_categories = [\"csam\"];dead_letters_days = 30;exports_days = 7;idempotency_days = 7;job_records_days = 7;moderation_critical_days = 2557;moderation_days = 90;outputs_days = 30";
        assert_eq!(RetentionPolicy::from_line(helm).ok(), Some(p.clone()));
        for bad in [
            "outputs_days = 0",
            "audit_days = 99999",
            "moderation_days = 100\nmoderation_critical_days = 50",
            "outputs_day = 3",
            "outputs_days = -1",
            "outputs_days = \"x\"",
        ] {
            assert!(RetentionPolicy::from_toml(bad).is_err(), "{bad}");
        }
    }
}
