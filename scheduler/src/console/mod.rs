//! The operator console at `/console`: server-rendered pages for SREs and trust-and-safety
//! staff, served by the scheduler itself (nothing else to run; the stylesheet is in the
//! binary). Every page works as plain HTML forms.
//!
//! - **Sign-in** with an operator API key (`admin`, or `admin:read` to look without acting):
//!   the key is checked as the API checks it and then forgotten; the browser gets a session
//!   cookie ([`session`]).
//! - **Every state change** is a POST carrying the session's CSRF token, from this origin
//!   (`Origin`, where the browser sends one, must be the console's own); it needs the `admin`
//!   scope, and is audited with the operator's identity as the API's are (`console.*`).
//! - A tenant's key, or no session, gets the sign-in page, never a page of data.
//!
//! Pages: the overview (every pool's queues, workers live and desired; pause and resume with a
//! reason); jobs (search; a job's timeline, result metadata and credits; cancel, replay); dead letters (filter; replay or purge one, or all matching after a dry-run count
//! and a confirmation).

mod bulk;
mod dead_letters;
mod jobs;
mod live;
mod oidc;
pub mod pages;
mod safety;
mod tenants;
mod workers;
pub use crate::console_session as session;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::audit::audited;
use crate::config::Scope;
use crate::state::AppState;
use session::Session;

/// The console's routes (outside the API's key check: the console has its own sign-in).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(overview))
        .route("/console/login", get(login_page).post(login))
        .route("/console/login/once", get(login_once))
        .route("/console/oidc/start", get(oidc::start))
        .route("/console/oidc/callback", get(oidc::callback))
        .route("/console/logout", post(logout))
        .route("/console/queues/{pool}/{kind}/{verb}", post(queue_action))
        .route("/console/jobs", get(jobs::search))
        .route("/console/jobs/{id}", get(jobs::show))
        .route("/console/jobs/{id}/{verb}", post(jobs::act))
        .route("/console/jobs/{id}/stream", get(live::job_stream))
        .route("/console/dead-letters", get(dead_letters::list))
        .route("/console/dead-letters/preview", post(dead_letters::preview))
        .route("/console/dead-letters/act", post(dead_letters::act))
        .route("/console/dead-letters/bulk/{id}", get(bulk::progress))
        .route("/console/dead-letters/{id}/{verb}", post(dead_letters::act_on_one))
        .route("/console/workers", get(workers::list))
        .route("/console/tenants", get(tenants::list))
        .route("/console/tenants/{tenant}", get(tenants::show))
        .route("/console/tenants/{tenant}/top-up", post(tenants::top_up))
        .route("/console/safety", get(safety::overview))
        .route(
            "/console/safety/hashlists",
            post(safety::publish).layer(axum::extract::DefaultBodyLimit::max(safety::MAX_LIST_BYTES)),
        )
        .route("/console/safety/hashlists/{name}/remove", post(safety::remove))
        .route("/console/safety/trust", get(safety::trust_show))
        .route("/console/safety/trust/change", post(safety::trust_change))
        .route("/console/audit", get(safety::audit))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/overview/stream", get(live::stream))
}

fn html(status: StatusCode, m: maud::Markup) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
        ],
        Html(m.into_string()),
    )
        .into_response()
}

fn to_login() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/console/login")]).into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// The session a request carries, if it is live and the configuration still grants what it
/// holds (else it is ended now).
async fn session_of(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let token = session::token_of(headers)?;
    let s = match state.console.get(&token).await {
        Ok(s) => s?,
        Err(e) => {
            tracing::warn!(error = %e, "reading a console session failed");
            return None;
        }
    };
    if !still_granted(state, &s.caller) {
        tracing::info!(actor = %s.caller.actor(), "a console session the configuration no longer grants was ended");
        if let Err(e) = state.console.end(&token).await {
            tracing::warn!(error = %e, "ending a console session failed");
        }
        return None;
    }
    Some(s)
}

