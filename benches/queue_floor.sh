#!/usr/bin/env bash
# Redis's CPU per processed no-op job, side by side in one run on one fresh redis-server each
# round: Gantry's claim and ack (`gantry bench queue`), a stream queue with no per-job record
# (ChasquiMQ's shape: XREADGROUP and XACKDEL, pipelined, no Lua), and the same stream queue
# writing one status record per job. Prints each round and the medians, with Gantry's cost and
# the record's as ratios of the bare stream's (issue 23: docs/design/queue-v2.md).
#
#   [REDIS_SERVER=/opt/redis-8.6/bin/redis-server] benches/queue_floor.sh [N=20000] [C=50] [ROUNDS=3]
#
# Needs Python's redis client: uses ../shared/peers/python/.venv when it is there, else makes
# a virtual environment in /tmp/gantry-bench-venv (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000} C=${2:-50} ROUNDS=${3:-3}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
PY=../shared/peers/python/.venv/bin/python
if ! [[ -x $PY ]] || ! "$PY" -c 'import redis' 2>/dev/null; then
  PY=/tmp/gantry-bench-venv/bin/python
  [[ -x $PY ]] || python3 -m venv /tmp/gantry-bench-venv
  "$PY" -c 'import redis' 2>/dev/null || /tmp/gantry-bench-venv/bin/pip install -q redis
fi
cargo build --release --quiet --bin gantry
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/gantry
dir=$(mktemp -d)
trap 'for f in "$dir"/*.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null; done; rm -rf "$dir"' EXIT
fresh() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$REDIS_SERVER" --port "$port" --save '' --appendonly no --daemonize yes --dir "$dir" --logfile /dev/null --pidfile "$dir/$port.pid"
  sleep 0.3
}
stop() { kill "$(cat "$dir/$port.pid")"; rm -f "$dir/$port.pid"; sleep 0.2; }
: >"$dir/results"
for r in $(seq 1 "$ROUNDS"); do
  fresh
  RUST_LOG=warn "$bin" bench queue --redis-port "$port" "$N" "$C" --latency-samples 0 2>/dev/null |
    python3 -c 'import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(json.dumps({"mode":"gantry","redis_cpu_us_per_job":d["redis_per_job"]["process"]["cpu_us"],"commands_per_job":d["redis_per_job"]["process"]["commands"]}))' >>"$dir/results"
  stop
  for mode in bare record; do
    fresh
    "$PY" benches/streams_floor.py "$port" "$N" "$mode" >>"$dir/results"
    stop
  done
  echo "round $r: $(tail -3 "$dir/results" | tr '\n' ' ')" >&2
done
python3 - "$dir/results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {m: statistics.median(r["redis_cpu_us_per_job"] for r in rows if r["mode"] == m) for m in ("gantry", "bare", "record")}
cmd = {m: statistics.median(r["commands_per_job"] for r in rows if r["mode"] == m) for m in ("gantry", "bare", "record")}
ver = next((r["redis"] for r in rows if "redis" in r), "?")
print(f"Redis {ver}, medians, Redis CPU per processed job (claim + ack):")
for m, what in (("gantry", "Gantry (claim.lua + ack.lua)"), ("bare", "stream, no record"), ("record", "stream + one record per job")):
    print(f"  {what:30} {med[m]:6.2f} us  {cmd[m]:5.2f} commands  {med[m] / med['bare']:.2f}x the bare stream")
print(json.dumps({"redis": ver, "us_per_job": med, "commands_per_job": cmd}))
PY
