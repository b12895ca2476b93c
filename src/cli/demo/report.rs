//! The demo's report: everything its summary says, as one serializable value. `gantry demo`
//! prints it as text; `gantry demo --json` prints it as JSON on stdout (the progress and the
//! text go to stderr), which is what the end-to-end test reads.

use std::collections::BTreeMap;

use gantry_client::{Client, JobView};
use gantry_queue::{JobId, Pool, QueueClient, QueueConfig};
use serde::Serialize;
use serde_json::Value;

use super::jobs::Submissions;
use crate::cli::time::fmt_ms;

/// What the demo did and found.
#[derive(Debug, Default, Serialize)]
pub(super) struct DemoReport {
    /// From the first submission to the last post-processing job's end.
    pub wall_ms: u64,
    /// Jobs admitted (idempotent repeats not counted twice).
    pub submitted: usize,
    /// Jobs per tenant, kind and final status.
    pub outcomes: Vec<Outcome>,
    /// Attempts over every job.
    pub attempts: u64,
    /// Jobs with a stored output.
    pub outputs_stored: u64,
    /// Generate jobs per provider/model as admission routed them.
    pub generate_routes: Vec<Route>,
    /// Submit to done, succeeded jobs.
    pub latency_ms: Latency,
    /// Jobs per second of wall clock.
    pub throughput_jobs_per_s: f64,
    /// A dead-lettered job and why (a refused generate job when there is one).
    pub dead_letter_example: Option<DeadLetterExample>,
    /// Admission's refusals, by tenant and problem code.
    pub refused: Vec<Refusal>,
    /// The worker SIGKILLed while it ran jobs.
    pub worker_killed: Option<KilledWorker>,
    /// Jobs submitted after the first wave, on its outputs.
    pub post_processing: PostProcessing,
    /// Submissions answered with the first job of their idempotency key.
    pub idempotent_duplicates: usize,
    /// What studio-42's webhook receiver got.
    pub webhooks: super::webhooks::WebhookSummary,
    /// Jobs whose lease expired with the killed worker and that ran again elsewhere.
    pub leases_recovered: u64,
    /// What the scans against the demo's hash list found.
    pub safety: Safety,
    /// Each tenant's ledger.
    pub credits: Vec<Ledger>,
    /// The export of one user's data, made before their erasure.
    pub export: ExportRun,
    /// The erasure one user asked for.
    pub erasure: Erasure,
    /// `gantry retention report`, one row per data class.
    pub retention: Vec<RetentionRow>,
    /// Where the metrics are served.
    pub metrics: Metrics,
    /// Outputs folder.
    pub outputs_dir: String,
    /// Logs folder.
    pub logs_dir: String,
}

/// Jobs of one tenant, kind and status.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    pub tenant: String,
    pub kind: String,
    pub status: String,
    pub jobs: u64,
}

/// Generate jobs routed to one provider/model.
#[derive(Debug, Serialize)]
pub(super) struct Route {
    /// `provider/model`.
    pub route: String,
    pub jobs: u64,
    /// Credits charged for them.
    pub credits: u64,
}