/// Whether the configuration still grants a session's operator what the session holds: an
/// operator tenant, and the key (or, signed in through OpenID Connect, the listed email) with
/// those scopes.
fn still_granted(state: &AppState, caller: &crate::auth::Caller) -> bool {
    if !state.cfg.tenants.get(&caller.tenant).is_some_and(|t| t.operator) {
        return false;
    }
    match caller.key_id.strip_prefix("oidc:") {
        Some(email) => state.oidc.as_ref().is_some_and(|o| {
            let cfg = o.config();
            let listed = |list: &[String]| list.iter().any(|e| e.eq_ignore_ascii_case(email));
            let allowed: &[Scope] = if listed(&cfg.admins) {
                &[Scope::Admin, Scope::AdminRead]
            } else if listed(&cfg.readers) {
                &[Scope::AdminRead]
            } else {
                &[]
            };
            cfg.tenant == caller.tenant && caller.scopes.iter().all(|s| allowed.contains(s))
        }),
        None => state.keys.still_grants(caller),
    }
}

/// Refuses a POST from another origin (a browser names its origin on every POST).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|s| s == "same-origin" || s == "none");
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o == host)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        pages::CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        live::SCRIPT,
    )
        .into_response()
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if session_of(&state, &headers).await.is_some() {
        return redirect("/console");
    }
    html(StatusCode::OK, pages::login(None, state.oidc.is_some()))
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    if !same_origin(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            pages::login(Some("sign-in from another site refused"), state.oidc.is_some()),
        );
    }
    let Some(caller) = state.keys.by_key(f.key.trim()) else {
        return html(
            StatusCode::UNAUTHORIZED,
            pages::login(Some("that key is not known"), state.oidc.is_some()),
        );
    };
    let operator = state.cfg.tenants.get(&caller.tenant).is_some_and(|t| t.operator);
    if !operator || !(caller.scopes.contains(&Scope::Admin) || caller.scopes.contains(&Scope::AdminRead)) {
        return html(
            StatusCode::FORBIDDEN,
            pages::login(
                Some("that key is not an operator's (scope admin or admin:read)"),
                state.oidc.is_some(),
            ),
        );
    }
    start_session(&state, &caller, "key").await
}

#[derive(Deserialize)]
struct OnceQuery {
    #[serde(default)]
    token: String,
}

/// `GET /console/login/once?token=`: a one-time sign-in link (the demo prints one for its
/// operator). The token works once, for minutes, and only for the operator it was made for.
async fn login_once(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<OnceQuery>,
) -> Response {
    let caller = match state.console.redeem(q.token.trim()).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return html(
                StatusCode::UNAUTHORIZED,
                pages::login(
                    Some("that sign-in link was used already or has expired"),
                    state.oidc.is_some(),
                ),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "redeeming a console sign-in link failed");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::login(Some("the store is unavailable; retry"), state.oidc.is_some()),
            );
        }
    };
    start_session(&state, &caller, "link").await
}

/// Starts a session for a signed-in operator: audited first (no unaudited session), cookie
/// set, on to the overview.
async fn start_session(state: &AppState, caller: &crate::auth::Caller, how: &str) -> Response {
    if let Err(e) = audited(
        state,
        caller,
        "console.sign_in",
        "console",
        serde_json::json!({"with": how}),
    )
    .await
    {
        tracing::warn!(error = %e, "auditing a console sign-in failed; refused");
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::login(Some("the audit log is unavailable; retry"), state.oidc.is_some()),
        );
    }
    let token = match state.console.create(caller).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "creating a console session failed");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::login(Some("the store is unavailable; retry"), state.oidc.is_some()),
            );
        }
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console".to_owned()),
            (header::SET_COOKIE, state.console.cookie(&token)),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// The session of a state-changing POST: live, from this origin, with its CSRF token.
async fn acting(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    let Some(s) = session_of(state, headers).await else {
        return Err(to_login());
    };
    if !same_origin(headers) || !s.csrf_ok(csrf) {
        return Err(html(
            StatusCode::FORBIDDEN,
            pages::refused(
                Some(&s),
                403,
                "this form is stale or came from another site (CSRF check)",
            ),
        ));
    }
    Ok(s)
}

/// A refusal as a page, for a signed-in operator.
fn refusal(s: &Session, status: StatusCode, why: &str) -> Response {
    html(status, pages::refused(Some(s), status.as_u16(), why))
}

