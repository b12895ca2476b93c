#!/usr/bin/env bash
# Job search over a large store, on one fresh redis-server: JOBS jobs through enqueue.lua (two
# pools, 61 tenants, two kinds, a thousand users each), then memory per job of the search
# indexes beside one sorted set per tenant, and one page's latency per filter beside reading
# the same page's records directly; last, through GET /v1/jobs.
#
#   benches/search.sh [JOBS=1000000] [SAMPLES=200]
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-1000000} SAMPLES=${2:-200}
# shellcheck source=benches/fresh-redis.sh
source benches/fresh-redis.sh
RUST_LOG=warn "$bin" bench search --redis-port "$port" --jobs "$JOBS" --samples "$SAMPLES"
