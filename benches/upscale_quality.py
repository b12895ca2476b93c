"""The super-resolution model against Lanczos3, side by side in one run (issue 22).

usage: .gantry/models/venv/bin/python benches/upscale_quality.py [MODEL=.gantry/models/esrgan-thick-x4.onnx]
(`models/fetch.sh` makes the model and that environment; this adds scikit-image to it for its
sample photos.)

Each photo is cut to a multiple of 4, downscaled 4x (bicubic, then box), and upscaled back by
the model (ONNX Runtime, CPU) and by Pillow's Lanczos3. Prints PSNR and SSIM against the
original for both, their differences, and the model's speed (128x128 input tiles per second,
output megapixels per second). This measures the model, through Python; the worker's own path
gets its bench when it runs the model (docs/design/neural-upscale.md).
"""
import subprocess
import sys
import time

try:
    from skimage import data
    from skimage.metrics import peak_signal_noise_ratio as psnr, structural_similarity as ssim
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "scikit-image"])
    from skimage import data
    from skimage.metrics import peak_signal_noise_ratio as psnr, structural_similarity as ssim
import numpy as np
import onnxruntime as ort
from PIL import Image

model = sys.argv[1] if len(sys.argv) > 1 else ".gantry/models/esrgan-thick-x4.onnx"
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def upscale(img):
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None] / 255
    y = session.run(None, {"input": x})[0][0].transpose(1, 2, 0)
    return np.clip(np.round(y * 255), 0, 255).astype(np.uint8)


# scikit-image's sample photos: astronaut (NASA, public domain), coffee and chelsea (CC0)
wins = 0
rows = []
for down in ("BICUBIC", "BOX"):
    for name in ("astronaut", "coffee", "chelsea"):
        hr = Image.fromarray(getattr(data, name)()).convert("RGB")
        w, h = hr.width // 4 * 4, hr.height // 4 * 4
        hr = hr.crop((0, 0, w, h))
        lr = hr.resize((w // 4, h // 4), getattr(Image, down))
        ref = np.asarray(hr)
        lz = np.asarray(lr.resize((w, h), Image.LANCZOS))
        sr = upscale(lr)
        p_l, p_m = psnr(ref, lz), psnr(ref, sr)
        s_l, s_m = ssim(ref, lz, channel_axis=2), ssim(ref, sr, channel_axis=2)
        wins += int(p_m > p_l) + int(s_m > s_l)
        rows.append((down.lower(), name, f"{w}x{h}", p_l, p_m, s_l, s_m))
print("downscale  photo       size      PSNR lanczos3  model   diff   SSIM lanczos3  model   diff")
for d, n, size, p_l, p_m, s_l, s_m in rows:
    print(f"{d:10} {n:11} {size:9} {p_l:13.2f} {p_m:6.2f} {p_m - p_l:+6.2f} {s_l:14.4f} {s_m:6.4f} {s_m - s_l:+7.4f}")
x = np.random.default_rng(1).random((1, 3, 128, 128), dtype=np.float32)
session.run(None, {"input": x})
t, n = time.perf_counter(), 3
for _ in range(n):
    session.run(None, {"input": x})
per = (time.perf_counter() - t) / n
print(f"model wins {wins} of {2 * len(rows)} comparisons; CPU ({ort.get_device()}): {1 / per:.2f} tiles/s of 128x128, "
      f"{512 * 512 / per / 1e6:.3f} output MP/s")