/// The session of an action, as [`acting`] checks it, whose operator may act (`admin`).
async fn operator_acting(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    let s = acting(state, headers, csrf).await?;
    if !s.may_act() {
        return Err(refusal(&s, StatusCode::FORBIDDEN, "a read-only operator cannot act"));
    }
    Ok(s)
}

/// A reason an operator gave, trimmed: 1 to 200 characters, no control characters.
fn reason(raw: &str) -> Option<&str> {
    let r = raw.trim();
    (!r.is_empty() && r.chars().count() <= 200 && !r.chars().any(char::is_control)).then_some(r)
}

/// `s` percent-encoded for a query string (links that keep a page's filters).
fn query_value(s: &str) -> String {
    crate::percent::encode(s)
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Err(r) = acting(&state, &headers, &f.csrf).await {
        return r;
    }
    if let Some(token) = session::token_of(&headers)
        && let Err(e) = state.console.end(&token).await
    {
        tracing::warn!(error = %e, "ending a console session failed");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/login".to_owned()),
            (header::SET_COOKIE, state.console.cleared()),
        ],
    )
        .into_response()
}

async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    let rendered_ms = gantry_core::time::now_ms();
    let mut rows = Vec::with_capacity(state.cfg.pools.len());
    for (name, p) in &state.cfg.pools {
        let Ok(pool) = gantry_queue::Pool::new(name) else {
            continue;
        };
        let queues = match state.queue.stats(&pool, &p.kinds).await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "reading queue stats for the console failed");
                return html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    pages::refused(Some(&s), 503, "the queue is unavailable; retry"),
                );
            }
        };
        let last_hour = match crate::console_feed::last_hour(&state.queue, &pool).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "reading a pool's last hour for the console failed");
                crate::console_feed::LastHour::default()
            }
        };
        let load = state.loads.get(name);
        rows.push(pages::PoolRow {
            last_hour,
            pool: name.clone(),
            queues,
            live_workers: load.live_workers,
            desired_workers: crate::metrics::desired_workers(p, &load),
        });
    }
    html(StatusCode::OK, pages::overview(&s, &rows, None, rendered_ms))
}

#[derive(Deserialize)]
struct PauseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn queue_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((pool, kind, verb)): Path<(String, String, String)>,
    Form(f): Form<PauseForm>,
) -> Response {
    let s = match operator_acting(&state, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(reason) = reason(&f.reason) else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::refused(Some(&s), 400, "a reason of 1 to 200 characters is required"),
        );
    };
    let pause = match verb.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return html(StatusCode::NOT_FOUND, pages::refused(Some(&s), 404, "no such action")),
    };
    let (Some(p), Ok(kind)) = (state.cfg.pools.get(&pool), kind.parse::<gantry_queue::JobKind>()) else {
        return html(StatusCode::NOT_FOUND, pages::refused(Some(&s), 404, "no such queue"));
    };
    let Ok(pool_name) = gantry_queue::Pool::new(&pool) else {
        return html(StatusCode::NOT_FOUND, pages::refused(Some(&s), 404, "no such queue"));
    };
    if !p.kinds.contains(&kind) {
        return html(StatusCode::NOT_FOUND, pages::refused(Some(&s), 404, "no such queue"));
    }
    let queue = gantry_queue::QueueName { pool: pool_name, kind };
    let changed = match state.queue.set_paused(&queue, pause).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "pausing a queue from the console failed");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::refused(Some(&s), 503, "the queue is unavailable; retry"),
            );
        }
    };
    let action = if pause {
        "console.queue.pause"
    } else {
        "console.queue.resume"
    };
    let details = serde_json::json!({"changed": changed, "reason": reason});
    if let Err(e) = audited(&state, &s.caller, action, format!("{pool}/{kind}"), details).await {
        // As the API does: the change is made, and reported as failed (repeating it is safe).
        tracing::warn!(error = %e, "auditing a console action failed");
        return refusal(
            &s,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{verb} done, but writing the audit log failed ({e}); repeating it is safe"),
        );
    }
    tracing::info!(pool = %pool, kind = %kind, paused = pause, "queue pause state set from the console");
    redirect("/console")
}
