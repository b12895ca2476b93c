"""Lints and renders helm/gantry with Helm's own engine (helm-python-sdk wraps Helm's Go SDK),
validates every rendered object against the Kubernetes schemas (kubernetes-validate, strict)
and the CRDs (KEDA ScaledObject, Prometheus Operator ServiceMonitor) for their required fields,
and checks what the chart promises: one worker Deployment per pool with its GPUs, drivers and
grace period, a ScaledObject per autoscaled pool on gantry_pool_desired_workers, PDBs and
selectors that match, Redis only from a Secret. Run by tests/e2e/helm_chart.rs; exits 1 with every
finding."""

import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

CHART = pathlib.Path(__file__).resolve().parent / "gantry"
K8S = ["1.28", "1.33"]
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def render(values, label):
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name="gantry", namespace="media")
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                docs.append(d)
    print(f"{label}: {len(docs)} objects")
    return docs


def validate(docs, label):
    for d in docs:
        kind, name = d.get("kind"), d.get("metadata", {}).get("name")
        where = f"{label} {kind}/{name}"
        if d["apiVersion"] == "keda.sh/v1alpha1":
            check(kind == "ScaledObject", f"{where}: unexpected KEDA kind")
            spec = d.get("spec", {})
            check(bool(spec.get("scaleTargetRef", {}).get("name")), f"{where}: spec.scaleTargetRef.name")
            triggers = spec.get("triggers") or []
            check(len(triggers) > 0, f"{where}: spec.triggers")
            for t in triggers:
                m = t.get("metadata", {})
                check(t.get("type") == "prometheus", f"{where}: trigger type")
                for field in ("serverAddress", "query", "threshold"):
                    check(isinstance(m.get(field), str) and m[field] != "", f"{where}: trigger {field} (a string)")
                check(all(isinstance(v, str) for v in m.values()), f"{where}: trigger metadata values are strings")
            lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
            check(isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi, f"{where}: replica bounds {lo}..{hi}")
            continue
        if d["apiVersion"] == "monitoring.coreos.com/v1" and kind == "PrometheusRule":
            groups = d.get("spec", {}).get("groups") or []
            check(len(groups) > 0, f"{where}: spec.groups")
            for g in groups:
                check(bool(g.get("name")) and len(g.get("rules") or []) > 0, f"{where}: group {g.get('name')} has a name and rules")
                for r in g.get("rules") or []:
                    check(isinstance(r.get("alert"), str) and isinstance(r.get("expr"), str), f"{where}: rule {r}: alert and expr")
            continue
        if d["apiVersion"] == "monitoring.coreos.com/v1":
            check(kind == "ServiceMonitor", f"{where}: unexpected kind")
            spec = d.get("spec", {})
            check("selector" in spec, f"{where}: spec.selector")
            eps = spec.get("endpoints") or []
            check(len(eps) > 0 and all(e.get("port") for e in eps), f"{where}: spec.endpoints[].port")
            continue
        for version in K8S:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except Exception as e:  # noqa: BLE001 - every finding is reported
                problems.append(f"{where} (Kubernetes {version}): {str(e).splitlines()[0]}")


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def coherence(docs, label):
    deps = by_kind(docs, "Deployment")
    for name, d in deps.items():
        pod = d["spec"]["template"]["metadata"]["labels"]
        check(matches(d["spec"]["selector"]["matchLabels"], pod), f"{label} Deployment/{name}: selector misses its pods")
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in deps.values()]
    for kind in ("Service", "PodDisruptionBudget"):
        for name, o in by_kind(docs, kind).items():
            sel = o["spec"]["selector"]
            sel = sel.get("matchLabels", sel)
            check(sum(matches(sel, p) for p in pods) == 1, f"{label} {kind}/{name}: selects {sum(matches(sel, p) for p in pods)} Deployments")
    for name, s in by_kind(docs, "ScaledObject").items():
        target = s["spec"]["scaleTargetRef"]["name"]
        check(target in deps, f"{label} ScaledObject/{name}: no Deployment {target}")
        check("replicas" not in deps.get(target, {}).get("spec", {}), f"{label} {target}: replicas set while KEDA scales it")
    ports = {p["name"] for s in by_kind(docs, "Service").values() for p in s["spec"]["ports"]}
    for name, m in by_kind(docs, "ServiceMonitor").items():
        check({e["port"] for e in m["spec"]["endpoints"]} <= ports, f"{label} ServiceMonitor/{name}: an endpoint names no Service port")
    for name, d in deps.items():
        env = {e["name"]: e for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
        ref = env.get("REDIS_URL", {}).get("valueFrom", {}).get("secretKeyRef")
        check(ref is not None, f"{label} {name}: REDIS_URL must come from a Secret")
    check(not any("bitnami" in yaml.safe_dump(d).lower() for d in docs), f"{label}: no Bitnami Redis")


def worker(docs, pool):
    return by_kind(docs, "Deployment").get(f"gantry-worker-{pool}")


def main():
    # values.yaml alone has no scheduler.config, so lint's render stops at the chart's refusal
    # (checked below); any other finding is a problem.
    required = "scheduler.config is required"
    lint = helm.lint(str(CHART))
    for m in lint.get("messages", []):
        if m.get("severity", 0) >= 2 and required not in str(m):
            problems.append(f"helm lint: {m}")
    check(all(required in str(e) for e in lint.get("errors") or []), f"helm lint errors: {lint.get('errors')}")

    # No default configuration: the embedded one's API keys are published.
    try:
        render({}, "no scheduler.config")
        problems.append("rendered without scheduler.config")
    except Exception as e:  # noqa: BLE001 - refusal is the point
        check(required in str(e), f"the refusal says why: {e}")
    own = {"scheduler": {"config": 'listen = "0.0.0.0:8080"'}, "dataKeys": {"existingSecret": "gantry-data-keys"}}
    default = render(own, "defaults")
    sched = by_kind(default, "Deployment")["gantry-scheduler"]["spec"]["template"]["spec"]["containers"][0]
    check(sched["args"][sched["args"].index("--metrics-listen") + 1] == "0.0.0.0:9465", "scheduler: /metrics on its own port")
    check({p["name"] for p in by_kind(default, "Service")["gantry-scheduler"]["spec"]["ports"]} == {"http", "metrics"}, "scheduler Service ports")
    for m in by_kind(default, "ServiceMonitor").values():
        check(all(e["port"] == "metrics" for e in m["spec"]["endpoints"]), "ServiceMonitor scrapes metrics ports only, never the API")
    # The PrometheusRule carries alerts/gantry-rules.yml unchanged but for the runbook links.
    plain = yaml.safe_load((CHART / "alerts" / "gantry-rules.yml").read_text())
    rules = list(by_kind(default, "PrometheusRule").values())
    check(len(rules) == 1, "defaults: one PrometheusRule")
    for r in rules:
        got = r["spec"]["groups"]
        base = "https://github.com/gantry/gantry/blob/main/docs/runbooks.md#"
        want = yaml.safe_load(yaml.safe_dump(plain["groups"]).replace("docs/runbooks.md#", base))
        check(got == want, "PrometheusRule groups are alerts/gantry-rules.yml's, runbooks at runbookBaseUrl")
        for g in got:
            for rule in g["rules"]:
                url = rule["annotations"].get("runbook_url", "")
                check(url.startswith(base), f"PrometheusRule {rule['alert']}: runbook_url {url}")
                # Prometheus's own templates survive Helm's rendering (two fleet-wide alerts
                # have none to keep).
                templated = any("{{ $" in v for v in rule["annotations"].values())
                check(templated or rule["alert"] in ("GantrySchedulerAbsent", "GantryWebhookEndpointDisabled"),
                      f"PrometheusRule {rule['alert']}: its annotations keep their Prometheus templates")
    # Logs are JSON for the cluster's log pipeline; traces only when a collector is named.
    def env_of(d):
        return {e["name"]: e.get("value") for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}

    for d in by_kind(default, "Deployment").values():
        env = env_of(d)
        check(env.get("GANTRY_LOG_FORMAT") == "json", f"{d['metadata']['name']}: JSON logs")
        check("OTEL_EXPORTER_OTLP_ENDPOINT" not in env, f"{d['metadata']['name']}: no traces unless asked")
    traced = render({**own, "observability": {"otlpEndpoint": "http://otel:4318"}}, "traces on")
    for d in by_kind(traced, "Deployment").values():
        env = env_of(d)
        check(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://otel:4318", f"{d['metadata']['name']}: traces to the collector")
        check(env.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "http/protobuf", f"{d['metadata']['name']}: over OTLP/HTTP by default")
    grpc = render({**own, "observability": {"otlpEndpoint": "http://otel:4317", "otlpProtocol": "grpc"}}, "traces over gRPC")
    for d in by_kind(grpc, "Deployment").values():
        check(env_of(d).get("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc", f"{d['metadata']['name']}: traces over gRPC")
    off = render({**own, "alerts": {"enabled": False}}, "alerts off")
    check(not by_kind(off, "PrometheusRule"), "alerts.enabled=false: no PrometheusRule")
    validate(default, "defaults")
    coherence(default, "defaults")
    check(set(by_kind(default, "Deployment")) == {"gantry-scheduler", "gantry-worker-cpu"}, "defaults: scheduler + cpu pool")
    check(not by_kind(default, "Secret"), "defaults: no Secret without redis.url")
    check(not by_kind(default, "Role"), "defaults: no RBAC unless asked")

    values = yaml.safe_load((CHART / "ci" / "three-gpu-pools.yaml").read_text())
    three = render(values, "three GPU pools")
    validate(three, "three GPU pools")
    coherence(three, "three GPU pools")
    pools = {"cpu": 0, "h100": 1, "l4-video": 1, "a10-batch": 2}
    for pool, gpus in pools.items():
        d = worker(three, pool)
        check(d is not None, f"no Deployment for pool {pool}")
        if d is None:
            continue
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        limits = c["resources"].get("limits", {})
        check(limits.get("nvidia.com/gpu", 0) == gpus, f"{pool}: nvidia.com/gpu limit {limits.get('nvidia.com/gpu')} != {gpus}")
        env = {e["name"]: e.get("value") for e in c["env"]}
        caps = env.get("NVIDIA_DRIVER_CAPABILITIES")
        want_caps = {"l4-video": "compute,utility,video"}.get(pool, "compute,utility" if gpus else None)
        check(caps == want_caps, f"{pool}: NVIDIA_DRIVER_CAPABILITIES {caps} != {want_caps}")
        drain = int(c["args"][c["args"].index("--drain-grace-secs") + 1])
        check(spec["terminationGracePeriodSeconds"] == drain + 30, f"{pool}: grace period {spec['terminationGracePeriodSeconds']} for drain {drain}")
        check(c["args"][c["args"].index("--pool") + 1] == pool, f"{pool}: --pool")
        check(c["args"][c["args"].index("--gpus") + 1] == ("auto" if gpus else "none"), f"{pool}: --gpus")
    h100 = worker(three, "h100")["spec"]["template"]["spec"]
    check(h100["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "h100: nodeSelector")
    check(h100["tolerations"][0]["key"] == "nvidia.com/gpu", "h100: toleration")
    check(worker(three, "l4-video")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 1830, "l4-video: 1800 s drain")
    scaled = by_kind(three, "ScaledObject")
    check(len(scaled) == 4, f"{len(scaled)} ScaledObjects for 4 pools")
    for pool in pools:
        s = scaled.get(f"gantry-worker-{pool}", {}).get("spec", {})
        q = s.get("triggers", [{}])[0].get("metadata", {}).get("query", "")
        check(f'pool="{pool}"' in q and "gantry_pool_desired_workers" in q and 'namespace="media"' in q, f"{pool}: trigger query {q}")
    check(scaled["gantry-worker-a10-batch"]["spec"]["minReplicaCount"] == 0, "a10-batch scales to zero")
    check(scaled["gantry-worker-h100"]["spec"]["minReplicaCount"] == 2, "h100 keeps 2")
    check(set(by_kind(three, "Role")) == {"gantry-pod-deletion-cost"}, "pod-deletion-cost Role")
    for pool in pools:
        args = worker(three, pool)["spec"]["template"]["spec"]["containers"][0]["args"]
        check("--pod-deletion-cost" in args, f"{pool}: --pod-deletion-cost with the RBAC")
    check("--pod-deletion-cost" not in worker(default, "cpu")["spec"]["template"]["spec"]["containers"][0]["args"], "defaults: no deletion cost")
    check(by_kind(three, "ServiceAccount")["gantry"]["automountServiceAccountToken"] is True, "token mounted for the RBAC")
    ref = worker(three, "cpu")["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]
    check(ref == {"name": "gantry-redis", "key": "url"}, f"existing Redis secret: {ref}")
    check(not by_kind(three, "Secret"), "no Secret made when one exists")
    env = {e["name"]: e.get("value") for e in worker(default, "cpu")["spec"]["template"]["spec"]["containers"][0]["env"]}
    check(env.get("GANTRY_RETENTION") == 'audit_days = 365;critical_categories = ["csam"];dead_letters_days = 30;exports_days = 7;idempotency_days = 7;job_records_days = 7;moderation_critical_days = 2557;moderation_days = 90;outputs_days = 30',
          f"the retention policy reaches every pod: {env.get('GANTRY_RETENTION')}")
    keys = {e["name"]: e.get("valueFrom") for e in worker(three, "cpu")["spec"]["template"]["spec"]["containers"][0]["env"]}
    check(keys.get("GANTRY_DATA_KEYS") == {"secretKeyRef": {"name": "gantry-data-keys", "key": "keys"}},
          f"data keys from their Secret: {keys.get('GANTRY_DATA_KEYS')}")
    check("GANTRY_EVIDENCE_KEYS" not in keys, "no evidence keys unless a Secret is named")
    safe = render({**own, "evidenceKeys": {"existingSecret": "gantry-evidence"},
                   "cybertipline": {"existingSecret": "gantry-cybertipline"}}, "evidence and reports")
    ev = {e["name"]: e.get("valueFrom") for e in worker(safe, "cpu")["spec"]["template"]["spec"]["containers"][0]["env"]}
    check(ev.get("GANTRY_EVIDENCE_KEYS") == {"secretKeyRef": {"name": "gantry-evidence", "key": "keys"}},
          f"evidence keys from their Secret: {ev.get('GANTRY_EVIDENCE_KEYS')}")
    sched = by_kind(safe, "Deployment")["gantry-scheduler"]["spec"]["template"]["spec"]["containers"][0]
    check({"secretRef": {"name": "gantry-cybertipline"}} in sched.get("envFrom", []),
          f"the scheduler gets the CyberTipline's credentials: {sched.get('envFrom')}")
    for w in by_kind(safe, "Deployment").values():
        c = w["spec"]["template"]["spec"]["containers"][0]
        if "worker" in c.get("args", []):
            check({"secretRef": {"name": "gantry-cybertipline"}} not in c.get("envFrom", []), "workers never get them")
    try:
        render({"scheduler": own["scheduler"]}, "own config without data keys")
        problems.append("rendered a production scheduler config without data keys")
    except Exception as e:  # noqa: BLE001 - refusal is the point
        check("dataKeys.existingSecret is required" in str(e), f"the refusal says why: {e}")
    check("scheduler.toml" in by_kind(three, "ConfigMap").get("gantry-scheduler", {}).get("data", {}), "scheduler config")

    with_url = render({**own, "redis": {"url": "redis+cluster://r1:6379,r2:6379"}}, "redis.url")
    check(by_kind(with_url, "Secret")["gantry-redis"]["stringData"]["url"].startswith("redis+cluster://"), "Secret from redis.url")

    # The schema refuses what the templates cannot use.
    for bad, why in [
        ({"pools": {"cpu": {"concurrency": 0}}}, "concurrency 0"),
        ({"pools": {"cpu": {"gpu": 1}}}, "a misspelt key"),
        ({"pools": {"Bad_Name": {}}}, "a pool name that is no DNS label"),
        ({"redis": {"url": "http://redis"}}, "a non-Redis URL"),
        ({"pools": {"cpu": {"kinds": ["render"]}}}, "an unknown kind"),
        ({"retention": {"outputs_days": 0}}, "a retention of 0 days"),
        ({"retention": {"output_days": 30}}, "a misspelt retention class"),
    ]:
        with helm.Chart.load(str(CHART)) as chart:
            try:
                chart.validate_schema(bad)
                problems.append(f"values.schema.json accepted {why}")
            except Exception:  # noqa: BLE001 - refusal is the point
                pass

    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("chart ok")


main()
