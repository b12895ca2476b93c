#!/usr/bin/env bash
# The worker runtime vs the queue core, side by side in one run on one fresh redis-server:
# N no-op jobs through the queue's in-process consumer, then N through a `gantry worker`
# process, ROUNDS times interleaved; prints both medians and their ratio.
#
#   benches/worker.sh [N=20000] [CONCURRENCY=50] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000} C=${2:-50} ROUNDS=${3:-3}
# shellcheck source=benches/fresh-redis.sh
source benches/fresh-redis.sh
RUST_LOG=warn "$bin" bench worker --redis-port "$port" "$N" "$C" --rounds "$ROUNDS"
