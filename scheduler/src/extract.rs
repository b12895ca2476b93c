//! What handlers read from requests beyond the caller (see [`crate::auth`]): JSON bodies under
//! the configured limit, and list limits.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;

use crate::problem::ApiError;
use crate::state::AppState;

/// The body as JSON: 413 past `max_body_bytes`, 408 when it did not arrive in time.
pub(crate) fn json_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
    let bytes = body.map_err(|e| ApiError::of_body(e, state.cfg.max_body_bytes))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// Most entries one operator list call returns (dead letters, moderation events, audit).
const MAX_LIST: usize = 1000;

/// A list call's `limit`: 100 when absent, at most [`MAX_LIST`].
pub(crate) fn list_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::InvalidRequest(format!("limit must be 1..={MAX_LIST}")));
    }
    Ok(limit)
}
