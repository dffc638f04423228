"""A TF.js graph model -> ONNX, checked against a reference run of the graph itself.

NanoDet reaches us as a TF.js graph model (`model.json` + weights `.bin`, see
models/detect/weights.py) and runs here on onnxruntime: this module reads the graph, runs it
once in NumPy (`Graph.run`: every op written out from TensorFlow's definition, slow but
plain), and writes an ONNX graph of the same ops (`to_onnx`). `convert` returns the ONNX
bytes only when onnxruntime's answer on a fixed input matches the NumPy run: two separate
implementations of each op agreeing is what makes the converted file trustworthy.

Only the ops NanoDet's graph uses are known (a graph with any other is refused, naming it).
Every node whose inputs are all constants is folded in NumPy (onnx-tf left the shape
arithmetic of its Reshapes as SparseToDense and AddV2 on constants), so the ONNX graph
carries plain attributes and initializers and every shape is static. The TF.js layout: the
graph in `modelTopology.node` (TensorFlow NodeDefs as JSON), the constants' bytes in the
`.bin` files in `weightsManifest` order, float16-quantised floats widened back to float32.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

OPSET = 17
# How far onnxruntime's answer may be from the NumPy run, on outputs in 0..1 (sigmoid
# scores) and logits of a few units: float32 sums in another order differ by about 1e-5.
TOLERANCE = 1e-3
MAX_NODES = 100_000


class ConvertError(ValueError):
    """The graph cannot be read or converted, or the converted model does not match it."""


_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "bool": np.bool_}
_TF_TYPES = {"DT_FLOAT": np.float32, "DT_INT32": np.int32, "DT_INT64": np.int64, "DT_BOOL": np.bool_}


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    attr: dict[str, Any]


class Graph:
    """A TF.js graph model: its nodes, constants, input and outputs."""

    def __init__(self, model: dict, weights: bytes):
        try:
            raw = model["modelTopology"]["node"]
            manifest = model["weightsManifest"]
        except (KeyError, TypeError) as err:
            raise ConvertError(f"not a TF.js graph model ({type(err).__name__}: {err})") from None
        if not isinstance(raw, list) or len(raw) > MAX_NODES:
            raise ConvertError(f"modelTopology.node is not a list of at most {MAX_NODES} nodes")
        self.nodes = [Node(str(n["name"]), str(n["op"]), [str(i) for i in n.get("input", [])],
                           dict(n.get("attr", {}))) for n in raw]
        self.consts = _read_weights(manifest, weights)
        self.inputs = [n.name for n in self.nodes if n.op == "Placeholder"]
        if len(self.inputs) != 1:
            raise ConvertError(f"{len(self.inputs)} inputs (Placeholder nodes); one is supported")
        self.input_shape = tuple(int(d.get("size", -1)) for d in
                                 self.node(self.inputs[0]).attr["shape"]["shape"]["dim"])
        if min(self.input_shape) < 1:
            raise ConvertError(f"input shape {self.input_shape} is not static")
        self.outputs = sorted((n.name for n in self.nodes if n.op == "Identity"),
                              key=lambda s: (len(s), s))  # Identity, Identity_1, ... in order
        unknown = sorted({n.op for n in self.nodes} - set(_OPS) - {"Const", "Placeholder"})
        if unknown:
            raise ConvertError(f"ops not supported: {', '.join(unknown)}")
        missing = [n.name for n in self.nodes if n.op == "Const" and n.name not in self.consts]
        if missing:
            raise ConvertError(f"constants without weights: {', '.join(missing[:5])}")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ConvertError(f"no node {name!r}")

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every node's value for input `x`, in NumPy (the reference the ONNX file must match)."""
        values: dict[str, np.ndarray] = {**self.consts, self.inputs[0]: x.astype(np.float32)}
        for n in _ordered(self.nodes):
            if n.name in values:
                continue
            args = [_value(values, i) for i in n.inputs if not i.startswith("^")]
            out = _OPS[n.op].run(args, n.attr)
            if isinstance(out, list):
                for k, v in enumerate(out):
                    values[n.name if k == 0 else f"{n.name}:{k}"] = v
            else:
                values[n.name] = out
        return values


