#!/usr/bin/env bash
# The transcode path (ffmpeg-next in process) against the ffmpeg CLI with identical settings on
# one input made by lavfi, interleaved rounds, medians and their ratio (goal <= 1.05).
#
#   benches/transcode.sh [SECS=10] [ROUNDS=3] [PRESET=veryfast] [HEIGHT=720]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin gantry
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/gantry
"$bin" bench transcode --secs "${1:-10}" --rounds "${2:-3}" --preset "${3:-veryfast}" --height "${4:-720}"
