//! The tenants pages: each tenant's plan, rate-limit state (jobs it could submit at once now)
//! and credits (balance, reserved by unsettled jobs, charged and refunded ever, charged by hour
//! over the last day and by day over the last month); a top-up (or a debit) with a required
//! reason, audited with the operator's identity.

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Session;
use super::{html as page_response, operator_acting, pages, redirect, refusal, session_of, to_login};
use crate::admission::credits::{ChargedSeries, TenantCredits};
use crate::admission::rate_limit::Allowance;
use crate::audit::audited;
use crate::state::AppState;

/// The most one top-up may add or take away.
const MAX_TOP_UP: i64 = 1_000_000_000;

/// One tenant's standing.
struct Standing {
    name: String,
    plan: String,
    operator: bool,
    balance: i64,
    credits: TenantCredits,
    rate: Allowance,
}

async fn standing(state: &AppState, name: &str) -> Result<Option<Standing>, gantry_queue::QueueError> {
    let Some(t) = state.cfg.tenants.get(name) else {
        return Ok(None);
    };
    let Some(plan) = state.cfg.plans.get(&t.plan) else {
        return Ok(None);
    };
    let ledger = &state.admission.credits;
    Ok(Some(Standing {
        name: name.to_owned(),
        plan: t.plan.clone(),
        operator: t.operator,
        balance: ledger.balance(name).await?.unwrap_or(t.initial_credits),
        credits: ledger.totals(name).await?,
        rate: state.admission.limiter.allowance(name, plan).await?,
    }))
}

fn unavailable(s: &Session, e: &gantry_queue::QueueError) -> Response {
    tracing::warn!(error = %e, "reading tenants for the console failed");
    refusal(s, StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable; retry")
}

/// `GET /console/tenants`.
pub(super) async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    let mut rows = Vec::with_capacity(state.cfg.tenants.len());
    for name in state.cfg.tenants.keys() {
        match standing(&state, name).await {
            Ok(Some(st)) => rows.push(st),
            Ok(None) => {}
            Err(e) => return unavailable(&s, &e),
        }
    }
    page_response(StatusCode::OK, list_view(&s, &rows))
}

fn rate_text(r: &Allowance) -> String {
    format!(
        "{} of {} now, {} jobs/s sustained",
        r.available, r.burst, r.jobs_per_second
    )
}

fn list_view(s: &Session, rows: &[Standing]) -> Markup {
    pages::page(
        "Tenants",
        Some(s),
        html! {
            h1 { "Tenants" }
            table {
                caption { "Tenants, their plans and credits" }
                thead { tr {
                    th scope="col" { "Tenant" } th scope="col" { "Plan" } th scope="col" { "Rate limit" }
                    th scope="col" { "Balance" } th scope="col" { "Reserved" } th scope="col" { "Charged" }
                    th scope="col" { "Refunded" }
                } }
                tbody {
                    @for t in rows {
                        tr data-tenant=(t.name) {
                            th scope="row" {
                                a href=(format!("/console/tenants/{}", super::query_value(&t.name))) { (t.name) }
                                @if t.operator { " " span.muted { "(operators)" } }
                            }
                            td { (t.plan) }
                            td { (rate_text(&t.rate)) }
                            td data-field="balance" { (t.balance) }
                            td { (t.credits.reserved) }
                            td { (t.credits.charged) }
                            td { (t.credits.refunded) }
                        }
                    }
                }
            }
        },
    )
}

/// `GET /console/tenants/{tenant}`.
pub(super) async fn show(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    let st = match standing(&state, &name).await {
        Ok(Some(st)) => st,
        Ok(None) => return refusal(&s, StatusCode::NOT_FOUND, "no such tenant"),
        Err(e) => return unavailable(&s, &e),
    };
    let series = match state
        .admission
        .credits
        .charged_series(&name, gantry_core::time::now_ms())
        .await
    {
        Ok(series) => series,
        Err(e) => return unavailable(&s, &e),
    };
    page_response(StatusCode::OK, show_view(&s, &st, &series))
}

fn show_view(s: &Session, t: &Standing, series: &ChargedSeries) -> Markup {
    let hours: Vec<(String, i64)> = series
        .hourly
        .iter()
        .map(|(at, v)| (gantry_core::time::rfc3339_ms(*at)[11..16].to_owned(), *v))
        .collect();
    let days: Vec<(String, i64)> = series
        .daily
        .iter()
        .map(|(at, v)| (gantry_core::time::rfc3339_ms(*at)[..10].to_owned(), *v))
        .collect();
    pages::page(
        "Tenant",
        Some(s),
        html! {
            h1 { "Tenant " (t.name) }
            dl.facts {
                dt { "Plan" } dd { (t.plan) }
                dt { "Rate limit" } dd { (rate_text(&t.rate)) }
                dt { "Balance" } dd #balance { (t.balance) " credits" }
                dt { "Reserved" } dd { (t.credits.reserved) " credits, by jobs not yet settled" }
                dt { "Charged" } dd { (t.credits.charged) " credits" }
                dt { "Refunded" } dd { (t.credits.refunded) " credits" }
            }
            h2 { "Charged over time" }
            (pages::bar_chart("Credits charged by hour, last 24 hours (UTC)", &hours))
            (pages::bar_chart("Credits charged by day, last 30 days (UTC)", &days))
            @if s.may_act() {
                h2 { "Top up" }
                form method="post" action=(format!("/console/tenants/{}/top-up", super::query_value(&t.name))) {
                    input type="hidden" name="csrf" value=(s.csrf);
                    label for="amount" { "Credits (negative takes away)" }
                    input #amount type="number" name="amount" required step="1"
                        min=(-MAX_TOP_UP) max=(MAX_TOP_UP);
                    label for="top-up-reason" { "Reason" }
                    input #top-up-reason type="text" name="reason" required maxlength="200";
                    button type="submit" { "Top up " (t.name) }
                }
            }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct TopUpForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/tenants/{tenant}/top-up`.
pub(super) async fn top_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<TopUpForm>,
) -> Response {
    let s = match operator_acting(&state, &headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(t) = state.cfg.tenants.get(&name) else {
        return refusal(&s, StatusCode::NOT_FOUND, "no such tenant");
    };
    let amount = match f.amount.trim().parse::<i64>() {
        Ok(a) if a != 0 && (-MAX_TOP_UP..=MAX_TOP_UP).contains(&a) => a,
        _ => {
            return refusal(
                &s,
                StatusCode::BAD_REQUEST,
                "credits: a whole number, not zero, within ±1,000,000,000",
            );
        }
    };
    let Some(reason) = super::reason(&f.reason) else {
        return refusal(
            &s,
            StatusCode::BAD_REQUEST,
            "a reason of 1 to 200 characters is required",
        );
    };
    let balance = match state.admission.credits.grant(&name, t.initial_credits, amount).await {
        Ok(b) => b,
        Err(e) => return unavailable(&s, &e),
    };
    tracing::info!(tenant = %name, amount, balance, "credits topped up from the console");
    let details = serde_json::json!({"amount": amount, "balance": balance, "reason": reason});
    if let Err(e) = audited(
        &state,
        &s.caller,
        "console.credits.top_up",
        format!("tenant:{name}"),
        details,
    )
    .await
    {
        // As the API does: the change is made, and reported as failed. A top-up is not
        // idempotent, so the page says not to repeat it.
        tracing::warn!(error = %e, "auditing a console action failed");
        return refusal(
            &s,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "topped up (the balance is now {balance}), but writing the audit log failed ({e}); do not repeat it"
            ),
        );
    }
    redirect(&format!("/console/tenants/{}", super::query_value(&name)))
}
