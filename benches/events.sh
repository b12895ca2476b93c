#!/usr/bin/env bash
# SSE fan-out, side by side in one run on one fresh redis-server: CLIENTS concurrent
# GET /v1/events streams on a `gantry scheduler` process, each following its own jobs, while
# events are appended at RATE per second; a plain XREAD BLOCK reader on the same stream gives
# Redis's own latency. Prints latency percentiles of both (and the p99 ratio), events delivered,
# and the scheduler's memory per connected client.
#
#   benches/events.sh [CLIENTS=1000] [RATE=2000] [SECS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-1000} RATE=${2:-2000} SECS=${3:-10}
# shellcheck source=benches/fresh-redis.sh
source benches/fresh-redis.sh
RUST_LOG=warn "$bin" bench events --redis-port "$port" --clients "$CLIENTS" --rate "$RATE" --secs "$SECS"
