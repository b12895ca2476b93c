#!/usr/bin/env bash
# Gantry vs the Redis job-queue peers (BullMQ, Sidekiq, ...) in ONE run of ../shared/peers/run-all
# against one fresh redis-server, then the ratios gantry/peer of the medians.
#
#   benches/peers.sh                       # N=20000, concurrency 50, 2 repeats, bullmq, sidekiq, chasquimq (both configurations)
#   PEERS="bullmq sidekiq chasquimq" N=20000 REPEATS=3 benches/peers.sh
#   GANTRY_BIN=/tmp/gantry-before benches/peers.sh   # another build of gantry in the same harness
#
# Install the peers first with ../shared/peers/setup (NO_REDIS8=1 to skip building Redis 8.6).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_DIR=${PEERS_DIR:-../shared/peers}
[[ -x $PEERS_DIR/run-all ]] || { echo "no $PEERS_DIR/run-all: the peers harness lives in ../shared/peers" >&2; exit 1; }
# GANTRY_BIN=path measures another build (e.g. the one before a change) instead of this tree's.
if [[ -n ${GANTRY_BIN:-} ]]; then
  bin=$GANTRY_BIN
else
  cargo build --release --quiet --bin gantry
  bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/gantry
fi
export PEERS=${PEERS:-"bullmq sidekiq chasquimq chasquimq-no-events"} CONC_HIGH=${CONC_HIGH-} N=${N:-20000} REPEATS=${REPEATS:-2}
# Redis 8.6 when ../shared/peers/setup built it (chasquimq needs it), else the one on PATH.
if [[ -z ${REDIS_SERVER:-} ]]; then
  if [[ -x /opt/redis-8.6/bin/redis-server ]]; then REDIS_SERVER=/opt/redis-8.6/bin/redis-server; else REDIS_SERVER=redis-server; fi
fi
export REDIS_SERVER
export GANTRY_BENCH_CMD="RUST_LOG=warn $bin bench queue --latency-samples 0 --redis-port"
export RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d /tmp/gantry-peers.XXXXXX)}
"$PEERS_DIR/run-all"
python3 - "$RESULTS_DIR/summary.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
g = {r["concurrency"]: r for r in rows if r["label"] == "gantry" and not r["failed"]}
print("\nratios, gantry / peer (medians of the same run):")
for r in rows:
    if r["label"] == "gantry" or r["failed"] or r["concurrency"] not in g:
        continue
    mine = g[r["concurrency"]]
    print(f'  vs {r["peer"]:<20} C={r["concurrency"]:<4} process {mine["process_per_s_median"] / r["process_per_s_median"]:5.2f}x'
          f'   enqueue {mine["enqueue_per_s_median"] / r["enqueue_per_s_median"]:5.2f}x')
PY
# Idle claim latency, measured on its own fresh server.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$REDIS_SERVER" --port "$port" --save '' --appendonly no --daemonize yes --logfile /dev/null --pidfile "/tmp/gantry-bench-$port.pid"
trap 'kill "$(cat /tmp/gantry-bench-'"$port"'.pid)" 2>/dev/null || true' EXIT
sleep 0.3
RUST_LOG=warn "$bin" bench queue --redis-port "$port" 2000 50 --latency-samples 500 >/dev/null
