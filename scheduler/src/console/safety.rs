//! The trust-and-safety pages: the abuse hash lists (versions, counts; publish a list file as
//! a list's next version; remove one), the newest moderation events, a user's trust standing
//! with its history (unblock, block, adjust, reset, each with a required reason), and the audit
//! log of operators' actions. Every change goes through the same code as the admin API's and is
//! audited with the operator's identity.

use axum::extract::{Form, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Session;
use super::{html as page_response, operator_acting, pages, query_value, redirect, refusal, session_of, to_login};
use crate::problem::ApiError;
use crate::safety_admin::{TrustView, change_trust, publish_list, remove_list, trust_action, trust_of};
use crate::state::AppState;
use gantry_core::time::rfc3339_ms;
use gantry_safety::hashlists::ListMeta;
use gantry_safety::{AuditEntry, ModerationEvent};

/// Moderation events the page shows.
const EVENTS: usize = 50;
/// Audit entries searched (newest first) and shown.
const AUDIT_SCANNED: usize = 2_000;
const AUDIT_SHOWN: usize = 200;
/// The largest list file the form takes (as the API's body limit).
pub(super) const MAX_LIST_BYTES: usize = 64 << 20;

fn api_refusal(s: &Session, e: &ApiError) -> Response {
    refusal(s, e.status(), &e.to_string())
}

/// `GET /console/safety`.
pub(super) async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    let lists = match state.hashlists.lists().await {
        Ok(l) => l,
        Err(e) => return api_refusal(&s, &crate::audit::safety_error(e)),
    };
    let events = match state.moderation.recent(EVENTS).await {
        Ok(e) => e,
        Err(e) => return api_refusal(&s, &crate::audit::safety_error(e)),
    };
    let tenants: Vec<&String> = state.cfg.tenants.keys().collect();
    page_response(StatusCode::OK, overview_view(&s, &lists, &events, &tenants))
}

fn trust_link(tenant: &str, user: &str) -> String {
    format!(
        "/console/safety/trust?tenant={}&user={}",
        query_value(tenant),
        query_value(user)
    )
}

