//! The dead-letters page: filter by pool, kind, error class and time; replay or purge one; or
//! take "all matching": a dry-run count first, then a confirmation that names the count, then
//! the action (audited as the API's are, under the operator's name).

use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::bulk;
use super::session::Session;
use super::{html as page_response, operator_acting, pages, query_value, redirect, refusal, session_of, to_login};
use crate::admin::{Filter, dead_page};
use crate::state::AppState;
use gantry_queue::{DeadAction, DeadLetter, JobId};

/// Rows a page shows.
const PAGE: usize = 50;

/// The filter as the page's form and links carry it.
#[derive(Clone, Debug, Default, Deserialize)]
pub(super) struct FilterForm {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    class: String,
    #[serde(default)]
    tenant: String,
    /// Dead within the last this-many hours (empty: any time).
    #[serde(default)]
    hours: String,
    #[serde(default)]
    offset: usize,
    /// What the last action did (`replay`, `purge`) and to how many (`n`).
    #[serde(default)]
    done: String,
    #[serde(default)]
    n: u64,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl FilterForm {
    fn filter(&self) -> Result<Filter, &'static str> {
        let since_ms = match some(&self.hours) {
            None => None,
            Some(h) => {
                let h: u64 = h.parse().map_err(|_| "hours: a whole number")?;
                Some(gantry_core::time::now_ms().saturating_sub(h.saturating_mul(3_600_000)))
            }
        };
        Ok(Filter {
            pool: some(&self.pool),
            kind: some(&self.kind),
            class: some(&self.class),
            tenant: some(&self.tenant),
            since_ms,
            until_ms: None,
        })
    }

    /// The queues and filter it selects.
    fn resolved(&self, state: &AppState) -> Result<(Vec<gantry_queue::QueueName>, gantry_queue::DeadFilter), String> {
        self.filter()
            .map_err(str::to_owned)
            .and_then(|x| x.resolve(state).map_err(|e| e.to_string()))
    }

    /// The filter as a query string (for links that keep it).
    fn query(&self) -> String {
        format!(
            "pool={}&kind={}&class={}&tenant={}&hours={}",
            query_value(&self.pool),
            query_value(&self.kind),
            query_value(&self.class),
            query_value(&self.tenant),
            query_value(&self.hours)
        )
    }
}

fn action_of(s: &str) -> Option<DeadAction> {
    match s {
        "replay" => Some(DeadAction::Replay),
        "purge" => Some(DeadAction::Purge),
        _ => None,
    }
}

/// `GET /console/dead-letters`.
pub(super) async fn list(State(state): State<AppState>, headers: HeaderMap, Query(f): Query<FilterForm>) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    let refused = |status: StatusCode, why: &str| refusal(&s, status, why);
    let filter = match f.filter() {
        Ok(filter) => filter,
        Err(why) => return refused(StatusCode::BAD_REQUEST, why),
    };
    let (queues, dead_filter) = match filter.resolve(&state) {
        Ok(r) => r,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let rows = match dead_page(&state, &queues, &dead_filter, f.offset.min(1_000_000), PAGE + 1).await {
        Ok(r) => r,
        Err(e) => return refused(e.status(), &e.to_string()),
    };
    // A class or tenant filter is counted by reading records: the page counts among the first
    // few thousand only (the confirmation of an action on all matching counts them all).
    let total = state
        .dead_letters
        .count_within(&queues, &dead_filter, COUNT_BUDGET)
        .await
        .unwrap_or((0, true));
    page_response(StatusCode::OK, view(&state, &s, &f, &rows, total))
}

/// Records the list page reads at most to count a class or tenant filter's matches.
const COUNT_BUDGET: usize = 2_000;

