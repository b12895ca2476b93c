#!/usr/bin/env bash
# One user's data export at scale, on one fresh redis-server: JOBS jobs of one user (one in
# OUTPUTS_EVERY succeeded with a 4 KiB output), exported by the export job's own code (the tar
# streamed to disk, a page of the user's index at a time) beside a naive exporter that reads
# every record one by one and holds every document in memory; for JOBS/10 and JOBS: time,
# jobs per second, archive MiB per second and peak memory, and the ratios.
#
#   benches/export.sh [JOBS=100000] [OUTPUTS_EVERY=100]
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-100000} EVERY=${2:-100}
# shellcheck source=benches/fresh-redis.sh
source benches/fresh-redis.sh
RUST_LOG=warn "$bin" bench export --redis-port "$port" --jobs "$JOBS" --outputs-every "$EVERY"
