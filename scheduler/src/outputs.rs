//! `GET /v1/jobs/{id}/outputs/{name}` (`jobs:read`): a tenant downloads its own job's outputs
//! through the API instead of reading the bucket. Only what was released: the job succeeded,
//! and its outputs were scanned clean (or the tenant turned the scan off) — never another
//! tenant's job (not found), never a running job's files (the scan has not passed yet), never a
//! withheld or blocked job's (their files are deleted anyway).
//!
//! Streamed from the store with `Content-Type`, `Content-Length`, `ETag` and
//! `Accept-Ranges: bytes`; one `Range: bytes=…` gives a `206` (several ranges, or one it cannot
//! parse, get the whole object, as RFC 9110 allows); `If-None-Match` gives a `304`. With
//! `?redirect=1` on an S3 store, a `307` to a pre-signed URL valid for five minutes instead.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gantry_queue::JobStatus;
use gantry_store::{ByteRange, OutputError, OutputRead};
use serde::Deserialize;

use crate::api::{owned_job, parse_id};
use crate::auth::JobsRead;
use crate::extract::ApiQuery;
use crate::problem::ApiError;
use crate::state::AppState;

/// How long a pre-signed download URL is valid.
const SIGNED_URL_TTL: Duration = Duration::from_secs(300);

/// The outputs route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/jobs/{id}/outputs/{name}", get(download))
}

/// `?redirect=1`: a pre-signed URL instead of the bytes (S3 stores).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadQuery {
    #[serde(default)]
    redirect: Option<u8>,
}

async fn download(
    State(state): State<AppState>,
    JobsRead(c): JobsRead,
    Path((id, name)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = state
        .outputs
        .as_ref()
        .ok_or(ApiError::NotConfigured("no output store is configured (outputs)"))?;
    let id = parse_id(&id)?;
    let job = owned_job(&state, &c.tenant, id).await?;
    if job.status != JobStatus::Succeeded {
        return Err(ApiError::Conflict(format!(
            "the job has no released outputs: it is {}",
            job.status.as_str()
        )));
    }
    let scanned_clean = job
        .result
        .as_ref()
        .and_then(|r| r.details.get("scan"))
        .is_some_and(|s| s == "clean");
    if job.spec.scan_outputs && !scanned_clean {
        return Err(ApiError::Conflict("the job's outputs were not released".into()));
    }
    // An export's archive is a user's data handed over: each download is audited.
    if job.spec.kind() == gantry_queue::JobKind::Export {
        let entry = gantry_safety::AuditEntry::new(
            c.actor(),
            "users.export.download",
            format!(
                "{}/{}",
                job.spec.tenant,
                gantry_queue::user_key(&job.spec.tenant, &job.spec.user)
            ),
        )
        .details(serde_json::json!({ "export": id.to_string(), "name": name }));
        state.audit.record(&entry).await.map_err(crate::problem::safety_error)?;
    }
    let not_found = |e: OutputError| {
        if e.is_not_found() {
            ApiError::NotFound
        } else {
            tracing::warn!(job_id = %id, error = %e, "reading an output failed");
            ApiError::Unavailable
        }
    };
    if q.redirect == Some(1)
        && let Some(url) = store
            .signed_url(&job.spec, &name, SIGNED_URL_TTL)
            .await
            .map_err(not_found)?
    {
        let mut res = StatusCode::TEMPORARY_REDIRECT.into_response();
        let location = HeaderValue::from_str(&url).map_err(|_| ApiError::Internal)?;
        res.headers_mut().insert(header::LOCATION, location);
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        return Ok(res);
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let object = match store.read(&job.spec, &name, range).await.map_err(not_found)? {
        OutputRead::Found(o) => o,
        OutputRead::Unsatisfiable { size } => {
            let mut res = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(res);
        }
    };
    let etag = object.etag.as_deref().map(|t| format!("\"{}\"", t.trim_matches('"')));
    if let (Some(tag), Some(asked)) = (&etag, headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()))
        && asked.split(',').any(|t| t.trim() == tag || t.trim() == "*")
    {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(tag) {
            res.headers_mut().insert(header::ETAG, v);
        }
        return Ok(res);
    }
    let partial = range.is_some();
    let (start, end, size) = (object.range.start, object.range.end, object.size);
    let mut res = Response::new(Body::from_stream(object.body));
    *res.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = res.headers_mut();
    let mut set = |k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(header::CONTENT_TYPE, &object.content_type);
    set(header::CONTENT_LENGTH, &(end - start).to_string());
    set(header::ACCEPT_RANGES, "bytes");
    set(header::CACHE_CONTROL, "private, max-age=0");
    // A browser must not guess another type (an output is the tenant's users' content).
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(tag) = &etag {
        set(header::ETAG, tag);
    }
    if partial {
        set(
            header::CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
        );
    }
    Ok(res)
}

/// One `bytes=` range; `None` for anything else (several ranges, other units, garbage), which
/// is then answered with the whole object.
fn parse_range(v: &str) -> Option<ByteRange> {
    let spec = v.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => Some(ByteRange::Last(num(b)?)),
        (false, true) => Some(ByteRange::From(num(a)?)),
        (false, false) => Some(ByteRange::FromTo(num(a)?, num(b)?)),
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_writes_them() {
        assert_eq!(parse_range("bytes=0-99"), Some(ByteRange::FromTo(0, 99)));
        assert_eq!(parse_range("bytes=100-"), Some(ByteRange::From(100)));
        assert_eq!(parse_range("bytes=-500"), Some(ByteRange::Last(500)));
        for whole in ["bytes=0-1,4-5", "items=0-1", "bytes=-", "bytes=a-b", "0-1", ""] {
            assert_eq!(parse_range(whole), None, "{whole:?}");
        }
    }
}