def load(model_json: bytes, weights: bytes) -> Graph:
    try:
        model = json.loads(model_json)
    except ValueError as err:
        raise ConvertError(f"model.json is not JSON ({err})") from None
    return Graph(model, weights)


def _read_weights(manifest: list, data: bytes) -> dict[str, np.ndarray]:
    """The constants, in manifest order over the concatenated `.bin` bytes."""
    out: dict[str, np.ndarray] = {}
    at = 0
    try:
        specs = [w for group in manifest for w in group["weights"]]
        for w in specs:
            shape = tuple(int(d) for d in w["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            q = w.get("quantization")
            if q:
                qtype = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}[q["dtype"]]
                n = count * np.dtype(qtype).itemsize
                raw = np.frombuffer(data, qtype, count, at) if n else np.zeros(0, qtype)
                if qtype is np.float16:
                    arr = raw.astype(np.float32)
                else:  # affine quantisation: value = q * scale + min
                    arr = (raw.astype(np.float32) * float(q["scale"]) + float(q["min"])).astype(np.float32)
            else:
                dtype = _DTYPES[w["dtype"]]
                n = count * np.dtype(dtype).itemsize
                arr = np.frombuffer(data, dtype, count, at) if n else np.zeros(0, dtype)
            if at + n > len(data):
                raise ConvertError(f"weights end before {w['name']} (at byte {at}, needs {n})")
            at += n
            out[str(w["name"])] = arr.reshape(shape).copy()
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, ConvertError):
            raise
        raise ConvertError(f"weightsManifest unreadable ({type(err).__name__}: {err})") from None
    if at != len(data):
        raise ConvertError(f"weights are {len(data)} bytes, the manifest accounts for {at}")
    return out


def _ordered(nodes: list[Node]) -> list[Node]:
    """The nodes in an order where each comes after its inputs (TF.js files need not be)."""
    by_name = {n.name: n for n in nodes}
    done: set[str] = set()
    order: list[Node] = []
    for start in nodes:
        stack = [(start, False)]
        while stack:
            n, expanded = stack.pop()
            if n.name in done:
                continue
            if expanded:
                done.add(n.name)
                order.append(n)
                continue
            stack.append((n, True))
            for i in n.inputs:
                src = by_name.get(i.lstrip("^").split(":")[0])
                if src is None:
                    raise ConvertError(f"{n.name}: input {i!r} is no node")
                if src.name not in done:
                    stack.append((src, False))
    return order


def _value(values: dict[str, np.ndarray], ref: str) -> np.ndarray:
    name, _, k = ref.partition(":")
    key = name if k in ("", "0") else f"{name}:{k}"
    return values[key]


def _s(attr: dict, key: str, default: str = "") -> str:
    return base64.b64decode(attr[key]["s"]).decode() if key in attr else default


def _ints(attr: dict, key: str) -> list[int]:
    return [int(i) for i in attr.get(key, {}).get("list", {}).get("i", [])]


# --------------------------------------------------------------------------- ops
# Each op: how NumPy computes it (`run`) and how it is written in ONNX (`emit`). Layout is
# TensorFlow's (NHWC) throughout; the ONNX ops that want NCHW get a transpose either side,
# which onnxruntime's optimiser cancels between neighbours.


@dataclass(frozen=True)
class Op:
    run: Callable[[list[np.ndarray], dict], Any]
    emit: Callable[["_Emitter", Node, list[str], list[np.ndarray], list[np.ndarray]], None]


def _check_nhwc(attr: dict, node_op: str) -> None:
    if _s(attr, "data_format", "NHWC") != "NHWC":
        raise ConvertError(f"{node_op}: data_format {_s(attr, 'data_format')!r}; only NHWC is supported")
    if _s(attr, "padding", "VALID") != "VALID":
        raise ConvertError(f"{node_op}: padding {_s(attr, 'padding')!r}; only VALID is supported")


