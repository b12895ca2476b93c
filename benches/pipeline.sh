#!/usr/bin/env bash
# What a pipeline saves a platform, side by side in one run on one fresh redis-server: a 3-step
# pipeline of no-op jobs (POST /v1/pipelines, wait_pipeline) against the same three jobs chained
# by the client (submit, wait over SSE, submit the next), through one in-process scheduler's API
# and one worker. Prints p50/p99 of first submit -> last done for both, and their ratio.
#
#   benches/pipeline.sh [ROUNDS=200]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-200}
# shellcheck source=benches/fresh-redis.sh
source benches/fresh-redis.sh
RUST_LOG=warn "$bin" bench pipeline --redis-port "$port" --rounds "$ROUNDS"
