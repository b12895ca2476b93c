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
use crate::pipelines::{PipelineView, StepView};
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
    let pipeline = match &record.step_of {
        Some((pl, _)) => state.pipelines.get(None, pl).await.ok(),
        None => None,
    };
    page_response(
        StatusCode::OK,
        job_view(&s, id, &record, credits.as_ref(), pipeline.as_ref()),
    )
}

/// Each step's column in the graph: 0 for a step that needs none, else one more than the
/// furthest step it needs.
fn columns(steps: &[StepView]) -> Vec<usize> {
    let mut col = vec![0usize; steps.len()];
    // Steps come parents first, so one pass in order settles every column.
    for (i, st) in steps.iter().enumerate() {
        col[i] = st
            .needs
            .iter()
            .filter_map(|n| steps.iter().position(|p| &p.name == n))
            .filter(|&p| p < i)
            .map(|p| col[p] + 1)
            .max()
            .unwrap_or(0);
    }
    col
}

/// The pipeline as a graph (inline SVG, each step a link to its job, arrows from the steps it
/// needs), with the same facts as a list under it.
fn pipeline_graph(p: &PipelineView, current: JobId) -> Markup {
    const W: usize = 170;
    const H: usize = 44;
    const GX: usize = 50;
    const GY: usize = 16;
    let col = columns(&p.steps);
    let mut row = vec![0usize; p.steps.len()];
    let mut used = vec![0usize; col.iter().max().map_or(1, |m| m + 1)];
    for (i, c) in col.iter().enumerate() {
        row[i] = used[*c];
        used[*c] += 1;
    }
    let width = used.len() * (W + GX);
    let height = used.iter().max().copied().unwrap_or(1) * (H + GY) + GY;
    let at = |i: usize| (col[i] * (W + GX) + 4, row[i] * (H + GY) + GY);
    html! {
        figure.graph {
            figcaption { "Pipeline " code { (p.id) } " (" (p.status) "): " (p.steps.len()) " steps" }
            // A group, not an image: its steps are links.
            svg role="group" aria-label=(format!("Pipeline {} as a graph of {} steps", p.id, p.steps.len()))
                viewBox=(format!("0 0 {width} {height}")) width=(width) height=(height) {
                defs {
                    marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse" {
                        path d="M 0 0 L 10 5 L 0 10 z" fill="#3d3d3d" {}
                    }
                }
                @for (i, st) in p.steps.iter().enumerate() {
                    @for n in &st.needs {
                        @if let Some(j) = p.steps.iter().position(|q| &q.name == n) {
                            @let ((x1, y1), (x2, y2)) = (at(j), at(i));
                            line x1=(x1 + W) y1=(y1 + H / 2) x2=(x2) y2=(y2 + H / 2)
                                stroke="#3d3d3d" stroke-width="1.5" marker-end="url(#arrow)" {}
                        }
                    }
                }
                @for (i, st) in p.steps.iter().enumerate() {
                    @let (x, y) = at(i);
                    a href=(format!("/console/jobs/{}", st.job_id)) {
                        rect x=(x) y=(y) width=(W) height=(H) rx="4"
                            fill=(if st.job_id == current { "#fff4c2" } else { "#ffffff" })
                            stroke=(status_colour(&st.status)) stroke-width=(if st.job_id == current { "3" } else { "2" }) {}
                        text x=(x + 8) y=(y + 18) font-size="13" font-weight="600" fill="#111111" { (st.name) }
                        text x=(x + 8) y=(y + 35) font-size="12" fill="#3d3d3d" { (st.kind) " · " (st.status) }
                    }
                }
            }
            ol.steps {
                @for st in &p.steps {
                    li data-step=(st.name) {
                        a href=(format!("/console/jobs/{}", st.job_id)) { (st.name) }
                        " — " (st.kind) ", " (st.status)
                        @if !st.needs.is_empty() { "; needs " (st.needs.join(", ")) }
                        @if st.job_id == current { " (this job)" }
                    }
                }
            }
        }
    }
}

/// A step's outline colour by status (each ≥ 3:1 against white, as graphics need).
fn status_colour(status: &str) -> &'static str {
    match status {
        "succeeded" => "#1a7f37",
        "dead" | "blocked" | "skipped" => "#8f1010",
        "cancelled" | "expired" => "#5c5c5c",
        _ => "#0b4f9c",
    }
}

fn job_view(
    s: &Session,
    id: JobId,
    r: &JobRecord,
    credits: Option<&crate::admission::credits::CreditEntry>,
    pipeline: Option<&PipelineView>,
) -> Markup {
    let ended = matches!(
        r.status,
        JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled | JobStatus::Blocked
    );
    pages::page(
        "Job",
        Some(s),
        html! {
            h1 { "Job " code { (id) } }
            p #live-stamp.muted aria-live="polite" data-live-job=(id) data-status=(r.status.as_str()) { "As of loading the page." }
            dl.facts {
                dt { "Status" } dd #job-status { (r.status.as_str()) }
                dt { "Tenant" } dd { (r.spec.tenant) }
                dt { "User id" } dd { (r.spec.user) }
                dt { "Kind" } dd { (r.spec.body.kind()) }
                dt { "Pool" } dd { (r.spec.pool) }
                dt { "Attempts" } dd { span #job-attempts { (r.attempts) } " of " (r.spec.max_attempts) }
                dt { "Created (UTC)" } dd { (rfc3339_ms(r.enqueued_at_ms)) }
                @if let Some(t) = r.finished_at_ms { dt { "Ended (UTC)" } dd { (rfc3339_ms(t)) } }
                @if let Some(w) = &r.worker { dt { "Worker" } dd { (w) } }
                dt { "Progress" }
                dd #job-progress {
                    @if let Some(p) = &r.progress { (p.stage.as_str()) @if let Some(pc) = p.percent { " " (format!("{pc:.0}")) "%" } }
                    @else { "—" }
                }
                @if let Some(e) = &r.error { dt { "Last error" } dd { (e.class.as_str()) ": " (e.message) } }
                @if let Some(c) = credits {
                    dt { "Credits" } dd { (c.reserved) " reserved, " (c.charged) " charged (" (c.state) ")" }
                }
            }
            @if let Some((pl, step)) = &r.step_of {
                h2 { "Pipeline" }
                @match pipeline {
                    Some(p) => (pipeline_graph(p, id)),
                    None => p { "Step " (step) " of pipeline " code { (pl) } " (its record is gone)." },
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
