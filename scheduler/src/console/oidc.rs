//! Sign-in through the configured OpenID Connect provider: authorization code with PKCE.
//!
//! 1. `GET /console/oidc/start`: a fresh state, nonce and PKCE verifier; the verifier and nonce
//!    are kept in Redis under the state (ten minutes, one use), the state also in a cookie of
//!    this browser's; the browser goes to the provider.
//! 2. `GET /console/oidc/callback?code=&state=`: the state must be the cookie's and still kept;
//!    the code is exchanged (with the verifier), the ID token verified (signature, issuer,
//!    audience, expiry, nonce), the email mapped to `admin` or `admin:read`. A session starts
//!    as for a key, audited as `console.sign_in` with `oidc`.
//!
//! The session cookie is `SameSite=Strict`, which a browser does not send on a navigation that
//! began at another site (the provider's redirect), so the callback answers with a page that
//! moves on to the overview itself rather than with a redirect.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::session::{OIDC_COOKIE, cookie_of};
use super::{html as page_response, pages};
use crate::auth::Caller;
use crate::config::Scope;
use crate::state::AppState;

fn refused(status: StatusCode, why: &str) -> Response {
    page_response(status, pages::login(Some(why), true))
}

/// `GET /console/oidc/start`.
pub(super) async fn start(State(state): State<AppState>) -> Response {
    let Some(oidc) = &state.oidc else {
        return refused(StatusCode::NOT_FOUND, "single sign-on is not configured");
    };
    let auth = match oidc.authorize().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "starting an OpenID Connect sign-in failed");
            return refused(StatusCode::BAD_GATEWAY, "the identity provider is unavailable; retry");
        }
    };
    if let Err(e) = state.console.begin_oidc(&auth.state, &auth.verifier, &auth.nonce).await {
        tracing::warn!(error = %e, "keeping an OpenID Connect sign-in failed");
        return refused(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable; retry");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, auth.url),
            (header::SET_COOKIE, state.console.oidc_cookie(&auth.state)),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
}

/// `GET /console/oidc/callback`.
pub(super) async fn callback(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<Callback>) -> Response {
    let Some(oidc) = &state.oidc else {
        return refused(StatusCode::NOT_FOUND, "single sign-on is not configured");
    };
    if !q.error.is_empty() {
        let why: String = q.error.chars().filter(|c| !c.is_control()).take(100).collect();
        return refused(
            StatusCode::UNAUTHORIZED,
            &format!("the identity provider refused: {why}"),
        );
    }
    // The state must be the one this browser was given, and still kept (once).
    let ours = cookie_of(&headers, OIDC_COOKIE);
    if q.state.is_empty() || ours.as_deref() != Some(q.state.as_str()) {
        return refused(
            StatusCode::FORBIDDEN,
            "this sign-in did not begin in this browser; start again",
        );
    }
    let (verifier, nonce) = match state.console.take_oidc(&q.state).await {
        Ok(Some(v)) => v,
        Ok(None) => return refused(StatusCode::FORBIDDEN, "this sign-in expired or was used; start again"),
        Err(e) => {
            tracing::warn!(error = %e, "reading an OpenID Connect sign-in failed");
            return refused(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable; retry");
        }
    };
    let who = match oidc.finish(&q.code, &verifier, &nonce).await {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!(error = %e, "an OpenID Connect sign-in failed");
            return refused(StatusCode::UNAUTHORIZED, &e.to_string());
        }
    };
    let cfg = oidc.config();
    let listed = |list: &[String]| list.iter().any(|e| e.eq_ignore_ascii_case(&who.email));
    let scope = if listed(&cfg.admins) {
        Scope::Admin
    } else if listed(&cfg.readers) {
        Scope::AdminRead
    } else {
        tracing::warn!(subject = %who.subject, "an OpenID Connect sign-in by someone not listed was refused");
        return refused(
            StatusCode::FORBIDDEN,
            &format!("{} is not an operator of this console", who.email),
        );
    };
    let caller = Caller {
        tenant: cfg.tenant.clone(),
        scopes: vec![scope],
        key_id: format!("oidc:{}", who.email),
    };
    // Audited first: no unaudited session.
    let details = serde_json::json!({"with": "oidc", "subject": who.subject});
    if let Err(e) = crate::audit::audited(&state, &caller, "console.sign_in", "console", details).await {
        tracing::warn!(error = %e, "auditing a console sign-in failed; refused");
        return refused(StatusCode::SERVICE_UNAVAILABLE, "the audit log is unavailable; retry");
    }
    let token = match state.console.create(&caller).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "creating a console session failed");
            return refused(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable; retry");
        }
    };
    let page = pages::page(
        "Signed in",
        None,
        html! {
            meta http-equiv="refresh" content="0;url=/console";
            h1 { "Signed in" }
            p { "Signed in as " (who.email) ". " a href="/console" { "On to the overview" } }
        },
    );
    let mut r = page_response(StatusCode::OK, page);
    let h = r.headers_mut();
    for c in [state.console.cookie(&token), state.console.oidc_cookie_cleared()] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}
