//! Errors of the queue protocol.

use crate::job::JobId;
pub use gantry_core::ValidationError;

/// Everything that can go wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Bad input; nothing was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Redis refused or the connection broke, during `op` (a protocol script's name, or
    /// `command`), on `pool` where there is one. Callers retry with backoff.
    #[error("redis, during {op}{}: {source}", pool.as_deref().map(|p| format!(" on pool {p}")).unwrap_or_default())]
    Redis {
        /// What was being done.
        op: &'static str,
        /// The pool it was done on, if any.
        pool: Option<String>,
        /// Redis's error.
        #[source]
        source: redis::RedisError,
    },
    /// No job with this id (never existed, expired, or erased).
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job already finished and cannot be changed that way.
    #[error("job {id} is already {status}")]
    AlreadyFinished {
        /// The job.
        id: JobId,
        /// Its final status.
        status: String,
    },
    /// A search cursor that names no page: garbled, or made by a search with other filters.
    #[error("no such page: {0}")]
    UnknownCursor(&'static str),
    /// Replay of a job that is not in the dead-letter queue.
    #[error("job {0} is not in the dead-letter queue")]
    NotDeadLettered(JobId),
    /// Redis answered something the protocol does not expect (a bug or a foreign key).
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// The connection URL is not usable.
    #[error("invalid redis url: {0}")]
    InvalidUrl(String),
    /// A setting (from the environment) that is not usable.
    #[error("invalid queue configuration: {0}")]
    InvalidConfig(String),
    /// A consumer's own task died (a bug: it panicked or was aborted).
    #[error("consumer task failed: {0}")]
    ConsumerTask(#[source] tokio::task::JoinError),
    /// The data keys, or a sealed payload (see [`crate::seal`]).
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
}

impl From<redis::RedisError> for QueueError {
    fn from(source: redis::RedisError) -> Self {
        QueueError::Redis {
            op: "command",
            pool: None,
            source,
        }
    }
}

/// Names what a Redis call was for, so its error says so (`redis, during claim on pool cpu:
/// connection refused`).
pub(crate) trait During<T> {
    /// On error: during `op`, on `pool`.
    fn during(self, op: &'static str, pool: &crate::Pool) -> Result<T, QueueError>;
}

impl<T> During<T> for Result<T, redis::RedisError> {
    fn during(self, op: &'static str, pool: &crate::Pool) -> Result<T, QueueError> {
        self.map_err(|source| {
            if source.kind() == redis::ErrorKind::Parse {
                // Redis answered, but not what the script's header promises.
                QueueError::Protocol(format!("{op} on pool {pool}: {source}"))
            } else {
                QueueError::Redis {
                    op,
                    pool: Some(pool.to_string()),
                    source,
                }
            }
        })
    }
}

impl QueueError {
    /// Whether retrying the same call later may succeed (connection trouble, Redis restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Redis { source: e, .. } => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::ClusterDown
                                | redis::ServerErrorKind::MasterDown
                        )
                    )
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_error_names_what_was_being_done_and_keeps_its_source() {
        let refused = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let pool = crate::Pool::new("gpu-h100").expect("valid");
        let e = Err::<(), _>(refused).during("claim", &pool).expect_err("an error");
        let text = e.to_string();
        assert!(text.starts_with("redis, during claim on pool gpu-h100: "), "{text}");
        assert!(std::error::Error::source(&e).is_some(), "the chain is kept");
        assert!(e.is_transient(), "a refused connection is retried");
        let garbled = redis::RedisError::from(redis::ParsingError::from("heartbeat: unknown reply code 7"));
        let e = Err::<(), _>(garbled).during("heartbeat", &pool).expect_err("an error");
        assert!(
            matches!(e, QueueError::Protocol(ref m) if m.starts_with("heartbeat on pool gpu-h100: ")),
            "{e}"
        );
        assert!(!e.is_transient(), "a reply of the wrong shape is a bug, not weather");
    }
}
