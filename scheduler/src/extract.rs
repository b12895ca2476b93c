//! What handlers read from requests beyond the caller (see [`crate::auth`]), as axum
//! extractors whose refusals are typed API problems (axum's `customize-extractor-error`
//! pattern): a JSON body under the configured limit, a raw body under a route's own limit,
//! query strings; and list limits.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;
use crate::state::AppState;

/// A JSON body as `T`: 413 past `max_body_bytes`, 408 when it did not arrive in time,
/// `malformed_json` when it is not JSON, `invalid_request` when it is JSON of another shape.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::of_body(e, state.cfg.max_body_bytes))?;
        // One parse: serde says whether the text is not JSON or JSON of another shape.
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ApiError::InvalidRequest(e.to_string()),
                _ => ApiError::MalformedJson(e.to_string()),
            })
    }
}

/// A raw body of at most `MAX` bytes (the route's own `DefaultBodyLimit`): 413 past it, 408
/// when it did not arrive in time.
#[derive(Debug)]
pub(crate) struct LimitedBody<const MAX: usize>(pub Bytes);

impl<const MAX: usize> FromRequest<AppState> for LimitedBody<MAX> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(|e| ApiError::of_body(e, MAX))
    }
}

/// A query string as `T`; one that does not parse is `invalid_request`, saying why.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e| ApiError::InvalidRequest(e.body_text()))
    }
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
