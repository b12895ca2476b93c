//! The JSON an event is delivered as, over SSE and to webhooks alike: the Standard Webhooks
//! envelope (`type`, `timestamp`, `data`). It names the job, its kind and pool, what happened,
//! and the result or the error; never the prompt, never the user.

use gantry_queue::events::{EventError, JobEvent};
use gantry_queue::{JobId, ResultRef};
use serde::Serialize;

/// The envelope.
#[derive(Debug, Serialize)]
pub struct EventPayload<'a> {
    /// `job.succeeded`, …
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// When it happened (RFC 3339, UTC).
    pub timestamp: String,
    /// What it is about.
    pub data: EventData<'a>,
}

/// The job the event is about.
#[derive(Debug, Serialize)]
pub struct EventData<'a> {
    /// The job.
    pub job_id: JobId,
    /// Its kind (absent if the record did not say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Its pool.
    pub pool: &'a str,
    /// Its status after the event (`succeeded`, `retry_scheduled`, `dead`, …).
    pub status: &'static str,
    /// The result, for a success that reported one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a ResultRef>,
    /// Where to download the output through the API, for a success with a result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_url: Option<String>,
    /// The error, for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a EventError>,
}

impl<'a> EventPayload<'a> {
    /// The payload of `e`.
    pub fn of(e: &'a JobEvent) -> Self {
        use gantry_queue::events::EventType as T;
        let status = match e.event_type {
            T::Succeeded => "succeeded",
            T::Failed => "retry_scheduled",
            T::Dead => "dead",
            T::Blocked => "blocked",
            T::Cancelled => "cancelled",
        };
        let output_url = e.result.as_ref().map(|r| {
            let name = r.object_key.rsplit('/').next().unwrap_or(&r.object_key);
            format!("/v1/jobs/{}/outputs/{name}", e.job)
        });
        Self {
            event_type: e.event_type.as_str(),
            timestamp: gantry_core::time::rfc3339_ms(e.at_ms),
            data: EventData {
                job_id: e.job,
                kind: e.kind.map(|k| k.as_str()),
                pool: e.pool.as_str(),
                status,
                result: e.result.as_ref(),
                output_url,
                error: e.error.as_ref(),
            },
        }
    }

    /// As JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail (no maps with non-string keys, no custom code).
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}
