//! The console's pages, rendered on the server (maud escapes every value). Each works as plain
//! HTML forms and links; the stylesheet is embedded in the binary.

use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use gantry_queue::QueueStats;

/// The stylesheet (`/console/assets/console.css`).
pub const CSS: &str = include_str!("console.css");

/// A page: the layout around `body`; `session` adds the navigation and the sign-out form.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Gantry console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/console" { "Gantry" }
                    @if let Some(s) = session {
                        nav aria-label="Console" {
                            a href="/console" { "Overview" }
                            a href="/console/jobs" { "Jobs" }
                            a href="/console/dead-letters" { "Dead letters" }
                            a href="/console/workers" { "Workers" }
                            a href="/console/safety" { "Safety" }
                            a href="/console/tenants" { "Tenants" }
                            a href="/console/audit" { "Audit log" }
                        }
                        span.who {
                            (s.caller.actor())
                            @if !s.may_act() { " (read-only)" }
                        }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in page; `error` says why the last try failed; `sso` offers the OpenID Connect
/// provider.
pub fn login(error: Option<&str>, sso: bool) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            p { "Sign in with an operator API key (scope " code { "admin" } ", or " code { "admin:read" } " to look without acting)." }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form method="post" action="/console/login" {
                label for="key" { "Operator API key" }
                input #key type="password" name="key" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
            @if sso {
                p { a.button href="/console/oidc/start" { "Sign in with single sign-on" } }
            }
        },
    )
}

/// One pool's row data.
#[derive(Debug)]
pub struct PoolRow {
    /// Its name.
    pub pool: String,
    /// Its queues, one per kind.
    pub queues: Vec<QueueStats>,
    /// Live workers.
    pub live_workers: u32,
    /// What autoscaling asks for.
    pub desired_workers: u32,
    /// Its finished jobs over the last hour.
    pub last_hour: crate::console_feed::LastHour,
}

fn age(ms: Option<u64>) -> String {
    match ms {
        None => "—".to_owned(),
        Some(ms) if ms < 1_000 => format!("{ms} ms"),
        Some(ms) if ms < 120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{:.1} min", ms as f64 / 60_000.0),
    }
}

/// The overview: every pool's queues, with pause and resume for those who may act.
/// `rendered_ms`: when reading its numbers began (live snapshots older than that are ignored).
pub fn overview(session: &Session, pools: &[PoolRow], notice: Option<&str>, rendered_ms: u64) -> Markup {
    page(
        "Overview",
        Some(session),
        html! {
            h1 { "Overview" }
            @if let Some(n) = notice {
                p.notice role="status" { (n) }
            }
            p #live-stamp.muted aria-live="polite" data-rendered-ms=(rendered_ms) { "Numbers as of loading the page." }
            @for p in pools {
                section data-live-overview aria-labelledby=(format!("pool-{}", p.pool)) {
                    h2 id=(format!("pool-{}", p.pool)) { "Pool " (p.pool) }
                    p { "Workers: " span data-pool-workers=(p.pool) { (p.live_workers) " live, " (p.desired_workers) " desired" } }
                    p { "Last hour: " span data-pool-hour=(p.pool) { (p.last_hour.describe()) } }
                    table {
                        caption { "Queues of pool " (p.pool) }
                        thead {
                            tr {
                                th scope="col" { "Kind" }
                                th scope="col" { "High" }
                                th scope="col" { "Normal" }
                                th scope="col" { "Bulk" }
                                th scope="col" { "Running" }
                                th scope="col" { "Delayed" }
                                th scope="col" { "Dead" }
                                th scope="col" { "Oldest waiting" }
                                th scope="col" { "State" }
                            }
                        }
                        tbody {
                            @for q in &p.queues {
                                tr data-queue=(format!("{}/{}", q.pool, q.kind)) {
                                    th scope="row" { (q.kind) }
                                    td data-field="high" { (q.waiting[0]) }
                                    td data-field="normal" { (q.waiting[1]) }
                                    td data-field="bulk" { (q.waiting[2]) }
                                    td data-field="running" { (q.in_flight) }
                                    td data-field="delayed" { (q.delayed) }
                                    td data-field="dead" { (q.dead) }
                                    td data-field="oldest" { (age(q.oldest_waiting_ms)) }
                                    td {
                                        @if q.paused { span.paused data-field="state" { "paused" } } @else { span data-field="state" { "running" } }
                                        @if session.may_act() {
                                            (pause_form(session, q))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn pause_form(session: &Session, q: &QueueStats) -> Markup {
    let verb = if q.paused { "resume" } else { "pause" };
    let id = format!("reason-{}-{}", q.pool, q.kind);
    html! {
        form.inline method="post" action=(format!("/console/queues/{}/{}/{verb}", q.pool, q.kind)) {
            input type="hidden" name="csrf" value=(session.csrf);
            label for=(id) { "Reason" }
            input id=(id) type="text" name="reason" required maxlength="200";
            button type="submit" { (verb) " " (q.pool) "/" (q.kind) }
        }
    }
}

/// A bar chart of `bars` (label, value), oldest first, drawn as inline SVG (no script), with
/// its numbers in a table under it for screen readers and for copying.
pub fn bar_chart(caption: &str, bars: &[(String, i64)]) -> Markup {
    let max = bars.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let total: i64 = bars.iter().map(|(_, v)| *v).sum();
    let (w, h) = (10 * bars.len().max(1), 60);
    html! {
        figure.chart {
            figcaption { (caption) ": " (total) " in all, at most " (bars.iter().map(|(_, v)| *v).max().unwrap_or(0)) " in one" }
            svg role="img" aria-label=(format!("{caption}: {total} in all")) viewBox=(format!("0 0 {w} {h}"))
                preserveAspectRatio="none" width="100%" height="80" {
                @for (i, (label, v)) in bars.iter().enumerate() {
                    @let bh = ((*v).max(0) * (h as i64 - 2) / max) as usize;
                    rect x=(i * 10 + 1) y=(h - bh) width="8" height=(bh) fill="#0b4f9c" {
                        title { (label) ": " (v) }
                    }
                }
                line x1="0" y1=(h) x2=(w) y2=(h) stroke="#8a8a8a" stroke-width="1" {}
            }
            details {
                summary { "The numbers" }
                table {
                    thead { tr { th scope="col" { "From" } th scope="col" { "Credits" } } }
                    tbody { @for (label, v) in bars { tr { td { (label) } td { (v) } } } }
                }
            }
        }
    }
}

/// A refusal, as a page.
pub fn refused(session: Option<&Session>, status: u16, why: &str) -> Markup {
    page(
        "Refused",
        session,
        html! {
            h1 { "Refused" }
            p.error role="alert" { (status) ": " (why) }
            p { a href="/console" { "Back to the overview" } }
        },
    )
}