def _conv_run(args, attr):
    x, w = args
    _check_nhwc(attr, "Conv2D")
    sh, sw = _ints(attr, "strides")[1:3] or [1, 1]
    dh, dw = (_ints(attr, "dilations") or [1, 1, 1, 1])[1:3]
    kh, kw, ci, co = w.shape
    groups = x.shape[3] // ci
    n, h, wd, _ = x.shape
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, oh, ow, co), np.float64)
    wg = w.reshape(kh, kw, ci, groups, co // groups).astype(np.float64)
    xg = x.reshape(n, h, wd, groups, ci).astype(np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xg[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
            out += np.einsum("nhwgc,cgo->nhwgo", patch, wg[i, j]).reshape(n, oh, ow, co)
    return out.astype(np.float32)


def _maxpool_run(args, attr):
    (x,) = args
    _check_nhwc(attr, "MaxPool")
    kh, kw = _ints(attr, "ksize")[1:3]
    sh, sw = _ints(attr, "strides")[1:3]
    n, h, w, c = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.full((n, oh, ow, c), -np.inf, np.float32)
    for i in range(kh):
        for j in range(kw):
            out = np.maximum(out, x[:, i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw])
    return out


def _resize_run(args, attr):
    x, size = args
    if attr.get("align_corners", {}).get("b") or not attr.get("half_pixel_centers", {}).get("b"):
        raise ConvertError("ResizeBilinear: only half_pixel_centers without align_corners is supported")
    oh, ow = (int(v) for v in size)
    out = x.astype(np.float64)
    for axis, new in ((1, oh), (2, ow)):
        old = out.shape[axis]
        src = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, old - 1)
        t = (src - lo).reshape([-1 if a == axis else 1 for a in range(4)])
        out = np.take(out, lo, axis) * (1 - t) + np.take(out, hi, axis) * t
    return out.astype(np.float32)


def _sparse_to_dense_run(args, attr):
    indices, shape, values, default = args
    out = np.full(tuple(int(s) for s in shape), default, dtype=np.asarray(default).dtype)
    idx = np.asarray(indices).reshape(-1, out.ndim) if out.ndim else np.zeros((0, 0), int)
    for k, v in zip(idx, np.broadcast_to(values, (len(idx),))):
        out[tuple(k)] = v
    return out


def _splitv_run(args, attr):
    x, sizes, axis = args
    sizes = [int(s) for s in sizes]
    axis = int(axis)
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def _pad_run(args, attr):
    x, pads = args[:2]
    value = float(args[2]) if len(args) > 2 else 0.0
    return np.pad(x, [(int(a), int(b)) for a, b in pads], constant_values=value)


_OPS: dict[str, Op] = {}


def _op(name: str, run: Callable, emit: Callable) -> None:
    _OPS[name] = Op(run, emit)


# --------------------------------------------------------------------------- ONNX


class _Emitter:
    """Builds the ONNX graph as the nodes are walked; constant-only nodes are folded."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: dict[str, Any] = {}
        self.count = 0

    def const(self, value: np.ndarray, hint: str) -> str:
        name = f"{hint}__c{self.count}"
        self.count += 1
        self.inits[name] = self.numpy_helper.from_array(np.asarray(value), name)
        return name

    def add(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.nodes.append(self.helper.make_node(op, inputs, outputs, **attrs))

    def tmp(self, hint: str) -> str:
        self.count += 1
        return f"{hint}__t{self.count}"

    def nchw(self, op: str, x: str, out: str, extra: list[str] | None = None, **attrs) -> None:
        """`op` on NCHW, wrapped to read and write NHWC."""
        a, b = self.tmp(out), self.tmp(out)
        self.add("Transpose", [x], [a], perm=[0, 3, 1, 2])
        self.add(op, [a, *(extra or [])], [b], **attrs)
        self.add("Transpose", [b], [out], perm=[0, 2, 3, 1])


def _emit_conv(e: _Emitter, n: Node, names, args, outs):
    x, w = args
    kh, kw, ci, co = w.shape
    strides = _ints(n.attr, "strides")[1:3] or [1, 1]
    dil = (_ints(n.attr, "dilations") or [1, 1, 1, 1])[1:3]
    wname = e.const(np.ascontiguousarray(w.transpose(3, 2, 0, 1)).astype(np.float32), n.name + "_w")
    e.nchw("Conv", names[0], n.name, [wname], kernel_shape=[kh, kw], strides=strides, dilations=dil,
           group=x.shape[3] // ci, pads=[0, 0, 0, 0])


def _emit_maxpool(e: _Emitter, n: Node, names, args, outs):
    e.nchw("MaxPool", names[0], n.name, kernel_shape=_ints(n.attr, "ksize")[1:3],
           strides=_ints(n.attr, "strides")[1:3], pads=[0, 0, 0, 0])


def _emit_resize(e: _Emitter, n: Node, names, args, outs):
    x, size = args
    sizes = e.const(np.array([x.shape[0], x.shape[3], int(size[0]), int(size[1])], np.int64), n.name + "_sizes")
    e.nchw("Resize", names[0], n.name, ["", "", sizes], mode="linear",
           coordinate_transformation_mode="half_pixel")


def _emit_pad(e: _Emitter, n: Node, names, args, outs):
    pads = np.asarray(args[1], np.int64)
    value = float(args[2]) if len(args) > 2 else 0.0
    p = e.const(np.concatenate([pads[:, 0], pads[:, 1]]), n.name + "_pads")
    v = e.const(np.array(value, np.float32), n.name + "_value")
    e.add("Pad", [names[0], p, v], [n.name], mode="constant")


def _emit_transpose(e: _Emitter, n: Node, names, args, outs):
    e.add("Transpose", [names[0]], [n.name], perm=[int(p) for p in args[1]])


def _emit_reshape(e: _Emitter, n: Node, names, args, outs):
    shape = e.const(np.array(outs[0].shape, np.int64), n.name + "_shape")  # static: the reference's
    e.add("Reshape", [names[0], shape], [n.name])


def _emit_concat(e: _Emitter, n: Node, names, args, outs):
    axis = int(args[-1])
    e.add("Concat", names[:-1], [n.name], axis=axis if axis >= 0 else axis + args[0].ndim)


def _emit_splitv(e: _Emitter, n: Node, names, args, outs):
    sizes = e.const(np.array([o.shape[int(args[2])] for o in outs], np.int64), n.name + "_split")
    e.add("Split", [names[0], sizes], [n.name] + [f"{n.name}:{k}" for k in range(1, len(outs))],
          axis=int(args[2]))


def _emit_simple(onnx_op: str, **fixed):
    def emit(e: _Emitter, n: Node, names, args, outs):
        attrs = dict(fixed)
        if onnx_op == "LeakyRelu":
            attrs["alpha"] = float(n.attr.get("alpha", {}).get("f", 0.2))
        e.add(onnx_op, names, [n.name], **attrs)
    return emit


def _no_emit(e, n, names, args, outs):
    raise ConvertError(f"{n.name} ({n.op}) depends on the input; only constant ones are supported")


_op("Conv2D", _conv_run, _emit_conv)
_op("MaxPool", _maxpool_run, _emit_maxpool)
_op("ResizeBilinear", _resize_run, _emit_resize)
_op("Pad", _pad_run, _emit_pad)
_op("PadV2", _pad_run, _emit_pad)
_op("Transpose", lambda a, _: np.transpose(a[0], [int(p) for p in a[1]]), _emit_transpose)
_op("Reshape", lambda a, _: np.reshape(a[0], [int(s) for s in a[1]]), _emit_reshape)
_op("ConcatV2", lambda a, _: np.concatenate(a[:-1], axis=int(a[-1])), _emit_concat)
_op("SplitV", _splitv_run, _emit_splitv)
_op("Add", lambda a, _: np.add(a[0], a[1]), _emit_simple("Add"))
_op("AddV2", lambda a, _: np.add(a[0], a[1]), _emit_simple("Add"))
_op("LeakyRelu", lambda a, attr: np.where(a[0] >= 0, a[0], a[0] * np.float32(attr.get("alpha", {}).get(
    "f", 0.2))).astype(a[0].dtype), _emit_simple("LeakyRelu"))
_op("Sigmoid", lambda a, _: (1 / (1 + np.exp(-a[0].astype(np.float64)))).astype(np.float32),
    _emit_simple("Sigmoid"))
_op("Identity", lambda a, _: a[0], _emit_simple("Identity"))
_op("SparseToDense", _sparse_to_dense_run, _no_emit)


def to_onnx(graph: Graph, reference: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """The ONNX model of `graph`: shapes and folded constants from `reference` (a `run`)."""
    import onnx
    from onnx import TensorProto, helper

    e = _Emitter()
    constant = set(graph.consts)
    for n in _ordered(graph.nodes):
        if n.op in ("Const", "Placeholder"):
            continue
        refs = [i for i in n.inputs if not i.startswith("^")]
        srcs = [r.split(":")[0] for r in refs]
        if all(s in constant for s in srcs):
            constant.add(n.name)  # folded: its value is the reference's
            continue
        names = []
        for r, s in zip(refs, srcs):
            name = r if ":" in r and not r.endswith(":0") else s
            if s in constant and s != graph.inputs[0]:
                if name not in e.inits:
                    e.inits[name] = e.numpy_helper.from_array(np.asarray(_value(reference, r)), name)
            names.append(name)
        args = [_value(reference, r) for r in refs]
        outs = [reference[n.name]] + [reference[k] for k in sorted(
            (k for k in reference if k.startswith(n.name + ":")), key=lambda k: int(k.rsplit(":", 1)[1]))]
        _OPS[n.op].emit(e, n, names, args, outs)
    # Initialisers only some op reads as data (not the ones folded into attributes).
    used = {i for node in e.nodes for i in node.input}
    inits = [t for name, t in e.inits.items() if name in used]
    x = helper.make_tensor_value_info(graph.inputs[0], TensorProto.FLOAT, list(graph.input_shape))
    ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(reference[o].shape)) for o in graph.outputs]
    model = helper.make_model(helper.make_graph(e.nodes, "tfjs", [x], ys, inits),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gen4gen.tfjs")
    model.ir_version = 8  # what onnxruntime 1.18 (the oldest we allow) reads
    for key, value in sorted((metadata or {}).items()):
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def probe(shape: tuple[int, ...]) -> np.ndarray:
    """The fixed input both runs are compared on: smooth waves plus a seeded noise, in the
    range a normalised photo has (about -2..2)."""
    rng = np.random.default_rng(27)
    grid = np.indices(shape, dtype=np.float32).sum(axis=0)
    return (np.sin(grid / 7.0) + 0.5 * rng.standard_normal(shape)).astype(np.float32)


def convert(model_json: bytes, weights: bytes, metadata: dict[str, str] | None = None,
            tolerance: float = TOLERANCE) -> tuple[bytes, float]:
    """(the ONNX bytes, the largest difference from the reference run): raises ConvertError
    when the graph is not one we can convert or onnxruntime's answer differs by more than
    `tolerance` on any output."""
    import onnxruntime as ort

    graph = load(model_json, weights)
    x = probe(graph.input_shape)
    reference = graph.run(x)
    data = to_onnx(graph, reference, metadata)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    got = session.run(graph.outputs, {graph.inputs[0]: x})
    worst = 0.0
    for name, value in zip(graph.outputs, got):
        want = reference[name]
        if value.shape != want.shape:
            raise ConvertError(f"output {name}: ONNX shape {value.shape}, the graph's {want.shape}")
        worst = max(worst, float(np.abs(value - want).max()))
    if not np.isfinite(worst) or worst > tolerance:
        raise ConvertError(f"the converted model differs from the graph by {worst:.3g} (> {tolerance}) "
                           "on the fixed input; nothing stored")
    return data, worst
