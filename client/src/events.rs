//! Job events: following them over Server-Sent Events (`GET /v1/events`,
//! `GET /v1/jobs/{id}/events`), waiting for a job over SSE, and registering webhooks.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;

use crate::{Client, ClientError, JobView, problem};

/// One event from the stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerEvent {
    /// `job.succeeded`, `job.failed`, `job.dead`, `job.blocked`, `job.cancelled`, or `gap`.
    pub event: String,
    /// The cursor to resume after it (send it back as `Last-Event-ID`).
    pub id: Option<String>,
    /// Its data: the JSON event (`{"type", "timestamp", "data": {"job_id", …}}`).
    pub data: String,
}

impl ServerEvent {
    /// The data as JSON.
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        serde_json::from_str(&self.data).map_err(|e| ClientError::Unexpected {
            status: 200,
            detail: format!("event data is not JSON: {e}"),
        })
    }

    /// The job the event is about.
    pub fn job_id(&self) -> Option<String> {
        self.json().ok()?["data"]["job_id"].as_str().map(str::to_owned)
    }

    /// Whether the job is finished after it.
    pub fn is_final(&self) -> bool {
        matches!(
            self.event.as_str(),
            "job.succeeded" | "job.dead" | "job.blocked" | "job.cancelled"
        )
    }
}

/// An open event stream.
#[derive(Debug)]
pub struct EventStream {
    resp: reqwest::Response,
    buf: String,
    ready: VecDeque<ServerEvent>,
    /// The last event id seen: where a reconnect resumes.
    pub last_id: Option<String>,
}

impl EventStream {
    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<ServerEvent>, ClientError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                if e.id.is_some() {
                    self.last_id.clone_from(&e.id);
                }
                return Ok(Some(e));
            }
            match self.resp.chunk().await? {
                Some(bytes) => {
                    self.buf.push_str(&String::from_utf8_lossy(&bytes));
                    self.parse();
                }
                None => return Ok(None),
            }
        }
    }

    fn parse(&mut self) {
        self.ready.extend(take_events(&mut self.buf));
    }
}

/// Takes every complete event (ended by a blank line) off the front of `buf`; comments
/// (keep-alives) are dropped, an incomplete event stays for the next chunk.
pub fn take_events(buf: &mut String) -> Vec<ServerEvent> {
    if buf.contains('\r') {
        *buf = buf.replace("\r\n", "\n");
    }
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let mut ev = ServerEvent {
            event: "message".into(),
            ..Default::default()
        };
        let mut data: Vec<&str> = Vec::new();
        let mut any = false;
        for line in block.lines().filter(|l| !l.is_empty() && !l.starts_with(':')) {
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            let v = v.strip_prefix(' ').unwrap_or(v);
            any = true;
            match k {
                "event" => ev.event = v.to_owned(),
                "id" => ev.id = Some(v.to_owned()),
                "data" => data.push(v),
                _ => {}
            }
        }
        if any {
            ev.data = data.join("\n");
            out.push(ev);
        }
    }
    out
}

/// A webhook endpoint as registered: its id and the signing secret, shown this once.
#[derive(Clone, Debug, Deserialize)]
pub struct Webhook {
    /// `ep_…`.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// `whsec_…`: verify deliveries with it (any Standard Webhooks library).
    pub secret: String,
}

impl Client {
    /// Opens the tenant's event stream (`GET /v1/events`), filtered by `jobs` and `types` when
    /// they are not empty, resuming after `last_event_id` when given.
    pub async fn events(
        &self,
        jobs: &[&str],
        types: &[&str],
        last_event_id: Option<&str>,
    ) -> Result<EventStream, ClientError> {
        let mut q = Vec::new();
        if !jobs.is_empty() {
            q.push(format!("job={}", crate::percent_encode(&jobs.join(","))));
        }
        if !types.is_empty() {
            q.push(format!("type={}", crate::percent_encode(&types.join(","))));
        }
        let path = if q.is_empty() {
            "/v1/events".to_owned()
        } else {
            format!("/v1/events?{}", q.join("&"))
        };
        self.open_stream(&path, last_event_id).await
    }

    /// Opens one job's event stream (`GET /v1/jobs/{id}/events`): its events from its
    /// enqueue; the server ends it after the final one.
    pub async fn job_events(&self, id: &str) -> Result<EventStream, ClientError> {
        self.open_stream(&format!("/v1/jobs/{}/events", crate::percent_encode(id)), None)
            .await
    }

    async fn open_stream(&self, path: &str, last_event_id: Option<&str>) -> Result<EventStream, ClientError> {
        // No total timeout (the stream is open-ended); the server's keep-alive comments every
        // 15 s keep the read timeout from firing on a quiet stream.
        let mut req = self
            .sse
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.auth)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await?;
        if !resp.status().is_success() {
            return Err(ClientError::Api(problem(resp).await?));
        }
        Ok(EventStream {
            resp,
            buf: String::new(),
            ready: VecDeque::new(),
            last_id: last_event_id.map(str::to_owned),
        })
    }

    /// Waits for a job over its event stream (no polling), then reads it; falls back to
    /// polling ([`Client::wait`]) when the stream cannot be opened or ends without a final
    /// event.
    pub async fn wait_over_sse(&self, id: &str, timeout: Duration) -> Result<JobView, ClientError> {
        let followed = tokio::time::timeout(timeout, async {
            let mut s = self.job_events(id).await?;
            while let Some(e) = s.next().await? {
                if e.is_final() {
                    return Ok::<bool, ClientError>(true);
                }
            }
            Ok(false)
        })
        .await;
        match followed {
            Ok(Ok(true)) => self.job(id).await,
            Err(_) => Err(ClientError::WaitTimedOut {
                id: id.to_owned(),
                waited: timeout,
                status: "unknown (followed over SSE)".into(),
            }),
            Ok(_) => {
                let opts = crate::WaitOptions {
                    timeout,
                    ..Default::default()
                };
                self.wait(id, opts).await
            }
        }
    }

    /// Registers a webhook endpoint for `types` (all when empty).
    pub async fn create_webhook(&self, url: &str, types: &[&str]) -> Result<Webhook, ClientError> {
        let body = serde_json::json!({ "url": url, "types": types });
        self.send(reqwest::Method::POST, "/v1/webhooks", Some(&body), None)
            .await
    }

    /// The endpoint's delivery log, newest first.
    pub async fn webhook_deliveries(&self, id: &str) -> Result<Vec<serde_json::Value>, ClientError> {
        #[derive(Deserialize)]
        struct Reply {
            deliveries: Vec<serde_json::Value>,
        }
        let path = format!("/v1/webhooks/{}/deliveries", crate::percent_encode(id));
        let r: Reply = self.send(reqwest::Method::GET, &path, None::<&()>, None).await?;
        Ok(r.deliveries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_on_blank_lines_and_comments_are_skipped() {
        let mut buf = String::from(
            ": keep-alive\n\nid: cpu=1-0\nevent: job.succeeded\ndata: {\"data\":{\"job_id\":\"J\"}}\r\n\r\nevent: gap\ndata: a\ndata: b\n\nid: x",
        );
        let got = take_events(&mut buf);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].id.as_deref(), Some("cpu=1-0"));
        assert_eq!(got[0].job_id().as_deref(), Some("J"));
        assert!(got[0].is_final());
        assert_eq!((got[1].event.as_str(), got[1].data.as_str()), ("gap", "a\nb"));
        assert!(!got[1].is_final());
        assert_eq!(buf, "id: x", "an incomplete event waits for its blank line");
    }
}