fn view(state: &AppState, s: &Session, f: &FilterForm, rows: &[(String, DeadLetter)], total: (u64, bool)) -> Markup {
    let (total, complete) = total;
    let more = rows.len() > PAGE;
    let pools: Vec<&String> = state.cfg.pools.keys().collect();
    let tenants: Vec<&String> = state.cfg.tenants.keys().collect();
    let notice = match f.done.as_str() {
        "replay" => Some(format!("Replayed {}.", f.n)),
        "purge" => Some(format!("Purged {}.", f.n)),
        _ => None,
    };
    pages::page(
        "Dead letters",
        Some(s),
        html! {
            h1 { "Dead letters" }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            form.filters method="get" action="/console/dead-letters" {
                label for="f-pool" { "Pool" }
                select #f-pool name="pool" {
                    option value="" selected[f.pool.is_empty()] { "any" }
                    @for p in &pools { option value=(p) selected[f.pool == **p] { (p) } }
                }
                label for="f-kind" { "Kind" }
                select #f-kind name="kind" {
                    option value="" selected[f.kind.is_empty()] { "any" }
                    @for k in ["generate", "upscale", "transcode", "csam_hash", "noop"] {
                        option value=(k) selected[f.kind == k] { (k) }
                    }
                }
                label for="f-class" { "Error class" }
                select #f-class name="class" {
                    option value="" selected[f.class.is_empty()] { "any" }
                    @for c in ["retryable", "permanent", "cancelled", "timed_out"] {
                        option value=(c) selected[f.class == c] { (c) }
                    }
                }
                label for="f-tenant" { "Tenant" }
                select #f-tenant name="tenant" {
                    option value="" selected[f.tenant.is_empty()] { "any" }
                    @for t in &tenants { option value=(t) selected[f.tenant == **t] { (t) } }
                }
                label for="f-hours" { "Dead within (hours)" }
                input #f-hours type="number" min="1" name="hours" value=(f.hours);
                button type="submit" { "Filter" }
            }
            p #dead-total {
                @if complete { strong { (total) } " dead letters match." }
                @else {
                    "At least " strong { (total) } " dead letters match (counted among the first "
                    (COUNT_BUDGET) "; the confirmation of an action on all matching counts them all)."
                }
            }
            @if s.may_act() && total > 0 {
                form.inline method="post" action="/console/dead-letters/preview" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    (hidden_filter(f))
                    button type="submit" name="action" value="replay" { "Replay all matching…" }
                    button type="submit" name="action" value="purge" { "Purge all matching…" }
                }
            }
            @if s.may_act() && !rows.is_empty() {
                // The rows' checkboxes belong to this form (by its id), so each row keeps its own
                // one-job forms.
                form #dl-selected.inline method="post" action="/console/dead-letters/preview" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="scope" value="selected";
                    button type="submit" name="action" value="replay" { "Replay selected…" }
                    button type="submit" name="action" value="purge" { "Purge selected…" }
                }
            }
            table {
                caption { "Dead letters, oldest first" }
                thead { tr {
                    @if s.may_act() { th scope="col" { "Select" } }
                    th scope="col" { "Job" } th scope="col" { "Tenant" } th scope="col" { "Pool" } th scope="col" { "Kind" }
                    th scope="col" { "Dead at (UTC)" } th scope="col" { "Class" } th scope="col" { "Attempts" }
                    th scope="col" { "Last error" }
                    @if s.may_act() { th scope="col" { "Act" } }
                } }
                tbody {
                    @for (pool, d) in rows.iter().take(PAGE) {
                        tr data-job=(d.id) {
                            @if s.may_act() {
                                td { input type="checkbox" name="ids" value=(d.id) form="dl-selected" aria-label=(format!("select {}", d.id)); }
                            }
                            td { a href=(format!("/console/jobs/{}", d.id)) { code { (d.id) } } }
                            td { (d.tenant) } td { (pool) } td { (d.kind) }
                            td { (gantry_core::time::rfc3339_ms(d.dead_at_ms)) }
                            td { (d.class) } td { (d.attempts) } td { (d.message) }
                            @if s.may_act() {
                                td {
                                    @for verb in ["replay", "purge"] {
                                        form.inline method="post" action=(format!("/console/dead-letters/{}/{verb}", d.id)) {
                                            input type="hidden" name="csrf" value=(s.csrf);
                                            button type="submit" aria-label=(format!("{verb} {}", d.id)) { (verb) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if f.offset > 0 || more {
                nav aria-label="Pages" {
                    @if f.offset > 0 {
                        a href=(format!("/console/dead-letters?{}&offset={}", f.query(), f.offset.saturating_sub(PAGE))) { "← newer page" }
                        " "
                    }
                    @if more {
                        a href=(format!("/console/dead-letters?{}&offset={}", f.query(), f.offset + PAGE)) { "next page →" }
                    }
                }
            }
        },
    )
}

fn hidden_filter(f: &FilterForm) -> Markup {
    html! {
        input type="hidden" name="pool" value=(f.pool);
        input type="hidden" name="kind" value=(f.kind);
        input type="hidden" name="class" value=(f.class);
        input type="hidden" name="tenant" value=(f.tenant);
        input type="hidden" name="hours" value=(f.hours);
    }
}

#[derive(Deserialize)]
pub(super) struct OneForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/dead-letters/{id}/{replay|purge}`.
pub(super) async fn act_on_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
    Form(f): Form<OneForm>,
) -> Response {
    let s = match operator_acting(&state, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let refused = |status: StatusCode, why: &str| refusal(&s, status, why);
    let (Some(action), Ok(id)) = (action_of(&verb), id.parse::<JobId>()) else {
        return refused(StatusCode::NOT_FOUND, "no such dead letter or action");
    };
    match state.dead_letters.act_on_one(&s.caller.actor(), id, action).await {
        Ok(()) => redirect(&format!("/console/dead-letters?done={verb}&n=1")),
        Err(e) => refused(StatusCode::CONFLICT, &e.to_string()),
    }
}

/// The bulk forms' fields (several `ids` when rows are selected, so it is read by hand).
#[derive(Debug, Default)]
pub(super) struct BulkForm {
    csrf: String,
    action: String,
    /// `selected` (the rows ticked, `ids`) or all matching (the filter).
    scope: String,
    ids: Vec<String>,
    filter: FilterForm,
    /// The count the confirmation showed (the act step only).
    expected: Option<u64>,
}

/// Most rows one selection takes (a page's).
const MAX_SELECTED: usize = PAGE;

impl BulkForm {
    pub(super) fn parse(body: &[u8]) -> Self {
        let mut f = Self::default();
        for (k, v) in form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "csrf" => f.csrf = v,
                "action" => f.action = v,
                "scope" => f.scope = v,
                "ids" if f.ids.len() <= MAX_SELECTED => f.ids.push(v),
                "expected" => f.expected = v.parse().ok(),
                "pool" => f.filter.pool = v,
                "kind" => f.filter.kind = v,
                "class" => f.filter.class = v,
                "tenant" => f.filter.tenant = v,
                "hours" => f.filter.hours = v,
                _ => {}
            }
        }
        f
    }

    fn selected(&self) -> bool {
        self.scope == "selected"
    }

    /// The selected ids, each a job id (at most a page of them).
    fn ids(&self) -> Result<Vec<JobId>, &'static str> {
        if self.ids.is_empty() {
            return Err("tick the dead letters to act on");
        }
        if self.ids.len() > MAX_SELECTED {
            return Err("at most a page of dead letters at once; use all matching for more");
        }
        self.ids.iter().map(|i| i.parse().map_err(|_| "not a job id")).collect()
    }
}

/// `POST /console/dead-letters/preview`: how many an action on the selected rows or on "all
/// matching" would take, and a form to confirm it.
pub(super) async fn preview(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let f = BulkForm::parse(&body);
    let s = match operator_acting(&state, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let refused = |status: StatusCode, why: &str| refusal(&s, status, why);
    let Some(action) = action_of(&f.action) else {
        return refused(StatusCode::NOT_FOUND, "no such action");
    };
    let n = if f.selected() {
        match f.ids() {
            Ok(ids) => ids.len() as u64,
            Err(why) => return refused(StatusCode::BAD_REQUEST, why),
        }
    } else {
        let (queues, filter) = match f.filter.resolved(&state) {
            Ok(r) => r,
            Err(why) => return refused(StatusCode::BAD_REQUEST, &why),
        };
        if filter.class.is_some() || filter.tenant.is_some() {
            // Counted record by record: in the background, with its progress shown.
            return match bulk::start_count(&state, action, queues, filter, f.filter.query()).await {
                Ok(id) => redirect(&format!("/console/dead-letters/bulk/{id}")),
                Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            };
        }
        match state.dead_letters.count(&queues, &filter).await {
            Ok(n) => n,
            Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        }
    };
    page_response(StatusCode::OK, confirm_view(&s, action, n, &f))
}

/// The confirmation of `action` on `n` dead letters: the selection `f` names, or all that its
/// filter matches.
pub(super) fn confirm_view(s: &Session, action: DeadAction, n: u64, f: &BulkForm) -> Markup {
    let verb = action.as_str();
    pages::page(
        "Confirm",
        Some(s),
        html! {
            h1 { "Confirm: " (verb) " " (n) " dead letters" }
            p #would {
                "This would " (verb) " "
                @if f.selected() { "the " (n) " selected" }
                @else {
                    strong { (n) } " dead letters (pool " (or_any(&f.filter.pool))
                    ", kind " (or_any(&f.filter.kind)) ", class " (or_any(&f.filter.class))
                    ", tenant " (or_any(&f.filter.tenant)) ")"
                }
                "."
            }
            @if s.may_act() {
                form method="post" action="/console/dead-letters/act" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="action" value=(verb);
                    input type="hidden" name="expected" value=(n);
                    input type="hidden" name="scope" value=(f.scope);
                    @for id in &f.ids { input type="hidden" name="ids" value=(id); }
                    (hidden_filter(&f.filter))
                    button type="submit" { (verb) " " (n) }
                }
            }
            p { a href=(format!("/console/dead-letters?{}", f.filter.query())) { "Cancel" } }
        },
    )
}

/// `POST /console/dead-letters/act`: the confirmed action, run in the background; the browser
/// goes to its progress page.
pub(super) async fn act(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let f = BulkForm::parse(&body);
    let s = match operator_acting(&state, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let refused = |status: StatusCode, why: &str| refusal(&s, status, why);
    let (Some(action), Some(expected)) = (action_of(&f.action), f.expected) else {
        return refused(StatusCode::BAD_REQUEST, "confirm the count first");
    };
    let work = if f.selected() {
        match f.ids() {
            Ok(ids) => bulk::Work::Selected(ids),
            Err(why) => return refused(StatusCode::BAD_REQUEST, why),
        }
    } else {
        match f.filter.resolved(&state) {
            Ok((queues, filter)) => bulk::Work::Matching {
                queues,
                filter,
                pool: some(&f.filter.pool),
                kind: some(&f.filter.kind),
            },
            Err(why) => return refused(StatusCode::BAD_REQUEST, &why),
        }
    };
    match bulk::start(&state, &s.caller.actor(), action, expected, work, f.filter.query()).await {
        Ok(id) => redirect(&format!("/console/dead-letters/bulk/{id}")),
        Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn or_any(s: &str) -> &str {
    if s.trim().is_empty() { "any" } else { s }
}
