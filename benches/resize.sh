#!/usr/bin/env bash
# The upscale path (fast_image_resize, alpha premultiplied) against the `image` crate's own
# Lanczos3 resize on a 1024x1024 -> 2048x2048 RGBA image, side by side in one run (medians and
# their ratio); then thumbnails per second on one core.
#
#   benches/resize.sh [ROUNDS=5] [THUMB_SECS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin gantry
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/gantry
"$bin" bench resize --rounds "${1:-5}" --thumb-secs "${2:-3}"
