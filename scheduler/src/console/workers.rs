//! The workers page: every live worker of every pool (or of one), with its GPUs (model, VRAM
//! total, reserved by Gantry's running jobs, used by anything else; NVENC, NVDEC, MIG), warm
//! models, jobs running, drain state and last heartbeat. A worker whose heartbeat is more than
//! two periods old is marked stale (its record expires after three).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::session::Session;
use super::{html as page_response, pages, refusal, session_of, to_login};
use gantry_queue::{FleetGpu, Pool, WorkerRecord};

#[derive(Debug, Default, Deserialize)]
pub(super) struct WorkersQuery {
    #[serde(default)]
    pool: String,
}

/// `GET /console/workers[?pool=]`.
pub(super) async fn list(
    State(state): State<crate::state::AppState>,
    headers: HeaderMap,
    Query(q): Query<WorkersQuery>,
) -> Response {
    let Some(s) = session_of(&state, &headers).await else {
        return to_login();
    };
    let chosen = q.pool.trim();
    if !chosen.is_empty() && !state.cfg.pools.contains_key(chosen) {
        return refusal(&s, StatusCode::NOT_FOUND, "no such pool");
    }
    let mut pools = Vec::new();
    for name in state.cfg.pools.keys() {
        if !chosen.is_empty() && name != chosen {
            continue;
        }
        let Ok(pool) = Pool::new(name) else { continue };
        match state.queue.workers(&pool).await {
            Ok(w) => pools.push((name.clone(), w)),
            Err(e) => {
                tracing::warn!(error = %e, "reading the fleet registry for the console failed");
                return refusal(&s, StatusCode::SERVICE_UNAVAILABLE, "the queue is unavailable; retry");
            }
        }
    }
    let names: Vec<&String> = state.cfg.pools.keys().collect();
    page_response(
        StatusCode::OK,
        view(&s, &names, chosen, &pools, gantry_core::time::now_ms()),
    )
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    let ms = now_ms.saturating_sub(then_ms);
    if ms < 120_000 {
        format!("{:.1} s ago", ms as f64 / 1000.0)
    } else {
        format!("{:.0} min ago", ms as f64 / 60_000.0)
    }
}

/// Whether the worker missed more than two heartbeats' worth of time.
pub(crate) fn stale(w: &WorkerRecord, now_ms: u64) -> bool {
    now_ms.saturating_sub(w.last_seen_ms) > w.heartbeat_ms.saturating_mul(2).max(1)
}

fn gpu_line(g: &FleetGpu) -> Markup {
    // What others use: NVML's used memory beyond Gantry's reservations (a reservation is a
    // ceiling, so this can only under-count others).
    let others = g.memory_used_bytes.saturating_sub(g.reserved_bytes);
    html! {
        li data-gpu=(g.uuid) {
            "GPU " (g.index) " " strong { (g.name) } ": "
            (gib(g.memory_total_bytes)) " total, "
            (gib(g.reserved_bytes)) " reserved by Gantry, "
            (gib(others)) " used by others; "
            "NVENC " (if g.nvenc { "yes" } else { "no" }) ", "
            "NVDEC " (if g.nvdec { "yes" } else { "no" })
            @if !g.mig.is_empty() {
                "; MIG: "
                @for (i, m) in g.mig.iter().enumerate() {
                    @if i > 0 { ", " }
                    "instance " (m.index) " (" (gib(m.memory_total_bytes)) ", " (gib(m.reserved_bytes)) " reserved)"
                }
            }
        }
    }
}

fn view(s: &Session, names: &[&String], chosen: &str, pools: &[(String, Vec<WorkerRecord>)], now: u64) -> Markup {
    pages::page(
        "Workers",
        Some(s),
        html! {
            h1 { "Workers" }
            form.filters method="get" action="/console/workers" {
                label for="w-pool" { "Pool" }
                select #w-pool name="pool" {
                    option value="" selected[chosen.is_empty()] { "every pool" }
                    @for n in names { option value=(n) selected[chosen == n.as_str()] { (n) } }
                }
                button type="submit" { "Show" }
            }
            @for (pool, workers) in pools {
                section aria-labelledby=(format!("workers-{pool}")) {
                    h2 id=(format!("workers-{pool}")) { "Pool " (pool) ": " (workers.len()) " live" }
                    @if workers.is_empty() {
                        p { "No live worker." }
                    } @else {
                        table {
                            caption { "Workers of pool " (pool) }
                            thead { tr {
                                th scope="col" { "Worker" } th scope="col" { "State" } th scope="col" { "Jobs" }
                                th scope="col" { "Kinds" } th scope="col" { "GPUs" } th scope="col" { "Warm models" }
                                th scope="col" { "Last heartbeat" }
                            } }
                            tbody {
                                @for w in workers {
                                    tr data-worker=(w.id) {
                                        th scope="row" { code { (w.id) } br; span.muted { (w.hostname) " · v" (w.version) } }
                                        td data-field="state" {
                                            @if stale(w, now) { span.paused { "stale" } }
                                            @else if w.draining { span.paused { "draining" } }
                                            @else { "live" }
                                        }
                                        td { (w.in_flight) " of " (w.concurrency) }
                                        td { @for (i, k) in w.kinds.iter().enumerate() { @if i > 0 { ", " } (k) } }
                                        td {
                                            @if w.gpus.is_empty() { "CPU only" } @else {
                                                ul.plain { @for g in &w.gpus { (gpu_line(g)) } }
                                            }
                                            span.muted { "(" (w.gpu_source) ")" }
                                        }
                                        td { @if w.warm_models.is_empty() { "—" } @else { (w.warm_models.join(", ")) } }
                                        td { (ago(now, w.last_seen_ms)) }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(last_seen_ms: u64, heartbeat_ms: u64) -> WorkerRecord {
        WorkerRecord {
            id: "w1".into(),
            pool: "gpu".into(),
            hostname: "h".into(),
            version: "0".into(),
            kinds: vec![],
            concurrency: 1,
            in_flight: 0,
            gpu_source: "fake".into(),
            gpus: vec![],
            warm_models: vec![],
            started_at_ms: 0,
            heartbeat_ms,
            draining: false,
            metrics_addr: None,
            last_seen_ms,
        }
    }

    #[test]
    fn a_worker_is_stale_past_two_heartbeats() {
        assert!(!stale(&worker(10_000, 1_000), 11_999));
        assert!(!stale(&worker(10_000, 1_000), 12_000));
        assert!(stale(&worker(10_000, 1_000), 12_001));
    }

    #[test]
    fn others_usage_is_what_nvml_sees_beyond_gantrys_reservations() {
        let g = FleetGpu {
            index: 0,
            uuid: "GPU-1".into(),
            name: "NVIDIA L4".into(),
            memory_total_bytes: 24 << 30,
            memory_free_bytes: 10 << 30,
            nvenc: true,
            memory_used_bytes: 14 << 30,
            reserved_bytes: 8 << 30,
            nvdec: true,
            mig: vec![],
        };
        let out = gpu_line(&g).into_string();
        assert!(
            out.contains("8.0 GiB reserved by Gantry, 6.0 GiB used by others"),
            "{out}"
        );
    }
}