fn overview_view(s: &Session, lists: &[ListMeta], events: &[ModerationEvent], tenants: &[&String]) -> Markup {
    pages::page(
        "Safety",
        Some(s),
        html! {
            h1 { "Trust and safety" }
            section aria-labelledby="hashlists" {
                h2 #hashlists { "Abuse hash lists" }
                table {
                    caption { "Lists every worker matches outputs against" }
                    thead { tr {
                        th scope="col" { "List" } th scope="col" { "Version" } th scope="col" { "Category" }
                        th scope="col" { "PDQ" } th scope="col" { "MD5" } th scope="col" { "SHA-256" }
                        th scope="col" { "Published (UTC)" }
                        @if s.may_act() { th scope="col" { "Remove" } }
                    } }
                    tbody {
                        @for l in lists {
                            tr data-list=(l.name) {
                                th scope="row" { (l.name) } td { (l.version) } td { (l.category) }
                                td { (l.pdq) } td { (l.md5) } td { (l.sha256) }
                                td { (rfc3339_ms(l.updated_at_ms)) }
                                @if s.may_act() {
                                    td {
                                        form.inline method="post" action=(format!("/console/safety/hashlists/{}/remove", query_value(&l.name))) {
                                            input type="hidden" name="csrf" value=(s.csrf);
                                            input id=(format!("rm-{}", l.name)) type="checkbox" name="confirm" value="yes" required;
                                            label for=(format!("rm-{}", l.name)) { "I mean it: matching on " (l.name) " stops at once" }
                                            button type="submit" { "Remove " (l.name) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if lists.is_empty() { p { "No list is published: nothing is matched." } }
                @if s.may_act() {
                    h3 { "Publish a list" }
                    p.muted { "The list file: one hash per line (" code { "pdq:HEX" } ", " code { "md5:HEX" } ", " code { "sha256:HEX" } " or bare PDQ hex), " code { "#" } " comments. It becomes the list's next version; a bad line refuses the whole file, naming the line." }
                    form method="post" action="/console/safety/hashlists" enctype="multipart/form-data" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        label for="hl-name" { "List name" }
                        input #hl-name type="text" name="name" required maxlength="64" pattern="[a-z0-9_-]+";
                        label for="hl-category" { "Category" }
                        input #hl-category type="text" name="category" value="csam" required maxlength="32" pattern="[a-z0-9_]+";
                        label for="hl-file" { "List file" }
                        input #hl-file type="file" name="file" required;
                        button type="submit" { "Publish" }
                    }
                }
            }
            section aria-labelledby="trust" {
                h2 #trust { "A user's trust standing" }
                form.filters method="get" action="/console/safety/trust" {
                    label for="t-tenant" { "Tenant" }
                    select #t-tenant name="tenant" { @for t in tenants { option value=(t) { (t) } } }
                    label for="t-user" { "User id" }
                    input #t-user type="text" name="user" required maxlength="128";
                    button type="submit" { "Look up" }
                }
            }
            section aria-labelledby="moderation" {
                h2 #moderation { "Moderation events" }
                table {
                    caption { "The newest " (EVENTS) ", newest first" }
                    thead { tr {
                        th scope="col" { "When (UTC)" } th scope="col" { "Category" } th scope="col" { "Action" }
                        th scope="col" { "Match" } th scope="col" { "Tenant" } th scope="col" { "User" }
                        th scope="col" { "Job" }
                    } }
                    tbody {
                        @for e in events {
                            tr data-event=(e.id) {
                                td { (rfc3339_ms(e.at_ms)) } td { (e.category) } td { (e.action) }
                                td { (e.list) " v" (e.list_version) ", " (e.match_kind) @if let Some(d) = e.distance { " at distance " (d) } }
                                td { (e.tenant) }
                                td { a href=(trust_link(&e.tenant, &e.user)) { (e.user) } @if e.user_blocked { " " span.paused { "blocked" } } }
                                td { a href=(format!("/console/jobs/{}", query_value(&e.job_id))) { code { (e.job_id) } } }
                            }
                        }
                    }
                }
                @if events.is_empty() { p { "No moderation event." } }
            }
        },
    )
}

/// `POST /console/safety/hashlists` (multipart: csrf, name, category, file).
pub(super) async fn publish(State(state): State<AppState>, headers: HeaderMap, mut form: Multipart) -> Response {
    // No session, no reading of the (large) body.
    if session_of(&state, &headers).await.is_none() {
        return to_login();
    }
    let (mut csrf, mut name, mut category, mut file) = (String::new(), String::new(), String::new(), None);
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return bad_upload(&state, &headers, &e.body_text()).await,
        };
        let key = field.name().unwrap_or_default().to_owned();
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) => return bad_upload(&state, &headers, &e.body_text()).await,
        };
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match key.as_str() {
            "csrf" => csrf = text(),
            "name" => name = text(),
            "category" => category = text(),
            "file" => file = Some(bytes.clone()),
            _ => {}
        }
    }
    let s = match operator_acting(&state, &headers, &csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(file) = file.filter(|f| !f.is_empty()) else {
        return refusal(&s, StatusCode::BAD_REQUEST, "choose the list file to publish");
    };
    let Ok(text) = std::str::from_utf8(&file) else {
        return refusal(&s, StatusCode::BAD_REQUEST, "the list must be UTF-8 text");
    };
    match publish_list(
        &state,
        &s.caller,
        name.trim(),
        category.trim(),
        gantry_safety::hashlists::Thresholds::default(),
        text,
    )
    .await
    {
        Ok(_) => redirect("/console/safety"),
        Err(e) => api_refusal(&s, &e),
    }
}

/// A multipart body the form did not send: refused as a page (signed in or not).
async fn bad_upload(state: &AppState, headers: &HeaderMap, why: &str) -> Response {
    match session_of(state, headers).await {
        Some(s) => refusal(&s, StatusCode::BAD_REQUEST, why),
        None => to_login(),
    }
}

#[derive(Deserialize)]
pub(super) struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /console/safety/hashlists/{name}/remove`.
pub(super) async fn remove(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<RemoveForm>,
) -> Response {
    let s = match operator_acting(&state, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if f.confirm != "yes" {
        return refusal(&s, StatusCode::BAD_REQUEST, "tick the confirmation to remove a list");
    }
    match remove_list(&state, &s.caller, &name).await {
        Ok(()) => redirect("/console/safety"),
        Err(e) => api_refusal(&s, &e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct TrustQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    user: String,
}

/// `GET /console/safety/trust?tenant=&user=`.
pub(super) async fn trust_show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<TrustQuery>,
) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    match trust_of(&state, q.tenant.trim(), q.user.trim()).await {
        Ok(v) => page_response(StatusCode::OK, trust_view(&s, q.user.trim(), &v)),
        Err(ApiError::NotFound) => refusal(&s, StatusCode::NOT_FOUND, "no such tenant"),
        Err(e) => api_refusal(&s, &e),
    }
}

fn trust_view(s: &Session, user: &str, v: &TrustView) -> Markup {
    pages::page(
        "Trust",
        Some(s),
        html! {
            h1 { "Trust standing" }
            dl.facts {
                dt { "Tenant" } dd { (v.tenant) }
                dt { "User id" } dd { (user) }
                dt { "User key" } dd { code { (v.user_key) } }
                dt { "Score" } dd #trust-score { (format!("{:.2}", v.score)) }
                dt { "Standing" } dd #trust-standing { @if v.blocked { span.paused { "blocked" } } @else { "not blocked" } }
            }
            @if s.may_act() {
                h2 { "Change it" }
                form method="post" action="/console/safety/trust/change" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="tenant" value=(v.tenant);
                    input type="hidden" name="user" value=(user);
                    fieldset {
                        legend { "Action" }
                        @for (value, label, checked) in [
                            ("unblock", "Unblock (the score stays)", v.blocked),
                            ("block", "Block outright", false),
                            ("reset", "Reset (score 1.00, not blocked)", false),
                            ("adjust", "Adjust the score by", !v.blocked),
                        ] {
                            input id=(format!("ta-{value}")) type="radio" name="action" value=(value) checked[checked];
                            label for=(format!("ta-{value}")) { (label) }
                        }
                        label for="ta-delta" { "Change (−1 to 1, with adjust)" }
                        input #ta-delta type="number" name="delta" step="0.01" min="-1" max="1";
                    }
                    label for="ta-reason" { "Reason (kept in the user's history and the audit log)" }
                    input #ta-reason type="text" name="reason" required maxlength="500";
                    button type="submit" { "Apply" }
                }
            }
            h2 { "History" }
            table {
                caption { "Changes to this user's standing, newest first" }
                thead { tr {
                    th scope="col" { "When (UTC)" } th scope="col" { "By" } th scope="col" { "Action" }
                    th scope="col" { "Reason" } th scope="col" { "Score after" } th scope="col" { "Blocked after" }
                } }
                tbody {
                    @for h in &v.history {
                        tr {
                            td { (rfc3339_ms(h.at_ms)) } td { (h.by) }
                            td { (h.action) @if let Some(d) = h.delta { " " (format!("{d:+.2}")) } }
                            td { (h.reason) } td { (format!("{:.2}", h.score)) } td { (if h.blocked { "yes" } else { "no" }) }
                        }
                    }
                }
            }
            @if v.history.is_empty() { p { "No change was ever made: a new user's standing." } }
            p { a href="/console/safety" { "Back to trust and safety" } }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct TrustForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    delta: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/safety/trust/change`.
pub(super) async fn trust_change(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<TrustForm>,
) -> Response {
    let s = match operator_acting(&state, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let delta = match (f.action.as_str(), f.delta.trim()) {
        ("adjust", d) => match d.parse::<f64>() {
            Ok(d) => Some(d),
            Err(_) => return refusal(&s, StatusCode::BAD_REQUEST, "adjust needs a change between -1 and 1"),
        },
        // The other actions take no change; a number left in the field is ignored.
        _ => None,
    };
    let outcome = match trust_action(&f.action, delta) {
        Ok(action) => change_trust(&state, &s.caller, f.tenant.trim(), f.user.trim(), action, &f.reason).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(_) => redirect(&trust_link(f.tenant.trim(), f.user.trim())),
        Err(e) => api_refusal(&s, &e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
}

/// `GET /console/audit[?actor=&action=]`: the newest entries whose actor and action contain
/// what is asked (among the newest few thousand).
pub(super) async fn audit(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<AuditQuery>) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    let entries = match state.audit.recent(AUDIT_SCANNED).await {
        Ok(e) => e,
        Err(e) => return api_refusal(&s, &crate::audit::safety_error(e)),
    };
    let (actor, action) = (q.actor.trim(), q.action.trim());
    let shown: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.actor.contains(actor) && e.action.contains(action))
        .take(AUDIT_SHOWN)
        .collect();
    page_response(StatusCode::OK, audit_view(&s, &q, &shown))
}

fn audit_view(s: &Session, q: &AuditQuery, entries: &[&AuditEntry]) -> Markup {
    pages::page(
        "Audit log",
        Some(s),
        html! {
            h1 { "Audit log" }
            p.muted { "Every operator action, from the console, the admin API and the CLI, with who took it." }
            form.filters method="get" action="/console/audit" {
                label for="a-actor" { "Actor contains" }
                input #a-actor type="text" name="actor" value=(q.actor) maxlength="200";
                label for="a-action" { "Action contains" }
                input #a-action type="text" name="action" value=(q.action) maxlength="100";
                button type="submit" { "Filter" }
            }
            table {
                caption { "The newest " (AUDIT_SHOWN) " matching entries, newest first" }
                thead { tr {
                    th scope="col" { "When (UTC)" } th scope="col" { "Actor" } th scope="col" { "Action" }
                    th scope="col" { "Target" } th scope="col" { "Details" }
                } }
                tbody {
                    @for e in entries {
                        tr data-action=(e.action) {
                            td { (rfc3339_ms(e.at_ms)) } td { (e.actor) } td { (e.action) } td { (e.target) }
                            td { @if !e.details.is_null() { code { (e.details.to_string()) } } }
                        }
                    }
                }
            }
            @if entries.is_empty() { p { "No entry matches." } }
        },
    )
}
