//! What the media executors (`upscale`, `transcode`) share: reading the job's input object
//! (only the tenant's own), and running blocking media work under a time limit with its
//! failures mapped to job outcomes (the input's fault is `permanent`, ours `retryable`).

use std::time::Duration;

use bytes::Bytes;
use gantry_codecs::MediaError;
use gantry_queue::{ErrorClass, JobOutcome, JobSpec};

use super::failed;
use crate::outputs::{OutputError, OutputStore};

/// Whether `key` is one of `tenant`'s objects (its jobs' outputs, or its uploads).
pub fn owned_by(key: &str, tenant: &str) -> bool {
    let ok = |prefix: &str| {
        key.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(tenant))
            .is_some_and(|r| r.starts_with('/'))
    };
    !key.split('/').any(|p| p == ".." || p == ".") && (ok("jobs/") || ok("inputs/"))
}

/// Reads the job's input object `key`, refusing it (from its announced size, before a byte is
/// read) past `max_bytes`.
pub(crate) async fn read_input(
    outputs: &OutputStore,
    spec: &JobSpec,
    key: &str,
    max_bytes: u64,
) -> Result<Bytes, JobOutcome> {
    if !owned_by(key, &spec.tenant) {
        return Err(not_owned());
    }
    outputs.get_bounded(key, max_bytes).await.map_err(input_failure)
}

/// Streams the job's input object `key` into the file `to` (at most `max_bytes`).
pub(crate) async fn download_input(
    outputs: &OutputStore,
    spec: &JobSpec,
    key: &str,
    to: &std::path::Path,
    max_bytes: u64,
) -> Result<u64, JobOutcome> {
    if !owned_by(key, &spec.tenant) {
        return Err(not_owned());
    }
    outputs.download(key, to, max_bytes).await.map_err(input_failure)
}

fn not_owned() -> JobOutcome {
    failed(ErrorClass::Permanent, "the input is not one of this tenant's objects")
}

fn input_failure(e: OutputError) -> JobOutcome {
    match e {
        OutputError::Store(object_store::Error::NotFound { .. }) => {
            failed(ErrorClass::Permanent, "the input object does not exist")
        }
        OutputError::TooLarge { max } => failed(
            ErrorClass::Permanent,
            format!("the input is larger than the {max} bytes accepted"),
        ),
        e => failed(ErrorClass::Retryable, format!("reading the input: {e}")),
    }
}

/// Runs `work` on a blocking thread; past `limit` the attempt fails with
/// [`MediaError::Timeout`] (the work itself is told to stop by the caller's flag, if it has one).
pub(crate) async fn run_blocking<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> Result<T, MediaError> + Send + 'static,
) -> Result<T, JobOutcome> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => {
            let class = if e.is_permanent() {
                ErrorClass::Permanent
            } else {
                ErrorClass::Retryable
            };
            Err(failed(class, e.to_string()))
        }
        Ok(Err(_)) => Err(failed(ErrorClass::Retryable, "the media thread failed")),
        Err(_) => Err(failed(
            ErrorClass::Permanent,
            MediaError::Timeout(limit.as_secs()).to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::owned_by;

    #[test]
    fn only_the_tenants_own_objects() {
        assert!(owned_by("jobs/t1/01ABC/output-0.png", "t1"));
        assert!(owned_by("inputs/t1/photo.jpg", "t1"));
        assert!(!owned_by("jobs/t10/01ABC/output-0.png", "t1"));
        assert!(!owned_by("jobs/t2/01ABC/output-0.png", "t1"));
        assert!(!owned_by("jobs/t1/../t2/x.png", "t1"));
        assert!(!owned_by("t1/x.png", "t1"));
    }
}
