#!/usr/bin/env bash
# PDQ hashing vs the reference C++ (the `pdqhash` PyPI package wraps it), on 1024x1024 images,
# one core each, interleaved; then the multi-index over 10 million hashes vs a linear scan.
#
#   benches/pdq.sh [IMAGES=200] [HASHES=10000000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin gantry
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
venv="$target/bench-venv-pdq"
if ! "$venv/bin/python" -c 'import pdqhash, numpy' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet pdqhash numpy
fi
"$target/release/gantry" bench pdq --python "$venv/bin/python" --images "${1:-200}"
"$target/release/gantry" bench pdq-index --hashes "${2:-10000000}"
