//! Errors of the shared vocabulary: input that does not name a valid job, kind, id or status.

/// Input Gantry refuses; maps to HTTP 4xx or a CLI usage error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Not JSON, or not the shape of a job.
    #[error("malformed job JSON: {0}")]
    MalformedJson(String),
    /// A kind that Gantry does not know.
    #[error("unknown job kind {0:?} (expected generate, upscale, transcode, csam_hash or noop)")]
    UnknownKind(String),
    /// A priority that Gantry does not know.
    #[error("unknown priority {0:?} (expected high, normal or bulk)")]
    UnknownPriority(String),
    /// An error class that Gantry does not know.
    #[error("unknown error class {0:?} (expected retryable, permanent, cancelled or timed_out)")]
    UnknownErrorClass(String),
    /// Not a ULID.
    #[error("invalid job id {0:?} (expected a 26-character ULID)")]
    InvalidJobId(String),
    /// Pool names are 1..=64 characters of `a-z`, `0-9`, `-` and `_`.
    #[error("invalid pool name {0:?} (1-64 characters of a-z, 0-9, '-', '_')")]
    InvalidPool(String),
    /// The serialized job is larger than the configured limit.
    #[error("payload is {size} bytes; the limit is {limit}")]
    PayloadTooLarge {
        /// Serialized size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The delay is beyond the configured maximum.
    #[error("delay of {delay_ms} ms exceeds the maximum of {max_ms} ms")]
    DelayTooLong {
        /// Asked.
        delay_ms: u64,
        /// Allowed.
        max_ms: u64,
    },
    /// More jobs in one batch than allowed.
    #[error("batch of {size} jobs exceeds the maximum of {max}")]
    BatchTooLarge {
        /// Asked.
        size: usize,
        /// Allowed.
        max: usize,
    },
    /// A job status that Gantry does not know (a record written by a newer or foreign writer).
    #[error("unknown job status {0:?}")]
    UnknownStatus(String),
    /// A field is out of range or empty.
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}
