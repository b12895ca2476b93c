#!/usr/bin/env python3
"""Writes Gantry's Grafana dashboards (provisionable JSON) beside this file.

Every dashboard is templated by data source, namespace and pool. Metrics without a `pool`
label (GPU readings, provider calls) are joined to their worker's pool through
`gantry_worker_info`, which every worker exports with value 1. `tests/e2e/dashboards.rs` evaluates
every expression here against a real Prometheus scraping a local fleet.

    python3 dashboards/build.py             # rewrites dashboards/*.json
    python3 dashboards/build.py --out DIR   # writes them to DIR instead (the tests compare)
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
NS = 'namespace=~"$namespace"'
SEL = 'namespace=~"$namespace", pool=~"$pool"'
RI = "$__rate_interval"
CSAM = 'kind="csam_hash"'
BLOCKED = 'class="blocked"'
# Joins a per-worker metric without a pool label to its worker's pool (and filters by it).
POOL_JOIN = f'* on (namespace, instance) group_left (pool) gantry_worker_info{{{SEL}}}'


def rate(metric, sel=SEL, extra=""):
    inner = f"{sel}, {extra}" if extra else sel
    return f"rate({metric}{{{inner}}}[{RI}])"


def quantiles(bucket, by, sel=SEL, legend=""):
    return [
        (f"histogram_quantile({q}, sum by ({by}, le) (rate({bucket}{{{sel}}}[{RI}])))", f"p{int(q * 100)} {legend}")
        for q in (0.5, 0.95, 0.99)
    ]


class Board:
    def __init__(self, uid, title, description):
        self.uid, self.title, self.description = uid, title, description
        self.panels, self.x, self.y, self.row_h = [], 0, 0, 0

    def panel(self, title, targets, unit="short", kind="timeseries", width=12, height=8, description=""):
        if self.x + width > 24:
            self.x, self.y = 0, self.y + self.row_h
            self.row_h = 0
        pid = len(self.panels) + 1
        p = {
            "id": pid,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"x": self.x, "y": self.y, "w": width, "h": height},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}}
            if kind == "timeseries"
            else {"reduceOptions": {"calcs": ["lastNotNull"]}},
            "targets": [
                {
                    "refId": chr(ord("A") + i),
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "expr": expr,
                    "legendFormat": legend,
                }
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        self.panels.append(p)
        self.x += width
        self.row_h = max(self.row_h, height)

    def json(self):
        var = lambda name, label, query, multi: {  # noqa: E731
            "name": name,
            "label": label,
            "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name},
            "definition": query,
            "refresh": 2,
            "includeAll": True,
            "multi": multi,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "sort": 1,
        }
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["gantry"],
            "timezone": "utc",
            "editable": True,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {
                "list": [
                    {
                        "name": "datasource",
                        "label": "Data source",
                        "type": "datasource",
                        "query": "prometheus",
                        "current": {"text": "default", "value": "default"},
                    },
                    var("namespace", "Namespace", "label_values(gantry_worker_info, namespace)", False),
                    var("pool", "Pool", 'label_values(gantry_worker_info{namespace=~"$namespace"}, pool)', True),
                ]
            },
            "annotations": {"list": []},
            "panels": self.panels,
        }


def fleet():
    b = Board("gantry-fleet", "Gantry / Fleet overview", "Throughput, success, latency, queues and workers per pool.")
    b.panel("Throughput by kind", [(f"sum by (kind) ({rate('gantry_jobs_succeeded_total')})", "{{kind}}")], "ops")
    b.panel(
        "Success rate by kind",
        [
            (
                f"sum by (kind) ({rate('gantry_jobs_succeeded_total')}) / sum by (kind) ({rate('gantry_jobs_started_total')})",
                "{{kind}}",
            )
        ],
        "percentunit",
        description="Attempts that succeeded over attempts started.",
    )
    b.panel(
        "Failures by class",
        [(f"sum by (kind, class) ({rate('gantry_jobs_failed_total')})", "{{kind}} {{class}}")],
        "ops",
    )
    b.panel("Retries by kind", [(f"sum by (kind) ({rate('gantry_jobs_retried_total')})", "{{kind}}")], "ops")
    b.panel("Latency by kind", quantiles("gantry_job_duration_seconds_bucket", "kind", legend="{{kind}}"), "s", width=24)
    b.panel(
        "Where a job's time goes (p95 by step)",
        [
            (
                f"histogram_quantile(0.95, sum by (kind, step, le) ({rate('gantry_job_step_duration_seconds_bucket')}))",
                "{{kind}} {{step}}",
            )
        ],
        "s",
        width=24,
        description="Provider calls and downloads, store reads and writes, scans, resizes, ffmpeg: each step's p95 per kind.",
    )
    b.panel(
        "Queue depth (waiting)",
        [(f"sum by (pool) (gantry_pool_backlog_jobs{{{SEL}}} - gantry_pool_in_flight_jobs{{{SEL}}})", "{{pool}}")],
        width=8,
    )
    b.panel(
        "Oldest waiting job",
        [(f"max by (pool) (gantry_queue_oldest_job_age_seconds{{{SEL}}})", "{{pool}}")],
        "s",
        width=8,
    )
    b.panel("In flight", [(f"sum by (pool) (gantry_jobs_in_flight{{{SEL}}})", "{{pool}}")], width=8)
    b.panel("Dead letters", [(f"sum by (pool) (gantry_pool_dead_letters{{{SEL}}})", "{{pool}}")], width=8)
    b.panel("Delayed jobs", [(f"sum by (pool) (gantry_pool_delayed_jobs{{{SEL}}})", "{{pool}}")], width=8)
    b.panel(
        "Workers per pool",
        [
            (f"count by (pool) (gantry_worker_info{{{SEL}}})", "{{pool}} scraped"),
            (f"sum by (pool) (gantry_pool_live_workers{{{SEL}}})", "{{pool}} live"),
            (f"sum by (pool) (gantry_pool_desired_workers{{{SEL}}})", "{{pool}} desired"),
        ],
        width=8,
    )
    b.panel(
        "Webhook deliveries by outcome",
        [(f"sum by (outcome) ({rate('gantry_webhook_deliveries_total', NS)})", "{{outcome}}")],
        "ops",
        width=6,
        description="Attempts: delivered, failed (will retry), gave_up (retries over), skipped (endpoint gone or disabled).",
    )
    b.panel(
        "Webhook delivery latency",
        [
            (f"histogram_quantile({q}, sum by (le) ({rate('gantry_webhook_delivery_duration_seconds_bucket', NS)}))", f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        ],
        "s",
        width=6,
    )
    b.panel(
        "Webhook backlog",
        [
            (f"max(gantry_webhook_backlog_age_seconds{{{NS}}})", "oldest due, s past due"),
            (f"sum(gantry_webhook_backlog_deliveries{{{NS}}})", "due now"),
        ],
        width=6,
        description="What the GantryWebhookBacklog alert reads.",
    )
    b.panel("Event-stream (SSE) clients", [(f"sum(gantry_sse_clients{{{NS}}})", "connected")], width=6)
    b.panel(
        "Pipeline hand-offs (mover backlog)",
        [
            (f"max by (pool) (gantry_pipeline_handoffs_pending{{{SEL}}})", "{{pool}} pending"),
            (f"max by (pool) (gantry_pipeline_handoff_lag_seconds{{{SEL}}})", "{{pool}} oldest, s"),
        ],
        width=12,
        description="Pipeline steps released in another pool wait for the scheduler's mover: entries not applied yet, and how long the oldest has waited (the GantryPipelineHandoffLag alert).",
    )
    b.panel(
        "Claim round trip p99",
        [(f"histogram_quantile(0.99, sum by (pool, le) ({rate('gantry_claim_duration_seconds_bucket')}))", "{{pool}}")],
        "s",
        width=12,
    )
    return b


def gpus():
    b = Board("gantry-gpus", "Gantry / GPUs", "Per GPU and pool: utilization, memory, NVENC/NVDEC, temperature, power.")
    legend = "{{pool}} {{instance}} gpu{{gpu}} {{model}}"
    for title, metric, unit in [
        ("GPU utilization", "gantry_gpu_utilization_ratio", "percentunit"),
        ("Memory used", "gantry_gpu_memory_used_bytes", "bytes"),
        ("Memory free", "gantry_gpu_memory_free_bytes", "bytes"),
        ("Encoder (NVENC) utilization", "gantry_gpu_encoder_utilization_ratio", "percentunit"),
        ("Decoder (NVDEC) utilization", "gantry_gpu_decoder_utilization_ratio", "percentunit"),
        ("Temperature", "gantry_gpu_temperature_celsius", "celsius"),
        ("Power", "gantry_gpu_power_watts", "watt"),
    ]:
        b.panel(title, [(f"{metric}{{{NS}}} {POOL_JOIN}", legend)], unit)
    b.panel(
        "Memory used per pool",
        [
            (
                f"sum by (pool) (gantry_gpu_memory_used_bytes{{{NS}}} {POOL_JOIN}) / sum by (pool) (gantry_gpu_memory_total_bytes{{{NS}}} {POOL_JOIN})",
                "{{pool}}",
            )
        ],
        "percentunit",
    )
    b.panel(
        "Transcodes by encoder and why",
        [(f"sum by (container, encoder, reason, decode) (rate(gantry_transcodes_total{{{NS}}}[{RI}]) {POOL_JOIN})", "{{container}} {{encoder}} ({{reason}}, decode {{decode}})")],
        "ops",
        width=24,
    )
    return b


def providers():
    b = Board("gantry-providers", "Gantry / Providers & credits", "Model provider calls, errors, circuits, and the credits they consume.")
    calls = f"rate(gantry_provider_requests_total{{{NS}}}[{RI}]) {POOL_JOIN}"
    b.panel("Request rate by provider", [(f"sum by (provider, call) ({calls})", "{{provider}} {{call}}")], "reqps")
    b.panel(
        "Errors by class",
        [(f'sum by (provider, outcome) (rate(gantry_provider_requests_total{{{NS}, outcome!="ok"}}[{RI}]) {POOL_JOIN})', "{{provider}} {{outcome}}")],
        "reqps",
    )
    b.panel(
        "429s (rate limited)",
        [(f'sum by (provider, region) (rate(gantry_provider_requests_total{{{NS}, outcome="rate_limited"}}[{RI}]) {POOL_JOIN})', "{{provider}} {{region}}")],
        "reqps",
    )
    b.panel(
        "Error ratio",
        [
            (
                f'sum by (provider) (rate(gantry_provider_requests_total{{{NS}, outcome!="ok"}}[{RI}]) {POOL_JOIN}) / sum by (provider) ({calls})',
                "{{provider}}",
            )
        ],
        "percentunit",
    )
    b.panel(
        "Latency by provider",
        [
            (
                f"histogram_quantile({q}, sum by (provider, le) (rate(gantry_provider_request_duration_seconds_bucket{{{NS}}}[{RI}]) {POOL_JOIN}))",
                f"p{int(q * 100)} {{{{provider}}}}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
        "s",
    )
    b.panel(
        "Generation time by provider and model",
        [
            (
                f'histogram_quantile({q}, sum by (provider, model, le) (rate(gantry_provider_task_duration_seconds_bucket{{{NS}, outcome="ok"}}[{RI}]) {POOL_JOIN}))',
                f"p{int(q * 100)} {{{{provider}}}} {{{{model}}}}",
            )
            for q in (0.5, 0.95)
        ],
        "s",
        description="Submit to outputs downloaded, for generations that succeeded.",
    )
    b.panel(
        "Circuits open",
        [(f"max by (provider, region) (gantry_provider_circuit_open{{{NS}}} {POOL_JOIN})", "{{provider}} {{region}}")],
        description="1 while a provider's circuit breaker in a region refuses calls.",
    )
    b.panel(
        "Credits consumed by provider and model",
        [(f"sum by (provider, model) (rate(gantry_credits_charged_total{{{NS}}}[{RI}]))", "{{provider}} {{model}}")],
        width=12,
    )
    b.panel(
        "Credits consumed by plan and kind",
        [(f"sum by (plan, kind) (rate(gantry_credits_charged_total{{{NS}}}[{RI}]))", "{{plan}} {{kind}}")],
        width=12,
    )
    b.panel(
        "Jobs settled by outcome",
        [(f"sum by (kind, outcome) (rate(gantry_jobs_settled_total{{{NS}}}[{RI}]))", "{{kind}} {{outcome}}")],
        "ops",
        width=24,
    )
    return b


def safety():
    b = Board("gantry-safety", "Gantry / Safety", "CSAM-hash jobs, output scans before release, matches and the actions taken.")
    b.panel(
        "CSAM-hash jobs",
        [
            (f"sum by (pool) ({rate('gantry_jobs_succeeded_total', extra=CSAM)})", "{{pool}} clean"),
            (f"sum by (pool) ({rate('gantry_jobs_failed_total', extra=CSAM + ', ' + BLOCKED)})", "{{pool}} blocked"),
        ],
        "ops",
    )
    b.panel(
        "Outputs scanned before release",
        [(f"sum by (kind, verdict) (rate(gantry_output_scans_total{{{NS}}}[{RI}]) {POOL_JOIN})", "{{kind}} {{verdict}}")],
        "ops",
    )
    b.panel(
        "Matches by category",
        [(f"sum by (category) (increase(gantry_moderation_events_total{{{NS}}}[{RI}]) {POOL_JOIN})", "{{category}}")],
    )
    b.panel(
        "Actions taken",
        [(f"sum by (action) (increase(gantry_moderation_events_total{{{NS}}}[{RI}]) {POOL_JOIN})", "{{action}}")],
    )
    b.panel(
        "Blocked jobs by kind",
        [(f"sum by (kind) ({rate('gantry_jobs_failed_total', extra=BLOCKED)})", "{{kind}}")],
        "ops",
    )
    b.panel(
        "Scan time by kind",
        [
            (
                f"histogram_quantile({q}, sum by (kind, le) (rate(gantry_output_scan_duration_seconds_bucket{{{NS}}}[{RI}]) {POOL_JOIN}))",
                f"p{int(q * 100)} {{{{kind}}}}",
            )
            for q in (0.5, 0.99)
        ],
        "s",
    )
    b.panel(
        "Reviews and reports waiting",
        [(f"max by (queue) (gantry_safety_backlog{{{NS}}})", "{{queue}}")],
        description="Jobs held for review, and reports to the CyberTipline queued, awaiting a reviewer's confirmation, or failed.",
    )
    b.panel(
        "Oldest waiting",
        [(f"max by (queue) (gantry_safety_oldest_age_seconds{{{NS}}})", "{{queue}}")],
        "s",
        description="How long the oldest item of each backlog has waited (alerts: GantryReviewBacklog, GantryReportNotSubmitted).",
    )
    b.panel(
        "Retention sweeps: removed by data class",
        [(f"sum by (class) (increase(gantry_retention_removed_total{{{NS}}}[{RI}]))", "{{class}}")],
        description="Outputs past outputs_days, audit entries past audit_days, expired moderation index ids (the scheduler's sweeper).",
    )
    b.panel(
        "User-data erasures",
        [(f"sum by (outcome) (increase(gantry_user_erasures_total{{{NS}}}[{RI}]))", "{{outcome}}")],
        description="DELETE /v1/users/{id}/data answered: complete, or pending while a running job stops.",
    )
    return b


# A pool's queue-wait objective as a series with the `le` of the histogram bucket it falls on
# (the scheduler exports it with that bucket's `le` as `slo_bucket`), and ones for the join.
SLO_LE = (
    'label_replace(max by (namespace, pool, slo_bucket) (gantry_pool_queue_wait_slo_seconds{%s}) * 0 + 1, '
    '"le", "$1", "slo_bucket", "(.*)")' % SEL
)
TARGET = f"max by (namespace, pool) (gantry_pool_queue_wait_slo_target_ratio{{{SEL}}})"


def within_slo(window):
    """The share of jobs (per pool) that started within their pool's objective over `window`."""
    bucket = f"sum by (namespace, pool, le) (rate(gantry_job_queue_wait_seconds_bucket{{{SEL}}}[{window}]))"
    count = f"sum by (namespace, pool) (rate(gantry_job_queue_wait_seconds_count{{{SEL}}}[{window}]))"
    return f"sum by (namespace, pool) ({bucket} * on (namespace, pool, le) group_left () {SLO_LE}) / {count}"


