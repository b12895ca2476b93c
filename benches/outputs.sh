#!/usr/bin/env bash
# What sealing outputs at rest costs (store/src/sealed.rs): one directory store, plain beside
# sealed with a data key ring, in one run: a VIDEO_MIB output written (streamed in parts), read
# whole, read by RANGES scattered 64 KiB ranges, and IMAGES images of 256 KiB written and read;
# each one's throughput and the sealed/plain ratio.
#
#   benches/outputs.sh [VIDEO_MIB=256] [RANGES=1000] [IMAGES=200]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin gantry
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/gantry
RUST_LOG=warn "$bin" bench outputs --video-mib "${1:-256}" --ranges "${2:-1000}" --images "${3:-200}"
