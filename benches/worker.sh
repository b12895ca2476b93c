#!/usr/bin/env bash
# The worker runtime vs the queue core, side by side in one run on one fresh redis-server:
# N no-op jobs through the queue's in-process consumer, then N through a `gantry worker`
# process, ROUNDS times interleaved; prints both medians and their ratio.
#
#   benches/worker.sh [N=20000] [CONCURRENCY=50] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000} C=${2:-50} ROUNDS=${3:-3}
cargo build --release --quiet --bin gantry
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/gantry
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --save '' --appendonly no --daemonize yes --dir "$dir" --logfile redis.log --pidfile "$dir/redis.pid"
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep 0.3
RUST_LOG=warn "$bin" bench worker --redis-port "$port" "$N" "$C" --rounds "$ROUNDS"
