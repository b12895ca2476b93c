//! A user's data, exported on request: `client.export_user(user, None)` starts an export
//! (`POST /v1/users/{user_id}/exports`), `get_export` reads it, `wait_export` polls it with
//! backoff until it ends, and `download_export` streams its archive to a file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{Client, ClientError, percent_encode, problem};

/// An export of a user's data.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Export {
    /// Its id.
    pub id: String,
    /// `queued`, `running`, `succeeded`, `dead`, `cancelled`, ...
    pub status: String,
    /// When it was asked for (Unix ms).
    pub created_at_ms: u64,
    /// When it ended (Unix ms).
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// Percent of the user's index read, while it runs.
    #[serde(default)]
    pub progress: Option<f32>,
    /// What it includes beyond the user's jobs and pipelines.
    pub includes: ExportIncludes,
    /// The archive, once made.
    #[serde(default)]
    pub archive: Option<ExportArchive>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl Export {
    /// Whether it has ended (made, or failed for good).
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "dead" | "cancelled" | "blocked")
    }
}

/// What an export includes beyond the user's jobs and pipelines (the tenant's policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct ExportIncludes {
    /// Their trust standing.
    pub trust: bool,
    /// The moderation records about them.
    pub moderation: bool,
}

/// A made archive.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ExportArchive {
    /// Its download route.
    pub download: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// Jobs, pipelines, outputs, references and files in it.
    pub counts: BTreeMap<String, u64>,
    /// When it is deleted (Unix ms).
    pub expires_at_ms: u64,
}

fn export_path(user: &str, id: Option<&str>, tenant: Option<&str>) -> String {
    let mut path = format!("/v1/users/{}/exports", percent_encode(user));
    if let Some(id) = id {
        path.push('/');
        path.push_str(&percent_encode(id));
    }
    if let Some(t) = tenant {
        path.push_str(&format!("?tenant={}", percent_encode(t)));
    }
    path
}

impl Client {
    /// Starts an export of `user`'s data (this key's tenant's user; an operator key names the
    /// tenant with `tenant`).
    pub async fn export_user(&self, user: &str, tenant: Option<&str>) -> Result<Export, ClientError> {
        self.send(
            reqwest::Method::POST,
            &export_path(user, None, tenant),
            None::<&()>,
            None,
        )
        .await
    }

    /// An export of `user`'s data.
    pub async fn get_export(&self, user: &str, id: &str, tenant: Option<&str>) -> Result<Export, ClientError> {
        self.send(
            reqwest::Method::GET,
            &export_path(user, Some(id), tenant),
            None::<&()>,
            None,
        )
        .await
    }

    /// Polls an export (every 100 ms, doubling to 2 s) until it ends or `timeout` passes.
    pub async fn wait_export(
        &self,
        user: &str,
        id: &str,
        tenant: Option<&str>,
        timeout: Duration,
    ) -> Result<Export, ClientError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let e = self.get_export(user, id, tenant).await?;
            if e.is_final() {
                return Ok(e);
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(ClientError::WaitTimedOut {
                    id: id.to_owned(),
                    waited,
                    status: e.status,
                });
            }
            tokio::time::sleep(pause.min(timeout - waited)).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Streams a made export's archive to the file `to` (created or truncated); returns its
    /// size. The bytes are not checked here: compare `archive.sha256`.
    pub async fn download_export(&self, export: &Export, to: &std::path::Path) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        let Some(archive) = &export.archive else {
            return Err(ClientError::Unexpected {
                status: 0,
                detail: format!("export {} has no archive: it is {}", export.id, export.status),
            });
        };
        let url = format!("{}{}", self.base, archive.download);
        let mut resp = self
            .http
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(ClientError::Api(problem(resp).await?));
        }
        let io = |e: std::io::Error| ClientError::Unexpected {
            status: 0,
            detail: format!("writing {}: {e}", to.display()),
        };
        let mut file = tokio::fs::File::create(to).await.map_err(io)?;
        let mut written = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            file.write_all(&chunk).await.map_err(io)?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(io)?;
        Ok(written)
    }
}
