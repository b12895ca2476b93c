//! Pipelines: `client.pipeline(&body)` (`POST /v1/pipelines`), `get_pipeline`,
//! `cancel_pipeline`, and `wait_pipeline`, which follows the steps' events over SSE and reads
//! the pipeline again at each final one (and every few seconds, so a missed event only costs a
//! little latency).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Client, ClientError, Credits};

/// A created pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PipelineCreated {
    /// Its id.
    pub id: String,
    /// An earlier pipeline with the same idempotency key was returned instead.
    pub duplicate: bool,
    /// Credits reserved for all its steps.
    pub credits_reserved: i64,
    /// Its steps, parents first.
    pub steps: Vec<CreatedStep>,
}

/// One step of a created pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CreatedStep {
    /// Its name.
    pub name: String,
    /// Its job.
    pub job_id: String,
    /// Its pool.
    pub pool: String,
    /// Credits reserved for it.
    pub credits_reserved: i64,
}

/// A pipeline as `GET /v1/pipelines/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Pipeline {
    /// Its id.
    pub id: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Created (Unix ms).
    pub created_at_ms: u64,
    /// Its steps, parents first.
    pub steps: Vec<PipelineStep>,
    /// Credits over every step.
    pub credits: PipelineCredits,
}

impl Pipeline {
    /// Whether it will change no further.
    pub fn is_final(&self) -> bool {
        self.status != "running"
    }

    /// A step by name.
    pub fn step(&self, name: &str) -> Option<&PipelineStep> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Credits over a pipeline's steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PipelineCredits {
    /// Reserved at admission.
    pub reserved: i64,
    /// Charged so far.
    pub charged: i64,
    /// Refunded so far.
    pub refunded: i64,
}

/// One step's state.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PipelineStep {
    /// Its name.
    pub name: String,
    /// Its job.
    pub job_id: String,
    /// Its kind.
    pub kind: String,
    /// Its pool.
    pub pool: String,
    /// The steps it needs.
    pub needs: Vec<String>,
    /// Its failure does not fail the pipeline.
    pub continue_on_failure: bool,
    /// For a copy of a `for_each` step: that step's name as submitted.
    #[serde(default)]
    pub copy_of: Option<String>,
    /// Its job's status (`waiting` for its parents, …; `expired` once gone).
    pub status: String,
    /// Attempts started.
    pub attempts: u32,
    /// Its output: `{object_key, size_bytes, content_type, sha256, details}`.
    pub result: Option<serde_json::Value>,
    /// Its last error: `{class, message, at_ms}`.
    pub error: Option<serde_json::Value>,
    /// What it is doing, while it runs: `{stage, percent, attempt, at_ms}`.
    pub progress: Option<serde_json::Value>,
    /// Its credit entry.
    pub credits: Option<Credits>,
}

impl Client {
    /// Submits a pipeline (`{"steps": [...]}`), admitted whole or not at all.
    pub async fn pipeline<B: Serialize + ?Sized>(&self, body: &B) -> Result<PipelineCreated, ClientError> {
        self.send(reqwest::Method::POST, "/v1/pipelines", Some(body), None)
            .await
    }

    /// [`Client::pipeline`] with an idempotency key: a repeat returns the first pipeline.
    pub async fn pipeline_idempotent<B: Serialize + ?Sized>(
        &self,
        body: &B,
        key: &str,
    ) -> Result<PipelineCreated, ClientError> {
        self.send(reqwest::Method::POST, "/v1/pipelines", Some(body), Some(key))
            .await
    }

    /// Reads a pipeline.
    pub async fn get_pipeline(&self, id: &str) -> Result<Pipeline, ClientError> {
        let path = format!("/v1/pipelines/{}", crate::percent_encode(id));
        self.send(reqwest::Method::GET, &path, None::<&()>, None).await
    }

    /// Cancels every step of a pipeline that has not ended; returns how many were told.
    pub async fn cancel_pipeline(&self, id: &str) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            steps_cancelled: u64,
        }
        let path = format!("/v1/pipelines/{}:cancel", crate::percent_encode(id));
        let r: Reply = self.send(reqwest::Method::POST, &path, None::<&()>, None).await?;
        Ok(r.steps_cancelled)
    }

    /// Waits until a pipeline has ended (succeeded, failed or cancelled): follows its steps'
    /// events over SSE and reads the pipeline at each final one, and at least every two
    /// seconds; gives up after `timeout` with [`ClientError::WaitTimedOut`].
    pub async fn wait_pipeline(&self, id: &str, timeout: Duration) -> Result<Pipeline, ClientError> {
        const RECHECK: Duration = Duration::from_secs(2);
        let deadline = tokio::time::Instant::now() + timeout;
        let p = self.get_pipeline(id).await?;
        if p.is_final() {
            return Ok(p);
        }
        let jobs: Vec<&str> = p.steps.iter().map(|s| s.job_id.as_str()).collect();
        // Without a stream (events off for the tenant), the re-reads alone.
        let mut stream = self.events(&jobs, &[], None).await.ok();
        let mut status = p.status.clone();
        loop {
            // Read after subscribing, so an event between the first read and the stream is not
            // waited for in vain.
            let p = self.get_pipeline(id).await?;
            if p.is_final() {
                return Ok(p);
            }
            status.clone_from(&p.status);
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::WaitTimedOut {
                    id: id.to_owned(),
                    waited: timeout,
                    status,
                });
            }
            let pause = RECHECK.min(deadline - now);
            match &mut stream {
                Some(s) => {
                    // Until a step's final event, the stream's end, or the pause.
                    let next = tokio::time::timeout(pause, async {
                        loop {
                            match s.next().await {
                                Ok(Some(e)) if e.is_final() => return true,
                                Ok(Some(_)) => {}
                                Ok(None) | Err(_) => return false,
                            }
                        }
                    })
                    .await;
                    if matches!(next, Ok(false)) {
                        stream = None;
                    }
                }
                None => tokio::time::sleep(pause).await,
            }
        }
    }
}
