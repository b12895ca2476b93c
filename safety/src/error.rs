//! What can go wrong on the safety path.

use gantry_codecs::pdq::HashError;
use gantry_codecs::pdq::index::IndexError;

/// A safety-path failure.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    /// Redis refused or the connection broke.
    #[error(transparent)]
    Queue(#[from] gantry_queue::QueueError),
    /// A list name outside `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid hash list name {0:?} (1-64 characters of A-Z, a-z, 0-9, '.', '-', '_')")]
    InvalidName(String),
    /// A line of a list file that is no hash we know.
    #[error("line {line}: {reason}")]
    InvalidEntry {
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A category name outside `[a-z0-9_]{1,32}`.
    #[error("invalid category {0:?} (1-32 characters of a-z, 0-9, '_')")]
    InvalidCategory(String),
    /// Distances that do not make a band.
    #[error("{0}")]
    InvalidThresholds(String),
    /// A category's policy that does not hold together.
    #[error("category policy: {0}")]
    InvalidPolicy(String),
    /// Evidence that cannot be sealed or opened.
    #[error("evidence: {0}")]
    Evidence(String),
    /// The object store refused (evidence, a job's files).
    #[error("object store: {0}")]
    Store(#[from] gantry_store::OutputError),
    /// No record of that id (a review, a report, evidence).
    #[error("no {what} {id:?}")]
    NoRecord {
        /// What was looked for.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A change a record's state does not allow (a decided review decided again).
    #[error("{0}")]
    Conflict(String),
    /// No list of that name.
    #[error("no hash list named {0:?}")]
    NotFound(String),
    /// A PDQ hash that does not parse.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The multi-index refused.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Stored data that does not decode (a foreign or damaged key).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A record that does not encode or decode as JSON.
    #[error("{what}: {source}")]
    Json {
        /// Which record.
        what: &'static str,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
}

impl From<redis::RedisError> for SafetyError {
    fn from(e: redis::RedisError) -> Self {
        SafetyError::Queue(e.into())
    }
}