/// Percentiles of submit-to-done, milliseconds.
#[derive(Debug, Default, Serialize)]
pub(super) struct Latency {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

/// One dead letter.
#[derive(Debug, Serialize)]
pub(super) struct DeadLetterExample {
    pub id: String,
    /// `class: message`.
    pub error: String,
    pub attempts: u32,
}

/// Jobs admission refused with one problem code.
#[derive(Debug, Serialize)]
pub(super) struct Refusal {
    pub tenant: String,
    pub code: String,
    pub jobs: usize,
    /// One example's detail.
    pub detail: String,
}

/// The worker killed mid-run.
#[derive(Debug, Serialize)]
pub(super) struct KilledWorker {
    pub name: String,
    /// Jobs running in the fleet when it was killed.
    pub running_jobs: u64,
}

/// The chained jobs: generated images upscaled, generated videos transcoded, uploads and an
/// image checked against the hash list.
#[derive(Debug, Default, Serialize)]
pub(super) struct PostProcessing {
    pub upscaled: usize,
    pub transcoded: usize,
    /// The encoders the transcodes used, with why.
    pub encoders: Vec<String>,
    /// The extra renditions (WebM, poster, preview) by file name.
    pub extras: Vec<String>,
    pub csam_checks: usize,
    /// The first upscale's output, downloaded through the API.
    pub download: Option<Download>,
    /// The upscale jobs, followed over the event stream.
    pub followed_over_sse: Option<SseFollow>,
    /// Whole flows submitted as one pipeline each.
    pub pipelines: Vec<PipelineRun>,
    /// The near-match held for review, confirmed and reported.
    pub review: Option<ReviewCase>,
    /// The small upload upscaled 4x with no method named: which method ran, and why.
    pub super_resolution: Option<String>,
}

/// A job held for review and what the demo's reviewer did with it.
#[derive(Debug, Default, Serialize)]
pub(super) struct ReviewCase {
    pub job_id: String,
    pub list: String,
    /// PDQ distance of its closest match (inside the review band).
    pub distance: Value,
    /// `confirmed`.
    pub decision: String,
    /// The preserved evidence.
    pub evidence_id: Option<String>,
    /// `submitted` once the CyberTipline mock has it.
    pub report_status: String,
    /// The id the mock gave it.
    pub authority_report_id: Option<String>,
    /// Files uploaded with it.
    pub files_uploaded: usize,
    /// Attempts it took.
    pub attempts: u64,
    /// Reports of automatic blocks waiting for a reviewer's confirmation.
    pub awaiting_confirmation: usize,
}

/// One pipeline the demo ran.
#[derive(Debug, Default, Serialize)]
pub(super) struct PipelineRun {
    pub id: String,
    pub tenant: String,
    /// What it does.
    pub flow: String,
    pub status: String,
    /// `name=status` per step, parents first.
    pub steps: Vec<String>,
    /// From submit to done, followed over SSE.
    pub ms: u64,
    /// Its credits (re-read once settled, for the summary).
    pub credits: gantry_client::PipelineCredits,
    /// reserved = charged + refunded, once settled.
    pub credits_balanced: bool,
}

/// Jobs followed over `GET /v1/events` until each finished.
#[derive(Debug, Default, Serialize)]
pub(super) struct SseFollow {
    pub jobs: usize,
    /// Their events received.
    pub events: usize,
    /// Of the jobs, those whose final event arrived.
    pub finished: usize,
}

/// An output downloaded through `GET /v1/jobs/{id}/outputs/{name}`.
#[derive(Debug, Default, Serialize)]
pub(super) struct Download {
    pub path: String,
    pub bytes: usize,
    /// Whether its SHA-256 is the one the job's result records.
    pub sha256_matches: bool,
}

/// The scans' results.
#[derive(Debug, Default, Serialize)]
pub(super) struct Safety {
    pub hash_list: String,
    /// Released after a clean scan, per kind.
    pub clean: BTreeMap<String, u64>,
    /// Blocked and deleted, per kind.
    pub blocked: BTreeMap<String, u64>,
    /// The moderation records (never a prompt: its SHA-256).
    pub moderation_events: Vec<ModerationEvent>,
}

/// A moderation record as the operator API returns it.
#[derive(Debug, Serialize)]
pub(super) struct ModerationEvent {
    pub job_id: String,
    pub category: String,
    pub list: String,
    pub list_version: Value,
    pub match_kind: String,
    pub distance: Value,
    pub action: String,
    pub user: String,
    pub trust_score: f64,
    pub user_blocked: bool,
    pub prompt_sha256: Option<String>,
}

/// A tenant's credits before and after.
#[derive(Debug, Serialize)]
pub(super) struct Ledger {
    pub tenant: String,
    pub before: i64,
    pub reserved: i64,
    pub charged: i64,
    /// Jobs refunded.
    pub refunded: usize,
    pub after: i64,
    /// `before - charged`.
    pub expected: i64,
    /// `after == expected`: each job charged once.
    pub charged_once: bool,
}

/// One user's data, exported (`POST /v1/users/{user}/exports`), downloaded and checked.
#[derive(Debug, Default, Serialize)]
pub(super) struct ExportRun {
    pub tenant: String,
    pub user: String,
    pub id: String,
    pub status: String,
    /// The manifest's counts: jobs, pipelines, outputs, references, files.
    pub counts: std::collections::BTreeMap<String, u64>,
    pub size_bytes: u64,
    /// The downloaded archive's SHA-256 matched the one the API gave.
    pub verified: bool,
    /// Where the archive was saved.
    pub saved_to: String,
    /// The user's erasure deleted the archive too (its route answers `404` afterwards).
    pub deleted_by_erasure: bool,
}

/// The erasure receipt.
#[derive(Debug, Default, Serialize)]
pub(super) struct Erasure {
    pub tenant: String,
    pub user: String,
    pub job_records_deleted: u64,
    pub outputs_deleted: u64,
    pub jobs_cancelled: u64,
    pub complete: bool,
}

/// One data class of the retention report.
#[derive(Debug, Serialize)]
pub(super) struct RetentionRow {
    pub class: String,
    pub stored: u64,
    pub active: u64,
    pub kept: String,
}

/// Metrics endpoints.
#[derive(Debug, Default, Serialize)]
pub(super) struct Metrics {
    /// The demo's Prometheus, when it is installed.
    pub prometheus: Option<String>,
    /// The scheduler's `/metrics`.
    pub scheduler: String,
    /// Each live worker's `/metrics`.
    pub workers: Vec<(String, String)>,
    /// The OTLP collector every process sent its traces to, when one was given.
    pub traces: Option<String>,
    /// How they went (`http/protobuf` or `grpc`).
    pub traces_protocol: &'static str,
    /// The operator console.
    pub console: String,
    /// A one-time sign-in link to it for the demo operator (15 minutes, one use).
    pub console_sign_in: String,
}

/// Jobs per kind and outcome, attempts, latency and routes, from the API's view of each job.
pub(super) fn tally(report: &mut DemoReport, tenants: [(&str, &[JobView]); 2]) {
    let mut outcomes: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut routes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut dead_example: Option<&JobView> = None;
    for (tenant, v) in tenants {
        for j in v {
            *outcomes.entry((tenant, &j.kind, &j.status)).or_default() += 1;
            report.attempts += u64::from(j.attempts);
            if j.status == "succeeded"
                && let Some(fin) = j.finished_at_ms
            {
                latencies.push(fin.saturating_sub(j.enqueued_at_ms));
            }
            report.outputs_stored += u64::from(j.result.is_some());
            // Show a refused generate job if there is one: it says what the provider said.
            if j.status == "dead" && (dead_example.is_none() || j.kind == "generate") {
                dead_example = Some(j);
            }
            if j.kind == "generate" {
                let e = routes
                    .entry(format!(
                        "{}/{}",
                        j.provider.as_deref().unwrap_or("?"),
                        j.model.as_deref().unwrap_or("?")
                    ))
                    .or_default();
                e.0 += 1;
                e.1 += j.credits.as_ref().map_or(0, |c| c.charged.max(0) as u64);
            }
        }
    }
    report.outcomes = outcomes
        .into_iter()
        .map(|((tenant, kind, status), jobs)| Outcome {
            tenant: tenant.into(),
            kind: kind.into(),
            status: status.into(),
            jobs,
        })
        .collect();
    report.generate_routes = routes
        .into_iter()
        .map(|(route, (jobs, credits))| Route { route, jobs, credits })
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };
    report.latency_ms = Latency {
        p50: pct(0.50),
        p95: pct(0.95),
        p99: pct(0.99),
        max: latencies.last().copied().unwrap_or(0),
    };
    report.throughput_jobs_per_s = report.submitted as f64 / (report.wall_ms.max(1) as f64 / 1000.0);
    report.dead_letter_example = dead_example.map(|d| DeadLetterExample {
        id: d.id.clone(),
        error: d
            .error
            .as_ref()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["class"].as_str().unwrap_or("?"),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default(),
        attempts: d.attempts,
    });
}

