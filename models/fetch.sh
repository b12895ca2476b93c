#!/usr/bin/env bash
# Fetches the super-resolution model from npm and converts it to ONNX, once (issue 22;
# docs/design/neural-upscale.md). Idempotent: does nothing when the model is already there.
#
#   models/fetch.sh [OUT_DIR=.gantry/models]
#
# What it does:
#   1. `npm pack @upscalerjs/esrgan-thick@1.0.0` (MIT, Kevin Scott; weights of idealo's RRDN)
#      into a scratch folder; checks the tarball's SHA-512 against the one pinned here.
#   2. A Python virtual environment with numpy, onnx, onnxruntime and Pillow (PyPI), in
#      OUT_DIR/venv; ONNX Runtime's shared library comes with the onnxruntime wheel
#      (OUT_DIR/venv/.../onnxruntime/capi/libonnxruntime.so.*), for the worker to load.
#   3. models/upscalerjs_to_onnx.py turns models/x4 into OUT_DIR/esrgan-thick-x4.onnx.
#   4. Checks the conversion: the ONNX model on the package's own fixture.png must give the
#      package's own samples/4x/result.png (what UpscalerJS produced) within 1 per channel.
#   5. Copies the licence beside the model, and the package's fixture and 4x sample (the tests
#      check the worker's tiled inference against them).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.gantry/models}
MODEL=$OUT/esrgan-thick-x4.onnx
PKG=@upscalerjs/esrgan-thick@1.0.0
# The tarball's digest as published (`npm view @upscalerjs/esrgan-thick@1.0.0 dist.integrity`).
INTEGRITY=sha512-Xt7LAEa1WYVdU8teye1A2J3T2ylb3ihlU/x01x1ieM7zZh5FzTll6fwmeUC82mkztWloGZM65KdSEWOmhlXOdw==
if [[ -f $MODEL && -f $OUT/esrgan-thick-x4-sample.png ]] &&
  compgen -G "$OUT/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*" >/dev/null; then
  echo "fetch: $MODEL is there" >&2
  exit 0
fi
mkdir -p "$OUT"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && npm pack --silent "$PKG" >/dev/null)
tgz=$(ls "$scratch"/*.tgz)
got="sha512-$(python3 -c 'import base64,hashlib,sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1],"rb").read()).digest()).decode())' "$tgz")"
if [[ $got != "$INTEGRITY" ]]; then
  echo "fetch: $PKG: the tarball's digest $got is not the pinned $INTEGRITY" >&2
  exit 1
fi
tar xzf "$tgz" -C "$scratch"
if [[ ! -x $OUT/venv/bin/python ]]; then python3 -m venv "$OUT/venv"; fi
"$OUT/venv/bin/python" -c 'import numpy, onnx, onnxruntime, PIL' 2>/dev/null ||
  "$OUT/venv/bin/pip" install -q numpy onnx onnxruntime pillow
"$OUT/venv/bin/python" models/upscalerjs_to_onnx.py "$scratch/package/models/x4" "$MODEL.part"
"$OUT/venv/bin/python" - "$MODEL.part" "$scratch/package/assets/fixture.png" "$scratch/package/assets/samples/4x/result.png" <<'PY'
import sys
import numpy as np
import onnxruntime as ort
from PIL import Image
model, fixture, expected = sys.argv[1:4]
# This network (RRDN) takes and gives 0..1.
x = np.asarray(Image.open(fixture).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None] / 255
y = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0][0]
y = np.clip(np.round(y.transpose(1, 2, 0) * 255), 0, 255).astype(int)
r = np.asarray(Image.open(expected).convert("RGB")).astype(int)
if y.shape != r.shape or np.abs(y - r).max() > 1:
    sys.exit(f"fetch: the converted model does not reproduce UpscalerJS's sample (shape {y.shape} vs {r.shape})")
print(f"fetch: the converted model reproduces UpscalerJS's own 4x sample (max difference {np.abs(y - r).max()})", file=sys.stderr)
PY
mv "$MODEL.part" "$MODEL"
cp "$scratch/package/LICENSE" "$OUT/esrgan-thick-LICENSE"
cp "$scratch/package/assets/fixture.png" "$OUT/esrgan-thick-fixture.png"
cp "$scratch/package/assets/samples/4x/result.png" "$OUT/esrgan-thick-x4-sample.png"
echo "fetch: $MODEL ($(du -h "$MODEL" | cut -f1)); ONNX Runtime: $(ls "$OUT"/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)" >&2
