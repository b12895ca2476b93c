"""Converts an UpscalerJS ESRGAN model (a TensorFlow.js Keras layers model, MIT) to ONNX.

usage: upscalerjs_to_onnx.py MODEL_DIR OUT.onnx

MODEL_DIR holds `model.json` and its weight shards, as the npm packages `@upscalerjs/esrgan-*`
ship them (e.g. `models/x4/` of `@upscalerjs/esrgan-thick`; models/fetch.sh does this). The
networks are idealo's RDN and RRDN: odd-sized convolutions with 'same' padding, ReLU,
concatenations, additions, residual scaling and a nearest-neighbour or pixel-shuffle
upsampling. Each Keras layer becomes one ONNX node; Keras's channels-last tensors become
ONNX's channels-first, so kernels go from HWIO to OIHW and concatenations from axis 3 to 1.

The ONNX model takes `input`, float32 [1, 3, H, W] (RGB), and gives `output`, float32
[1, 3, sH, sW], in the network's own range, clamped by the caller: 0..1 for UpscalerJS's RRDN
models (esrgan-thick), 0..255 for its RDN ones (esrgan-slim, esrgan-medium). Any other layer
type, and any quantization but TensorFlow.js's uint8/uint16 affine and float16, is refused.
Needs `numpy` and `onnx` (PyPI).
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def load_weights(model_dir, manifest):
    weights = {}
    for group in manifest:
        blob = b"".join(open(os.path.join(model_dir, p), "rb").read() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            if w.get("dtype") != "float32":
                raise SystemExit(f"weight {w['name']}: only float32 weights are supported")
            count = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            if q is None:
                arr = np.frombuffer(blob, dtype="<f4", count=count, offset=offset)
                offset += count * 4
            elif q["dtype"] in ("uint8", "uint16"):
                # TensorFlow.js's affine quantization: value = stored * scale + min
                dt = "<u1" if q["dtype"] == "uint8" else "<u2"
                stored = np.frombuffer(blob, dtype=dt, count=count, offset=offset)
                arr = (stored.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])).astype(np.float32)
                offset += count * stored.itemsize
            elif q["dtype"] == "float16":
                arr = np.frombuffer(blob, dtype="<f2", count=count, offset=offset).astype(np.float32)
                offset += count * 2
            else:
                raise SystemExit(f"weight {w['name']}: quantization {q['dtype']} is not supported")
            weights[w["name"]] = arr.reshape(w["shape"])
        if offset != len(blob):
            raise SystemExit(f"weight shards hold {len(blob)} bytes, the manifest {offset}")
    return weights


def convert(model_dir, out):
    model = json.load(open(os.path.join(model_dir, "model.json")))
    if model.get("format") != "layers-model":
        raise SystemExit("not a TensorFlow.js layers model")
    config = model["modelTopology"]["model_config"]["config"]
    weights = load_weights(model_dir, model["weightsManifest"])
    nodes, inits = [], []
    names = {}  # Keras layer name -> ONNX tensor name
    for layer in config["layers"]:
        kind, name, c = layer["class_name"], layer["config"]["name"], layer["config"]
        inputs = [names[inb[0]] for inb in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        if kind == "InputLayer":
            names[name] = "input"
            continue
        out_name = name
        if kind == "Conv2D":
            kh, kw = c["kernel_size"]
            # ('valid' and 'same' agree for a 1x1 kernel)
            same = c["padding"] == "same" or (kh, kw) == (1, 1)
            if c["strides"] != [1, 1] or not same or c.get("dilation_rate", [1, 1]) != [1, 1] or kh % 2 == 0 or kw % 2 == 0:
                raise SystemExit(f"{name}: only stride 1, 'same' padding, odd kernels and no dilation")
            kernel = weights[f"{name}/kernel"].transpose(3, 2, 0, 1).copy()
            inits.append(numpy_helper.from_array(kernel, f"{name}.w"))
            conv_in = inputs + [f"{name}.w"]
            if c.get("use_bias", True):
                inits.append(numpy_helper.from_array(weights[f"{name}/bias"].copy(), f"{name}.b"))
                conv_in.append(f"{name}.b")
            act = c.get("activation", "linear")
            conv_out = out_name if act == "linear" else f"{name}.pre"
            nodes.append(helper.make_node("Conv", conv_in, [conv_out], name=name, kernel_shape=[kh, kw],
                                          pads=[kh // 2, kw // 2, kh // 2, kw // 2]))
            if act == "relu":
                nodes.append(helper.make_node("Relu", [conv_out], [out_name], name=f"{name}.relu"))
            elif act != "linear":
                raise SystemExit(f"{name}: activation {act!r} is not supported")
        elif kind == "Activation":
            if c["activation"] != "relu":
                raise SystemExit(f"{name}: activation {c['activation']!r} is not supported")
            nodes.append(helper.make_node("Relu", inputs, [out_name], name=name))
        elif kind == "Concatenate":
            if c["axis"] not in (3, -1):
                raise SystemExit(f"{name}: only channel concatenation")
            nodes.append(helper.make_node("Concat", inputs, [out_name], name=name, axis=1))
        elif kind == "Add":
            nodes.append(helper.make_node("Sum", inputs, [out_name], name=name))
        elif kind == "MultiplyBeta":
            # UpscalerJS's residual scaling layer: its input times 0.2
            inits.append(numpy_helper.from_array(np.array(0.2, dtype=np.float32), f"{name}.beta"))
            nodes.append(helper.make_node("Mul", [inputs[0], f"{name}.beta"], [out_name], name=name))
        elif kind.startswith("PixelShuffle"):
            # tf.depthToSpace in NHWC orders channels as ONNX's DepthToSpace 'DCR' does
            scale = int(kind[len("PixelShuffle"):].rstrip("x"))
            nodes.append(helper.make_node("DepthToSpace", inputs, [out_name], name=name, blocksize=scale, mode="DCR"))
        elif kind == "UpSampling2D":
            if c.get("interpolation", "nearest") != "nearest":
                raise SystemExit(f"{name}: only nearest upsampling")
            sh, sw = c["size"]
            inits.append(numpy_helper.from_array(np.array([1, 1, sh, sw], dtype=np.float32), f"{name}.scales"))
            # Keras repeats each pixel: ONNX's 'asymmetric' coordinates with 'floor' do the same.
            nodes.append(helper.make_node("Resize", [inputs[0], "", f"{name}.scales"], [out_name], name=name,
                                          mode="nearest", coordinate_transformation_mode="asymmetric",
                                          nearest_mode="floor"))
        else:
            raise SystemExit(f"{name}: layer type {kind} is not supported")
        names[name] = out_name
    last = names[config["output_layers"][0][0]]
    nodes.append(helper.make_node("Identity", [last], ["output"], name="output"))
    graph = helper.make_graph(
        nodes, "esrgan-slim-x4",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "H", "W"])],
        inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="gantry upscalerjs_to_onnx.py")
    m.ir_version = 7
    onnx.checker.check_model(m)
    onnx.save(m, out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    convert(sys.argv[1], sys.argv[2])