/// The refusals admission answered, by tenant.
pub(super) fn refusals(tenants: [(&str, &Submissions); 2]) -> Vec<Refusal> {
    tenants
        .iter()
        .flat_map(|(tenant, s)| {
            s.refused.iter().map(|(code, (n, detail))| Refusal {
                tenant: (*tenant).into(),
                code: code.clone(),
                jobs: *n,
                detail: detail.clone(),
            })
        })
        .collect()
}

/// What the hash-list scans found: outputs released after a clean scan, jobs blocked, and the
/// moderation events (category, action, the prompt's SHA-256 — never the prompt).
pub(super) async fn safety(ops: &Client, hash_list: &str, v: &[&JobView]) -> anyhow::Result<Safety> {
    let mut s = Safety {
        hash_list: hash_list.into(),
        ..Default::default()
    };
    for j in v {
        let details = j.result.as_ref().map(|r| &r["details"]);
        let verdict = details.and_then(|d| d["scan"].as_str().or(d["verdict"].as_str()));
        if verdict == Some("clean") {
            *s.clean.entry(j.kind.clone()).or_default() += 1;
        } else if j.status == "blocked" {
            *s.blocked.entry(j.kind.clone()).or_default() += 1;
        }
    }
    let text = |e: &Value, k: &str| e[k].as_str().unwrap_or("?").to_owned();
    s.moderation_events = ops
        .moderation_events(10)
        .await?
        .iter()
        .map(|e| ModerationEvent {
            job_id: text(e, "job_id"),
            category: text(e, "category"),
            list: text(e, "list"),
            list_version: e["list_version"].clone(),
            match_kind: text(e, "match_kind"),
            distance: e["distance"].clone(),
            action: text(e, "action"),
            user: text(e, "user"),
            trust_score: e["trust_score"].as_f64().unwrap_or(0.0),
            user_blocked: e["user_blocked"] == true,
            prompt_sha256: e["prompt_sha256"].as_str().map(str::to_owned),
        })
        .collect();
    Ok(s)
}

