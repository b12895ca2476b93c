#!/usr/bin/env bash
# The operator console at scale, on one fresh redis-server: JOBS jobs (as benches/search.sh
# stores them), DEAD of them dead-lettered, WORKERS workers in the registry; each page's time
# over loopback HTTP beside the admin API's JSON for the same data; then the CPU of CONSOLES
# open overviews following their live stream, beside none.
#
#   benches/console.sh [JOBS=1000000] [DEAD=100000] [WORKERS=500] [CONSOLES=20]
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-1000000} DEAD=${2:-100000} WORKERS=${3:-500} CONSOLES=${4:-20}
# shellcheck source=benches/fresh-redis.sh
source benches/fresh-redis.sh
RUST_LOG=warn "$bin" bench console --redis-port "$port" --jobs "$JOBS" --dead "$DEAD" \
  --workers "$WORKERS" --consoles "$CONSOLES"