def slo():
    b = Board(
        "gantry-slo",
        "Gantry / SLOs",
        "Per pool: how long jobs wait to start against the pool's queue-wait objective "
        "(queue_wait_slo_secs, target queue_wait_slo_target), the error budget left and how fast it burns; "
        "the API's availability and latency.",
    )
    b.panel(
        "Queue wait by pool",
        quantiles("gantry_job_queue_wait_seconds_bucket", "pool", legend="{{pool}}"),
        "s",
        description="Enqueue (or ready again) to claim, by Redis's clock, from the workers' histogram.",
    )
    b.panel(
        "Oldest waiting job vs objective",
        [
            (f"max by (pool) (gantry_queue_oldest_job_age_seconds{{{SEL}}})", "{{pool}} oldest"),
            (f"max by (pool) (gantry_pool_queue_wait_slo_seconds{{{SEL}}})", "{{pool}} objective"),
        ],
        "s",
        description="GantryQueueBacklogOverSLO fires when the first stays above the second for 5 minutes.",
    )
    b.panel(
        "Jobs started within the objective",
        [(within_slo(RI), "{{pool}}"), (TARGET, "{{pool}} target")],
        "percentunit",
        description="The SLI: the share of jobs whose queue wait was within the pool's objective.",
    )
    b.panel(
        "Error budget left (30 days)",
        [(f"1 - (1 - {within_slo('30d')}) / on (namespace, pool) (1 - {TARGET})", "{{pool}}")],
        "percentunit",
        kind="stat",
        width=6,
        description="1 = untouched; 0 = spent: 1 - (1 - SLI over 30 days) / (1 - target).",
    )
    b.panel(
        "Burn rate (1 hour)",
        [(f"(1 - {within_slo('1h')}) / on (namespace, pool) (1 - {TARGET})", "{{pool}}")],
        kind="stat",
        width=6,
        description="How fast the budget goes: 1 spends it in exactly 30 days; 14.4 in about two days.",
    )
    b.panel(
        "API availability",
        [
            (
                f'sum(rate(gantry_http_requests_total{{{NS}, status!~"5.."}}[{RI}])) / sum(rate(gantry_http_requests_total{{{NS}}}[{RI}]))',
                "answered without a server error",
            )
        ],
        "percentunit",
        description="The scheduler's API: requests not answered 5xx (4xx are the callers').",
    )
    b.panel(
        "API latency p99 by route",
        [
            (
                f"histogram_quantile(0.99, sum by (route, method, le) (rate(gantry_http_request_duration_seconds_bucket{{{NS}}}[{RI}])))",
                "{{method}} {{route}}",
            )
        ],
        "s",
    )
    b.panel(
        "API requests by status",
        [(f"sum by (status) (rate(gantry_http_requests_total{{{NS}}}[{RI}]))", "{{status}}")],
        "reqps",
        width=24,
    )
    return b


def main():
    out = pathlib.Path(sys.argv[2]) if len(sys.argv) == 3 and sys.argv[1] == "--out" else HERE
    for board in (fleet(), gpus(), providers(), safety(), slo()):
        path = out / f"{board.uid}.json"
        path.write_text(json.dumps(board.json(), indent=2) + "\n")
        print(f"{path.name}: {len(board.panels)} panels")


if __name__ == "__main__":
    main()