/// How many jobs a SIGKILLed worker's lease expiry handed to another worker (the job history
/// is the queue's; the API does not show it).
pub(super) async fn recovered_leases(
    url: &str,
    keys: &gantry_queue::seal::Keyring,
    v: &[&JobView],
) -> anyhow::Result<u64> {
    let q = QueueClient::connect(url, QueueConfig::default())
        .await?
        .with_keys(keys.clone());
    let mut recovered = 0;
    for j in v {
        let (Ok(id), Ok(pool)) = (j.id.parse::<JobId>(), Pool::new(&j.pool)) else {
            continue;
        };
        if let Ok(r) = q.job_in(&pool, id).await
            && r.history.iter().any(|h| h.event == "lease_expired")
        {
            recovered += 1;
        }
    }
    Ok(recovered)
}

/// `gantry retention report`'s rows.
pub(super) async fn retention(url: &str, outputs: &std::path::Path) -> anyhow::Result<Vec<RetentionRow>> {
    let policy = gantry_queue::RetentionPolicy::from_env()?;
    let q = QueueClient::connect(url, policy.apply(QueueConfig::default())).await?;
    let store = gantry_worker::outputs::OutputStore::open(&outputs.to_string_lossy())?;
    Ok(gantry_scheduler::retention::report(&policy, &q, Some(&store))
        .await?
        .into_iter()
        .map(|c| RetentionRow {
            class: c.class.to_string(),
            stored: c.stored,
            active: c.active,
            kept: c.kept.to_string(),
        })
        .collect())
}

/// The erasure receipt of `DELETE /v1/users/{user}/data`.
pub(super) fn erasure(tenant: &str, user: &str, receipt: &Value) -> Erasure {
    let n = |k: &str| receipt["jobs"][k].as_u64().unwrap_or(0);
    Erasure {
        tenant: tenant.into(),
        user: user.into(),
        job_records_deleted: n("deleted"),
        outputs_deleted: receipt["outputs_deleted"].as_u64().unwrap_or(0),
        jobs_cancelled: n("cancelled"),
        complete: receipt["complete"] == true,
    }
}

