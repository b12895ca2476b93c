//! The jobs pages: search (tenant, status, kind, user id, pipeline, created after), newest
//! first, a page at a time; a job's page with its history as a timeline, its result's metadata
//! (never the content, and nothing of a blocked job's), its credits; cancel and replay.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Session;
use super::{html as page_response, operator_acting, pages, query_value, redirect, refusal, session_of, to_login};
use crate::audit::audited;
use crate::job_search::{Params, operator_search};
use crate::state::AppState;
use gantry_core::time::rfc3339_ms;
use gantry_queue::{DeadAction, JobId, JobKind, JobRecord, JobStatus, JobSummary};

/// Rows a page shows.
const PAGE: usize = 50;

#[derive(Clone, Debug, Default, Deserialize)]
pub(super) struct SearchForm {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    pipeline: String,
    /// Created within the last this-many hours.
    #[serde(default)]
    hours: String,
    #[serde(default)]
    cursor: String,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl SearchForm {
    fn params(&self) -> Result<Params, String> {
        let status = some(&self.status)
            .map(|s| serde_json::from_value::<JobStatus>(serde_json::Value::String(s)))
            .transpose()
            .map_err(|_| "status: not a job status".to_owned())?;
        let kind = some(&self.kind)
            .map(|k| k.parse::<JobKind>())
            .transpose()
            .map_err(|e| e.to_string())?;
        let created_after = some(&self.hours)
            .map(|h| h.parse::<u64>().map_err(|_| "hours: a whole number".to_owned()))
            .transpose()?
            .map(|h| gantry_core::time::now_ms().saturating_sub(h.saturating_mul(3_600_000)));
        Ok(Params {
            tenant: some(&self.tenant),
            pipeline: some(&self.pipeline),
            status,
            kind,
            user: some(&self.user),
            created_after,
            created_before: None,
            limit: Some(PAGE),
            cursor: some(&self.cursor),
        })
    }

    fn query(&self) -> String {
        format!(
            "tenant={}&status={}&kind={}&user={}&pipeline={}&hours={}",
            query_value(&self.tenant),
            query_value(&self.status),
            query_value(&self.kind),
            query_value(&self.user),
            query_value(&self.pipeline),
            query_value(&self.hours)
        )
    }
}

/// `GET /console/jobs`.
pub(super) async fn search(State(state): State<AppState>, headers: HeaderMap, Query(f): Query<SearchForm>) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    let refused = |status: StatusCode, why: &str| refusal(&s, status, why);
    let params = match f.params() {
        Ok(p) => p,
        Err(why) => return refused(StatusCode::BAD_REQUEST, &why),
    };
    match operator_search(&state, params).await {
        Ok(page) => page_response(
            StatusCode::OK,
            list_view(&state, &s, &f, &page.jobs, page.next_cursor.as_deref()),
        ),
        Err(e) => refused(e.status(), &e.to_string()),
    }
}

fn list_view(state: &AppState, s: &Session, f: &SearchForm, jobs: &[JobSummary], next: Option<&str>) -> Markup {
    let tenants: Vec<&String> = state.cfg.tenants.keys().collect();
    let statuses = [
        "waiting",
        "queued",
        "delayed",
        "running",
        "retry_scheduled",
        "succeeded",
        "dead",
        "cancelled",
        "blocked",
    ];
    pages::page(
        "Jobs",
        Some(s),
        html! {
            h1 { "Jobs" }
            form.filters method="get" action="/console/jobs" {
                label for="j-tenant" { "Tenant" }
                select #j-tenant name="tenant" {
                    option value="" selected[f.tenant.is_empty()] { "any" }
                    @for t in &tenants { option value=(t) selected[f.tenant == **t] { (t) } }
                }
                label for="j-status" { "Status" }
                select #j-status name="status" {
                    option value="" selected[f.status.is_empty()] { "any" }
                    @for st in statuses { option value=(st) selected[f.status == st] { (st) } }
                }
                label for="j-kind" { "Kind" }
                select #j-kind name="kind" {
                    option value="" selected[f.kind.is_empty()] { "any" }
                    @for k in ["generate", "upscale", "transcode", "csam_hash", "noop"] {
                        option value=(k) selected[f.kind == k] { (k) }
                    }
                }
                label for="j-user" { "User id" }
                input #j-user type="text" name="user" value=(f.user) maxlength="128";
                label for="j-pipeline" { "Pipeline" }
                input #j-pipeline type="text" name="pipeline" value=(f.pipeline) maxlength="64";
                label for="j-hours" { "Created within (hours)" }
                input #j-hours type="number" min="1" name="hours" value=(f.hours);
                button type="submit" { "Search" }
            }
            table {
                caption { "Jobs, newest first" }
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Tenant" } th scope="col" { "Kind" }
                    th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Pool" }
                    th scope="col" { "Created (UTC)" } th scope="col" { "Last error" }
                } }
                tbody {
                    @for j in jobs {
                        tr data-job=(j.id) {
                            td { a href=(format!("/console/jobs/{}", j.id)) { code { (j.id) } } }
                            td { (j.tenant) } td { (j.kind) } td { (j.status.as_str()) }
                            td { (j.attempts) "/" (j.max_attempts) } td { (j.pool) }
                            td { (rfc3339_ms(j.enqueued_at_ms)) }
                            td { @if let Some(e) = &j.error { (e.class.as_str()) ": " (e.message) } }
                        }
                    }
                }
            }
            @if jobs.is_empty() { p { "No job matches." } }
            @if let Some(c) = next {
                nav aria-label="Pages" {
                    a href=(format!("/console/jobs?{}&cursor={}", f.query(), query_value(c))) { "older jobs →" }
                }
            }
        },
    )
}

