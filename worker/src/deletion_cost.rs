//! Scale-in that spares busy workers: on Kubernetes the ReplicaSet removes pods with the lowest
//! `controller.kubernetes.io/pod-deletion-cost` first, so each worker keeps its own pod's
//! annotation at the number of jobs it is running (0 when idle), patched through the API server
//! whenever that number changes (checked every registry heartbeat). Needs the chart's
//! `rbac.podDeletionCost` (get and patch pods) and the pod's name and namespace from the
//! downward API. A failed patch is logged and retried at the next change; it never stops jobs.

use std::time::Duration;

/// The annotation the ReplicaSet controller reads.
pub const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why pod-deletion-cost updates cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeletionCostError {
    /// The pod's name or namespace is unknown.
    #[error("pod deletion cost: {0} is not set (the downward API's metadata.name / metadata.namespace)")]
    MissingPod(&'static str),
    /// The service account's token or CA could not be read.
    #[error("pod deletion cost: reading {path}: {source}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client could not be built (a bad CA certificate).
    #[error("pod deletion cost: http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Where and how to patch this worker's pod.
#[derive(Clone, Debug)]
pub struct DeletionCost {
    client: reqwest::Client,
    pod_url: String,
    token: String,
}

impl DeletionCost {
    /// Patches `pod` in `namespace` through the API server at `api` (e.g.
    /// `https://kubernetes.default.svc`), authenticating with the bearer token in `token_file`
    /// (the service account's by default) and trusting its CA.
    pub fn new(api: &str, namespace: &str, pod: &str, token_file: Option<&str>) -> Result<Self, DeletionCostError> {
        if namespace.is_empty() {
            return Err(DeletionCostError::MissingPod("POD_NAMESPACE"));
        }
        if pod.is_empty() {
            return Err(DeletionCostError::MissingPod("POD_NAME"));
        }
        let read =
            |path: String| std::fs::read(&path).map_err(|source| DeletionCostError::Credentials { path, source });
        let token_path = token_file.map_or_else(|| format!("{SERVICE_ACCOUNT}/token"), str::to_owned);
        let token = String::from_utf8_lossy(&read(token_path)?).trim().to_owned();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        let ca = format!("{SERVICE_ACCOUNT}/ca.crt");
        if api.starts_with("https://") && std::path::Path::new(&ca).exists() {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&read(ca)?)?);
        }
        Ok(Self {
            client: builder.build()?,
            pod_url: format!("{}/api/v1/namespaces/{namespace}/pods/{pod}", api.trim_end_matches('/')),
            token,
        })
    }

    /// Sets the annotation to `cost`. Returns whether the API server took it.
    pub async fn set(&self, cost: usize) -> bool {
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION: cost.to_string()}}});
        let r = self
            .client
            .patch(&self.pod_url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => true,
            Ok(resp) => {
                tracing::warn!(status = %resp.status(), "pod deletion cost: the API server refused the patch");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod deletion cost: the API server is unreachable");
                false
            }
        }
    }
}

/// Tracks the last cost set, patching only on change.
#[derive(Debug)]
pub struct CostTracker {
    target: DeletionCost,
    last: Option<usize>,
}

impl CostTracker {
    /// A tracker that has set nothing yet.
    pub fn new(target: DeletionCost) -> Self {
        Self { target, last: None }
    }

    /// Sets the cost to `in_flight` if it changed since the last successful patch.
    pub async fn observe(&mut self, in_flight: usize) {
        if self.last != Some(in_flight) && self.target.set(in_flight).await {
            self.last = Some(in_flight);
        }
    }
}