/// The summary, as text (on stdout, or stderr under `--json`).
pub(super) fn print(r: &DemoReport) {
    say!("\nSummary ({} wall clock)", fmt_ms(r.wall_ms));
    say!("  {:<10} {:<10} {:<11} {:>6}", "tenant", "kind", "outcome", "jobs");
    for o in &r.outcomes {
        say!("  {:<10} {:<10} {:<11} {:>6}", o.tenant, o.kind, o.status, o.jobs);
    }
    say!(
        "  attempts: {} for {} jobs; outputs stored: {}",
        r.attempts,
        r.submitted,
        r.outputs_stored
    );
    if !r.generate_routes.is_empty() {
        let list: Vec<String> = r
            .generate_routes
            .iter()
            .map(|g| format!("{} x{} ({} credits)", g.route, g.jobs, g.credits))
            .collect();
        say!("  generate, by provider/model as routed: {}", list.join(", "));
    }
    let l = &r.latency_ms;
    say!(
        "  latency submit->done (succeeded): p50 {}  p95 {}  p99 {}  max {}",
        fmt_ms(l.p50),
        fmt_ms(l.p95),
        fmt_ms(l.p99),
        fmt_ms(l.max)
    );
    say!("  throughput: {:.0} jobs/s", r.throughput_jobs_per_s);
    if let Some(sr) = &r.post_processing.super_resolution {
        say!("  upscale 4x of a small upload: {sr}");
    }
    for p in &r.post_processing.pipelines {
        say!(
            "  pipeline {} ({}, {}): {} [{}] in {}; credits {} reserved = {} charged + {} refunded{}",
            p.id,
            p.tenant,
            p.flow,
            p.status,
            p.steps.join(" "),
            fmt_ms(p.ms),
            p.credits.reserved,
            p.credits.charged,
            p.credits.refunded,
            if p.credits_balanced { "" } else { " (NOT BALANCED)" }
        );
    }
    if let Some(d) = &r.dead_letter_example {
        say!(
            "  dead letter example: {} ({}, {} attempt(s)); replay: POST /v1/admin/dead-letters:replay {{\"id\": \"{}\"}} or `gantry dlq replay {}`",
            d.id,
            d.error,
            d.attempts,
            d.id,
            d.id
        );
    }
    say!(
        "  idempotent repeats returned the first job's id: {}",
        r.idempotent_duplicates
    );
    say!(
        "  leases recovered after the SIGKILL: {} (their jobs ran again elsewhere)",
        r.leases_recovered
    );

    let w = &r.webhooks;
    let types: Vec<String> = w.by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
    say!(
        "  webhooks: {} deliveries to studio-42's receiver ({}), {} with a verified signature; {}; final events for {} jobs",
        w.received,
        w.url,
        w.verified,
        if types.is_empty() {
            "none".to_owned()
        } else {
            types.join(", ")
        },
        w.jobs_finished
    );

    let s = &r.safety;
    let show = |m: &BTreeMap<String, u64>| {
        let v: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
        if v.is_empty() { "none".to_owned() } else { v.join(", ") }
    };
    say!("\nTrust and safety (hash list {})", s.hash_list);
    say!("  scanned clean and released: {}", show(&s.clean));
    say!("  blocked, deleted at once:   {}", show(&s.blocked));
    if let Some(c) = &r.post_processing.review {
        say!(
            "  held for review: job {} (within {} bits of list {}, inside its review band): nothing released until a reviewer decided",
            c.job_id,
            c.distance,
            c.list
        );
        say!(
            "  reviewer: {}; taken down, preserved sealed in the quarantine (evidence {}), report {} after {} attempt(s): CyberTipline report {} with {} file(s)",
            c.decision,
            c.evidence_id.as_deref().unwrap_or("none"),
            c.report_status,
            c.attempts,
            c.authority_report_id.as_deref().unwrap_or("-"),
            c.files_uploaded
        );
        say!(
            "  reports of automatic blocks awaiting a reviewer's confirmation: {} (POST /v1/admin/reports/{{id}}/submit)",
            c.awaiting_confirmation
        );
    }
    for e in &s.moderation_events {
        say!(
            "  moderation event: job {} category {} list {} v{} by {} (distance {}) -> {}; user {} trust {:.2}{}; prompt sha256 {}",
            e.job_id,
            e.category,
            e.list,
            e.list_version,
            e.match_kind,
            e.distance,
            e.action,
            e.user,
            e.trust_score,
            if e.user_blocked { " (blocked)" } else { "" },
            e.prompt_sha256
                .as_deref()
                .map_or("-".to_owned(), |s| format!("{}…", &s[..s.len().min(12)])),
        );
    }

    say!("\nCredits (reserved at admission, settled from the usage workers report)");
    say!(
        "  {:<10} {:>10} {:>9} {:>8} {:>9} {:>10} {:>10}  ledger",
        "tenant",
        "before",
        "reserved",
        "charged",
        "refunded",
        "after",
        "expected"
    );
    for c in &r.credits {
        say!(
            "  {:<10} {:>10} {:>9} {:>8} {:>9} {:>10} {:>10}  {}",
            c.tenant,
            c.before,
            c.reserved,
            c.charged,
            c.refunded,
            c.after,
            c.expected,
            if c.charged_once {
                "ok: each job charged once"
            } else {
                "MISMATCH"
            }
        );
    }

    let x = &r.export;
    let n = |k: &str| x.counts.get(k).copied().unwrap_or(0);
    say!("\nPrivacy");
    say!(
        "  exported {} of {} (POST /v1/users/{}/exports): {}; {} jobs, {} pipelines, {} outputs, {} references, {} files ({} bytes, SHA-256 {}); saved to {}; audited as users.export and users.export.download",
        x.user,
        x.tenant,
        x.user,
        x.status,
        n("jobs"),
        n("pipelines"),
        n("outputs"),
        n("references"),
        n("files"),
        x.size_bytes,
        if x.verified { "verified" } else { "MISMATCH" },
        x.saved_to
    );
    let e = &r.erasure;
    say!(
        "  erased {} of {} (DELETE /v1/users/{}/data): {} job records and {} outputs deleted, {} jobs cancelled; complete: {}; audited as users.erase",
        e.user,
        e.tenant,
        e.user,
        e.job_records_deleted,
        e.outputs_deleted,
        e.jobs_cancelled,
        e.complete
    );
    say!(
        "  the erasure deleted the export's archive too: {}",
        if r.export.deleted_by_erasure { "yes" } else { "NO" }
    );
    say!("  kept by retention: moderation records (no prompt text) and trust standing");
    say!("  retention (`gantry retention report`; GANTRY_RETENTION sets the days):");
    for c in &r.retention {
        say!(
            "    {:<18} {:>5} stored, {:>4} active  kept {}",
            c.class,
            c.stored,
            c.active,
            c.kept
        );
    }

    say!("\nWhere to look");
    say!("  operator console: {}", r.metrics.console);
    say!(
        "    one-time sign-in for the demo operator (15 minutes, one use, while the fleet runs): {}",
        r.metrics.console_sign_in
    );
    if let Some(p) = &r.metrics.prometheus {
        say!("  prometheus: {p}/graph (e.g. sum by (kind) (rate(gantry_jobs_succeeded_total[1m])));");
        say!("    Grafana dashboards to point at it: dashboards/*.json");
    }
    say!(
        "  scheduler metrics (autoscaling signals, credits): {} (a listener apart from the API)",
        r.metrics.scheduler
    );
    for (name, url) in &r.metrics.workers {
        say!("  {name} metrics: {url}");
    }
    match &r.metrics.traces {
        Some(ep) => say!(
            "  traces: sent over {} to {ep} (services gantry-scheduler, gantry-worker): one trace per request, from POST /v1/jobs and POST /v1/pipelines through admission and enqueue to each job's steps and ack on its worker, and its webhook deliveries",
            if r.metrics.traces_protocol == "grpc" {
                "OTLP/gRPC"
            } else {
                "OTLP/HTTP"
            }
        ),
        None => say!(
            "  traces: off (give --otlp-endpoint http://COLLECTOR:4318, or :4317 with --otlp-protocol grpc, to send them)"
        ),
    }
    say!("  outputs under {}; logs in {}", r.outputs_dir, r.logs_dir);
}
