#!/usr/bin/env bash
# Admission vs raw enqueue, side by side in one run on one fresh redis-server: batches of 1,000
# no-op jobs through POST /v1/jobs:batch of an in-process scheduler and through enqueue_batch,
# ROUNDS times interleaved (medians and their ratio); then single POST /v1/jobs open-loop at
# RATE/s for SECS s (p50/p99).
#
#   benches/scheduler.sh [BATCHES=20] [ROUNDS=3] [RATE=500] [SECS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
BATCHES=${1:-20} ROUNDS=${2:-3} RATE=${3:-500} SECS=${4:-10}
# shellcheck source=benches/fresh-redis.sh
source benches/fresh-redis.sh
RUST_LOG=warn "$bin" bench scheduler --redis-port "$port" --batches "$BATCHES" --rounds "$ROUNDS" --rate "$RATE" --secs "$SECS"
