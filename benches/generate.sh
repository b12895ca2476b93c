#!/usr/bin/env bash
# One worker holding N poll-mode generate jobs in flight against the mock providers: its CPU
# (cores) and RSS, side by side with the same worker holding N sleeping no-op jobs, and the
# issue's budget (under 1 core, under 200 MiB).
#
#   benches/generate.sh [JOBS=500] [HOLD_SECS=25] [WINDOW_SECS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-500} HOLD=${2:-25} WINDOW=${3:-10}
# shellcheck source=benches/fresh-redis.sh
source benches/fresh-redis.sh
RUST_LOG=warn "$bin" bench generate --redis-port "$port" --jobs "$JOBS" --hold-secs "$HOLD" --window-secs "$WINDOW"