/// `GET /console/jobs/{id}`.
pub(super) async fn show(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    let refused = |status: StatusCode, why: &str| refusal(&s, status, why);
    let Ok(id) = id.parse::<JobId>() else {
        return refused(StatusCode::NOT_FOUND, "no such job");
    };
    let record = match state.queue.job(id).await {
        Ok(r) => r,
        Err(gantry_queue::QueueError::NotFound(_)) => return refused(StatusCode::NOT_FOUND, "no such job"),
        Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let credits = state
        .admission
        .credits
        .entry(&record.spec.tenant, id)
        .await
        .ok()
        .flatten();
    page_response(StatusCode::OK, job_view(&s, id, &record, credits.as_ref()))
}

fn job_view(s: &Session, id: JobId, r: &JobRecord, credits: Option<&crate::admission::credits::CreditEntry>) -> Markup {
    let ended = matches!(
        r.status,
        JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled | JobStatus::Blocked
    );
    pages::page(
        "Job",
        Some(s),
        html! {
            h1 { "Job " code { (id) } }
            dl.facts {
                dt { "Status" } dd #job-status { (r.status.as_str()) }
                dt { "Tenant" } dd { (r.spec.tenant) }
                dt { "User id" } dd { (r.spec.user) }
                dt { "Kind" } dd { (r.spec.body.kind()) }
                dt { "Pool" } dd { (r.spec.pool) }
                dt { "Attempts" } dd { (r.attempts) " of " (r.spec.max_attempts) }
                dt { "Created (UTC)" } dd { (rfc3339_ms(r.enqueued_at_ms)) }
                @if let Some(t) = r.finished_at_ms { dt { "Ended (UTC)" } dd { (rfc3339_ms(t)) } }
                @if let Some(w) = &r.worker { dt { "Worker" } dd { (w) } }
                @if let Some(p) = &r.progress {
                    dt { "Progress" } dd { (p.stage.as_str()) @if let Some(pc) = p.percent { " " (format!("{pc:.0}")) "%" } }
                }
                @if let Some(e) = &r.error { dt { "Last error" } dd { (e.class.as_str()) ": " (e.message) } }
                @if let Some(c) = credits {
                    dt { "Credits" } dd { (c.reserved) " reserved, " (c.charged) " charged (" (c.state) ")" }
                }
            }
            h2 { "Result" }
            @match (&r.result, r.status) {
                (_, JobStatus::Blocked) => p { "Withheld: its content matched an abuse hash list." },
                (Some(res), _) => dl.facts {
                    dt { "Object" } dd { code { (res.object_key) } }
                    dt { "Type" } dd { (res.content_type) }
                    dt { "Size" } dd { (res.size_bytes) " bytes" }
                    dt { "SHA-256" } dd { code { (res.sha256) } }
                },
                (None, _) => p { "None yet." },
            }
            p.muted { "Outputs are users' private content: the console shows their metadata, never the content." }
            h2 { "History" }
            ol.timeline {
                li { (rfc3339_ms(r.enqueued_at_ms)) " — enqueued" }
                @for h in &r.history {
                    li {
                        (rfc3339_ms(h.at)) " — " (h.event)
                        @if let Some(a) = h.attempt { ", attempt " (a) }
                        @if let Some(w) = &h.worker { ", worker " (w) }
                        @if let Some(c) = &h.class { " (" (c) ")" }
                        @if let Some(m) = &h.message { ": " (m) }
                    }
                }
                @if let Some(t) = r.finished_at_ms { li { (rfc3339_ms(t)) " — " (r.status.as_str()) } }
            }
            @if s.may_act() {
                @if !ended {
                    form method="post" action=(format!("/console/jobs/{id}/cancel")) {
                        input type="hidden" name="csrf" value=(s.csrf);
                        button type="submit" { "Cancel this job" }
                    }
                }
                @if r.status == JobStatus::Dead {
                    form method="post" action=(format!("/console/jobs/{id}/replay")) {
                        input type="hidden" name="csrf" value=(s.csrf);
                        button type="submit" { "Replay this job" }
                    }
                }
            }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct ActForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/jobs/{id}/{cancel|replay}`.
pub(super) async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
    Form(f): Form<ActForm>,
) -> Response {
    let s = match operator_acting(&state, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let refused = |status: StatusCode, why: &str| refusal(&s, status, why);
    let Ok(job) = id.parse::<JobId>() else {
        return refused(StatusCode::NOT_FOUND, "no such job");
    };
    let outcome = match verb.as_str() {
        "cancel" => match state.queue.cancel(job).await {
            Ok(o) => audited(
                &state,
                &s.caller,
                "console.job.cancel",
                job.to_string(),
                serde_json::json!({"outcome": format!("{o:?}")}),
            )
            .await
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        "replay" => state
            .dead_letters
            .act_on_one(&s.caller.actor(), job, DeadAction::Replay)
            .await
            .map_err(|e| e.to_string()),
        _ => return refused(StatusCode::NOT_FOUND, "no such action"),
    };
    match outcome {
        Ok(()) => redirect(&format!("/console/jobs/{job}")),
        Err(why) => refused(StatusCode::CONFLICT, &why),
    }
}
