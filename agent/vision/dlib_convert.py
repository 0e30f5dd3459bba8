"""The offline converter: dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) to ONNX.

Run once per .dat, in a child process (`python -m agent.vision.dlib_convert DAT ENGINES_DIR`) the first time
the model is used, or by `face-agent models convert`; the running agent needs only agent/vision/dlib_resnet.py.

The .dat is dlib's own binary serialization of `anet_type` from dlib/examples/dnn_face_recognition_ex.cpp.
dlib's stream is type-driven: it stores each layer's parameters but not which tag a skip or add_prev layer
refers to, so we read it against the same type (`ANET_TYPE` below, top layer first, as in the C++ type)
and check every layer header, shape and hyper-parameter we read against it; anything else is a
`DlibFormatError` naming the byte offset.

The graph it writes (names, shapes, the normalisation kept outside it) is described in
agent/vision/dlib_resnet.py.

Layer semantics reproduced (dlib/dnn/layers.h, cpu_dlib.cpp):
- con_: cross-correlation, zero padding (default padding: stride != 1 -> 0, else size/2), + bias;
- affine_: per-channel (CONV_MODE) or per-element (FC_MODE) x * gamma + beta;
- relu_: max(0, x);
- max_pool_/avg_pool_: window left/top = out * stride - padding, output 1 + (in + 2 pad - win) / stride,
  windows clipped to the image (average over the clipped window only); size 0 = the whole plane;
- add_prev_: output shape = per-dimension max of both inputs; each input contributes where it exists
  and zero elsewhere (dlib's tt::add for mismatched tensors) -> zero-pad at the end, then Add;
- fc_ (no bias): flatten (k, nr, nc) in that order, times the (num_inputs x num_outputs) weights;
- loss_metric_: the output tensor is the descriptor as is.

Conversion is deterministic (fixed names, fixed IR version, raw little-endian initialisers), so the
sha256 of the output for a given .dat is stable; `KNOWN_CONVERSIONS` holds it for the published model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.files import atomic_write, file_sha256
from agent.vision import dlib_resnet
from agent.vision.dlib_resnet import (
    CHIP_SIZE,
    CONVERTER_VERSION,
    DAT_NAME,
    DIM,
    INPUT_NAME,
    INPUT_SCALE,
    IR_VERSION,
    OPSET,
    OUTPUT_NAME,
    DlibFormatError,
    cached_onnx_path,
    expected_hashes,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# the network type, top layer first (dnn_face_recognition_ex.cpp)


def _block(n: int, stride: int) -> list[tuple]:
    # block<N,BN,stride,SUBNET> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return [("affine",), ("con", n, 3, 3, 1, 1), ("relu",), ("affine",), ("con", n, 3, 3, stride, stride)]


def _ares(n: int) -> list[tuple]:
    # ares<N,S> = relu<add_prev1<block<N,affine,1,tag1<S>>>>
    return [("relu",), ("add_prev", 1), *_block(n, 1), ("tag", 1)]


def _ares_down(n: int) -> list[tuple]:
    # ares_down<N,S> = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<S>>>>>>>
    return [("relu",), ("add_prev", 2), ("avg_pool", 2, 2, 2, 2), ("skip", 1), ("tag", 2),
            *_block(n, 2), ("tag", 1)]


ANET_TYPE: list[tuple] = [
    ("loss_metric",),
    ("fc", DIM),
    ("avg_pool", 0, 0, 1, 1),  # avg_pool_everything
    *_ares_down(256),  # alevel0
    *_ares(256), *_ares(256), *_ares_down(256),  # alevel1
    *_ares(128), *_ares(128), *_ares_down(128),  # alevel2
    *_ares(64), *_ares(64), *_ares(64), *_ares_down(64),  # alevel3
    *_ares(32), *_ares(32), *_ares(32),  # alevel4
    ("max_pool", 3, 3, 2, 2),
    ("relu",),
    ("affine",),
    ("con", 32, 7, 7, 2, 2),
    ("input", CHIP_SIZE),
]

COMPUTATIONAL = {"con", "affine", "relu", "add_prev", "avg_pool", "max_pool", "fc"}


def _default_padding(window: int, stride: int) -> int:
    return 0 if stride != 1 else window // 2


# ----------------------------------------------------------------------------------------------------
# dlib's serialization primitives (dlib/serialize.h, float_details.h, dnn/tensor.h)


class _Reader:
    def __init__(self, data: bytes, name: str):
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, message: str, at: int | None = None) -> DlibFormatError:
        where = self.pos if at is None else at
        return DlibFormatError(f"{self.name}: not a usable dlib face-recognition ResNet: {message} "
                               f"(byte {where} of {len(self.data)})")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"file ends early: {n} more bytes needed")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int_(self, what: str = "integer") -> int:
        """dlib integer: control byte (0x80 = negative, low 4 bits = byte count), then LE magnitude."""
        start = self.pos
        control = self.take(1)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            raise self.fail(f"bad {what}: control byte 0x{control:02x}", start)
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def uint(self, what: str = "integer") -> int:
        start = self.pos
        value = self.int_(what)
        if value < 0:
            raise self.fail(f"bad {what}: negative value {value}", start)
        return value

    def float_(self, what: str = "number") -> float:
        """dlib float: mantissa (int64) then exponent (int16), value = mantissa * 2**exponent."""
        start = self.pos
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail(f"bad {what}: old text float format is not supported", start)
        mantissa = self.int_(what)
        exponent = self.int_(what)
        if not -(2 ** 63) <= mantissa < 2 ** 63 or not -(2 ** 15) <= exponent < 2 ** 15:
            raise self.fail(f"bad {what}: mantissa/exponent out of range", start)
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent >= 32002:
            return math.nan
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise self.fail(f"bad {what}: value out of range", start) from None

    def bool_(self, what: str = "flag") -> bool:
        start = self.pos
        ch = self.take(1)
        if ch not in (b"0", b"1"):
            raise self.fail(f"bad {what}: {ch!r} is not '0' or '1'", start)
        return ch == b"1"

    def string(self, what: str = "layer name") -> str:
        start = self.pos
        size = self.uint(what)
        if size > 256:
            raise self.fail(f"bad {what}: length {size}", start)
        raw = self.take(size)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"bad {what}: not text", start) from None

    def expect(self, *names: str) -> str:
        start = self.pos
        found = self.string()
        if found not in names:
            raise self.fail(f"expected layer {' or '.join(map(repr, names))}, found {found!r}", start)
        return found

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        start = self.pos
        v = self.int_(f"{what} version")
        if v not in allowed:
            expected = " or ".join(map(str, allowed))
            raise self.fail(f"unexpected {what} version {v} (expected {expected})", start)
        return v

    def tensor(self, what: str = "tensor") -> np.ndarray:
        """resizable_tensor -> float32 array (n, k, nr, nc)."""
        start = self.pos
        version = self.version((1, 2), what)
        if version == 2:
            n, k, nr, nc = (self.uint(what) for _ in range(4))
        else:
            n, nr, nc, k = (self.uint(what) for _ in range(4))
        count = n * k * nr * nc
        if version == 2:
            if count * 4 > len(self.data) - self.pos:
                raise self.fail(f"file ends early inside {what} of {n}x{k}x{nr}x{nc} floats", start)
            values = np.frombuffer(self.take(count * 4), dtype="<f4").astype(np.float32)
        else:
            if count > len(self.data) - self.pos:
                raise self.fail(f"file ends early inside {what} of {n}x{k}x{nr}x{nc} floats", start)
            values = np.array([self.float_(what) for _ in range(count)], dtype=np.float32)
        if not np.isfinite(values).all():
            raise self.fail(f"{what} holds NaN or infinite values", start)
        return values.reshape(n, k, nr, nc)

    def alias_tensor(self, what: str = "alias tensor") -> tuple[int, int, int, int]:
        self.version((1,), what)
        return tuple(self.uint(what) for _ in range(4))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------
# parsing


@dataclass
class Layer:
    kind: str
    spec: tuple
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    """The parsed network: layers top first (as ANET_TYPE), plus the input normalisation."""

    layers: list[Layer]
    mean_rgb: tuple[float, float, float]
    input_size: int
    loss: dict[str, float]


def _read_details(r: _Reader, layer: Layer) -> None:
    kind, spec = layer.kind, layer.spec
    a = layer.attrs
    if kind == "con":
        start = r.pos
        r.expect("con_4")
        params = r.tensor("con_ params")
        n, nr, nc = r.int_(), r.int_(), r.int_()
        sy, sx, py, px = r.int_(), r.int_(), r.int_(), r.int_()
        filt = r.alias_tensor("con_ filters")
        bias = r.alias_tensor("con_ biases")
        for _ in range(4):
            r.float_("learning rate multiplier")
        want_n, want_nr, want_nc, want_sy, want_sx = spec[1:]
        if (n, nr, nc, sy, sx) != (want_n, want_nr, want_nc, want_sy, want_sx):
            raise r.fail(f"con_ is {n} filters {nr}x{nc} stride {sy},{sx}; the network type has "
                         f"{want_n} filters {want_nr}x{want_nc} stride {want_sy},{want_sx}", start)
        if (py, px) != (_default_padding(nr, sy), _default_padding(nc, sx)):
            raise r.fail(f"con_ padding {py},{px} differs from dlib's default for this layer", start)
        if filt[0] != n or filt[2:] != (nr, nc) or bias != (1, n, 1, 1):
            raise r.fail(f"con_ filter/bias shapes {filt}/{bias} do not fit {n} filters {nr}x{nc}", start)
        k = filt[1]
        if params.size != n * k * nr * nc + n:
            raise r.fail(f"con_ has {params.size} parameters, expected {n * k * nr * nc + n}", start)
        flat = params.reshape(-1)
        a.update(weight=flat[:n * k * nr * nc].reshape(n, k, nr, nc), bias=flat[n * k * nr * nc:].copy(),
                 stride=(sy, sx), pad=(py, px), in_channels=k)
    elif kind == "affine":
        start = r.pos
        found = r.expect("affine_", "bn_con2", "bn_fc2")
        if found != "affine_":
            raise r.fail(f"{found}: a network saved in training mode (batch norm) is not supported; "
                         "use the inference network (affine layers)", start)
        params = r.tensor("affine_ params")
        gamma = r.alias_tensor("affine_ gamma")
        beta = r.alias_tensor("affine_ beta")
        mode = r.int_("affine_ mode")
        size = gamma[0] * gamma[1] * gamma[2] * gamma[3]
        if gamma != beta or params.size != 2 * size or mode not in (0, 1):
            raise r.fail(f"affine_ with gamma {gamma}, beta {beta}, {params.size} parameters, mode {mode}",
                         start)
        flat = params.reshape(-1)
        a.update(gamma=flat[:size].reshape(gamma[1:]), beta=flat[size:].reshape(gamma[1:]),
                 mode="conv" if mode == 0 else "fc")
    elif kind == "relu":
        r.expect("relu_")
    elif kind == "add_prev":
        r.expect("add_prev_")
    elif kind in ("avg_pool", "max_pool"):
        start = r.pos
        r.expect(f"{kind}_2")
        nr, nc = r.int_(), r.int_()
        sy, sx, py, px = r.int_(), r.int_(), r.int_(), r.int_()
        want_nr, want_nc, want_sy, want_sx = spec[1:]
        want = (want_nr, want_nc, want_sy, want_sx, _default_padding(want_nr, want_sy),
                _default_padding(want_nc, want_sx))
        if (nr, nc, sy, sx, py, px) != want:
            raise r.fail(f"{kind}_ window {nr}x{nc} stride {sy},{sx} padding {py},{px}; the network type "
                         f"has {want}", start)
        a.update(window=(nr, nc), stride=(sy, sx), pad=(py, px))
    elif kind == "fc":
        start = r.pos
        r.expect("fc_2")
        num_outputs, num_inputs = r.uint(), r.uint()
        params = r.tensor("fc_ params")
        weights = r.alias_tensor("fc_ weights")
        r.alias_tensor("fc_ biases")
        bias_mode = r.int_("fc_ bias mode")
        for _ in range(4):
            r.float_("learning rate multiplier")
        if num_outputs != spec[1] or bias_mode != 1:
            raise r.fail(f"fc_ with {num_outputs} outputs, bias mode {bias_mode}; the network type has "
                         f"fc_no_bias<{spec[1]}>", start)
        if weights[:2] != (num_inputs, num_outputs) or params.size != num_inputs * num_outputs:
            raise r.fail(f"fc_ weights {weights} / {params.size} parameters do not fit "
                         f"{num_inputs}x{num_outputs}", start)
        a.update(weight=params.reshape(num_inputs, num_outputs))
    else:  # pragma: no cover - ANET_TYPE only holds the kinds above
        raise AssertionError(kind)


def _read_layer_state(r: _Reader, version: int, bottom: bool) -> None:
    """The add_layer bookkeeping after the details: flags and (normally empty) work tensors."""
    for flag in ("setup called", "gradient stale", "output disabled"):
        r.bool_(flag)
    r.tensor("x_grad")
    r.tensor("cached_output")
    if bottom:
        r.tensor("grad_final")
        if version >= 3:
            r.uint("sample expansion factor")
    elif version >= 2:
        r.tensor("params_grad")


def parse_dat(data: bytes, name: str = "model") -> DlibNet:
    """Parse dlib's serialized anet_type; raises DlibFormatError for anything else."""
    if len(data) == 0:
        raise DlibFormatError(f"{name}: empty file")
    r = _Reader(data, name)
    layers = [Layer(spec[0], spec) for spec in ANET_TYPE]

    # add_loss_layer: version, loss details, then the subnetwork
    r.version((1,), "add_loss_layer")
    start = r.pos
    loss_version = r.expect("loss_metric_2", "loss_metric_")
    loss = {"margin": 0.1, "dist_thresh": 0.75}
    if loss_version == "loss_metric_2":
        loss = {"margin": r.float_("margin"), "dist_thresh": r.float_("distance threshold")}
    if not all(math.isfinite(v) for v in loss.values()):
        raise r.fail("loss_metric_ with non-finite parameters", start)

    # each add_layer / tag / skip writes its version and then its subnetwork first: versions top-down
    body = layers[1:-1]
    versions: list[int] = []
    for i, layer in enumerate(body):
        if layer.kind in ("tag", "skip"):
            versions.append(r.version((1,), f"{layer.kind} layer"))
        elif i == len(body) - 1:
            versions.append(r.version((2, 3), "input add_layer"))
        else:
            versions.append(r.version((1, 2), "add_layer"))

    # the input layer
    start = r.pos
    r.expect("input_rgb_image_sized")
    mean = tuple(float(np.float32(r.float_("channel mean"))) for _ in range(3))
    nr, nc = r.int_(), r.int_()
    if (nr, nc) != (CHIP_SIZE, CHIP_SIZE) or not all(math.isfinite(m) for m in mean):
        raise r.fail(f"input_rgb_image_sized<{nr}x{nc}> with means {mean}; expected {CHIP_SIZE}x{CHIP_SIZE}",
                     start)

    # then each layer's details, bottom-up
    for i in range(len(body) - 1, -1, -1):
        layer = body[i]
        if layer.kind in COMPUTATIONAL:
            _read_details(r, layer)
            _read_layer_state(r, versions[i], bottom=(i == len(body) - 1))
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected bytes after the network")
    return DlibNet(layers, mean, CHIP_SIZE, loss)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# ONNX graph


class _Graph:
    """The ONNX nodes and initializers of a network being converted, one dlib layer at a time (input
    first): `cur` names the tensor so far and `shape` is its (C, H, W); the batch stays dynamic."""

    def __init__(self, helper: Any, numpy_helper: Any, input_size: int, source: str):
        self.helper, self.numpy_helper, self.source = helper, numpy_helper, source
        self.nodes: list = []
        self.inits: list = []
        self.cur = INPUT_NAME
        self.shape: tuple = (3, input_size, input_size)
        self.tags: dict[int, tuple[str, tuple]] = {}

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def add(self, layer: Layer, tag: str) -> None:
        """Append the nodes of one layer (`tag`: its kind and index, e.g. con3)."""
        kind = layer.kind
        if kind in ("input", "loss_metric"):
            return
        if kind == "tag":
            self.tags[layer.spec[1]] = (self.cur, self.shape)
        elif kind == "skip":
            self.cur, self.shape = self.tags[layer.spec[1]]
        elif kind == "relu":
            self.cur = self.node("Relu", [self.cur], tag)
        else:
            handlers = {"con": self._con, "affine": self._affine, "avg_pool": self._pool, "max_pool": self._pool,
                        "add_prev": self._add_prev, "fc": self._fc}
            handlers[kind](layer, tag)  # a KeyError: a layer kind the parser let through unhandled

    def _con(self, layer: Layer, tag: str) -> None:
        a, shape = layer.attrs, self.shape
        w, b = a["weight"], a["bias"]
        if a["in_channels"] != shape[0]:
            raise DlibFormatError(f"{self.source}: {tag} expects {a['in_channels']} channels, gets {shape[0]}")
        (sy, sx), (py, px) = a["stride"], a["pad"]
        self.cur = self.node("Conv", [self.cur, self.const(f"{tag}.weight", w), self.const(f"{tag}.bias", b)], tag,
                             kernel_shape=list(w.shape[2:]), strides=[sy, sx], pads=[py, px, py, px],
                             dilations=[1, 1], group=1)
        h = 1 + (shape[1] + 2 * py - w.shape[2]) // sy
        wd = 1 + (shape[2] + 2 * px - w.shape[3]) // sx
        self.shape = (w.shape[0], h, wd)

    def _affine(self, layer: Layer, tag: str) -> None:
        a, shape = layer.attrs, self.shape
        if a["mode"] == "conv":
            g = a["gamma"].reshape(1, -1, 1, 1)
            bt = a["beta"].reshape(1, -1, 1, 1)
            if g.shape[1] != shape[0]:
                raise DlibFormatError(f"{self.source}: {tag} has {g.shape[1]} channels, input has {shape[0]}")
        else:
            g, bt = a["gamma"][None], a["beta"][None]
            if g.shape[1:] != shape:
                raise DlibFormatError(f"{self.source}: {tag} has shape {g.shape[1:]}, input has {shape}")
        mul = self.node("Mul", [self.cur, self.const(f"{tag}.gamma", g)], f"{tag}.mul")
        self.cur = self.node("Add", [mul, self.const(f"{tag}.beta", bt)], tag)

    def _pool(self, layer: Layer, tag: str) -> None:
        kind, shape = layer.kind, self.shape
        (wy, wx), (sy, sx), (py, px) = layer.attrs["window"], layer.attrs["stride"], layer.attrs["pad"]
        if wy == 0 and wx == 0:
            self.cur = self.node("GlobalAveragePool" if kind == "avg_pool" else "GlobalMaxPool", [self.cur], tag)
            self.shape = (shape[0], 1, 1)
            return
        wy, wx = wy or shape[1], wx or shape[2]
        if wy > shape[1] + 2 * py or wx > shape[2] + 2 * px:
            raise DlibFormatError(f"{self.source}: {tag} window {wy}x{wx} larger than its input {shape}")
        extra = {"count_include_pad": 0} if kind == "avg_pool" else {}
        self.cur = self.node("AveragePool" if kind == "avg_pool" else "MaxPool", [self.cur], tag,
                             kernel_shape=[wy, wx], strides=[sy, sx], pads=[py, px, py, px], **extra)
        self.shape = (shape[0], 1 + (shape[1] + 2 * py - wy) // sy, 1 + (shape[2] + 2 * px - wx) // sx)

    def _add_prev(self, layer: Layer, tag: str) -> None:
        other, other_shape = self.tags[layer.spec[1]]
        out_shape = tuple(max(x, y) for x, y in zip(self.shape, other_shape, strict=True))
        operands = []
        for j, (name, s) in enumerate(((self.cur, self.shape), (other, other_shape))):
            if s != out_shape:
                # dlib's tt::add: a value missing in one input counts as 0 -> pad at the far end
                pads = np.array([0, 0, 0, 0, 0, out_shape[0] - s[0], out_shape[1] - s[1],
                                 out_shape[2] - s[2]], dtype=np.int64)
                name = self.node("Pad", [name, self.const(f"{tag}.pads{j}", pads)], f"{tag}.pad{j}",
                                 mode="constant")
            operands.append(name)
        self.cur = self.node("Add", operands, tag)
        self.shape = out_shape

    def _fc(self, layer: Layer, tag: str) -> None:
        w, shape = layer.attrs["weight"], self.shape
        if w.shape[0] != shape[0] * shape[1] * shape[2]:
            raise DlibFormatError(f"{self.source}: {tag} takes {w.shape[0]} inputs, gets {shape}")
        flat = self.node("Flatten", [self.cur], f"{tag}.flatten", axis=1)
        self.cur = self.node("MatMul", [flat, self.const(f"{tag}.weight", w)], tag)
        self.shape = (w.shape[1],)


def build_onnx(net: DlibNet, source: str = DAT_NAME, dat_sha256: str = "") -> Any:
    """The onnx.ModelProto for a parsed network (onnx imported lazily: only conversion needs it)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise RuntimeError(f"converting the dlib model needs the 'onnx' package ({exc})") from None

    g = _Graph(helper, numpy_helper, net.input_size, source)
    counts: dict[str, int] = {}
    for layer in reversed(net.layers):
        idx = counts[layer.kind] = counts.get(layer.kind, -1) + 1
        g.add(layer, f"{layer.kind}{idx}")
    nodes, inits, cur, shape = g.nodes, g.inits, g.cur, g.shape
    nodes.append(helper.make_node("Identity", [cur], [OUTPUT_NAME], name=OUTPUT_NAME))

    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       ["N", 3, net.input_size, net.input_size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", shape[0]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="face-agent dlib_resnet", producer_version=CONVERTER_VERSION)
    model.ir_version = IR_VERSION
    model.doc_string = ("dlib face recognition ResNet converted by face-agent. Input: (N,3,150,150) float32 "
                        "RGB, (pixel - input_mean_rgb[c]) / 256. Output: dlib's 128-d descriptor.")
    meta = {"source": source, "source_sha256": dat_sha256, "converter_version": CONVERTER_VERSION,
            "input_mean_rgb": ",".join(repr(m) for m in net.mean_rgb), "input_scale": repr(INPUT_SCALE),
            "input_layout": "NCHW RGB float32"}
    for key in sorted(meta):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, meta[key]
    onnx.checker.check_model(model)
    return model


def convert_bytes(data: bytes, name: str = DAT_NAME) -> bytes:
    """The ONNX file (bytes) for the contents of a .dat; deterministic."""
    net = parse_dat(data, name)
    model = build_onnx(net, DAT_NAME, hashlib.sha256(data).hexdigest())  # content only: not the file name
    return model.SerializeToString()


def convert(dat_path: str | os.PathLike, onnx_path: str | os.PathLike) -> str:
    """Convert a .dat file to an ONNX file (written atomically); returns the ONNX sha256."""
    return _convert(Path(dat_path), Path(onnx_path))[0]


def _convert(dat_path: Path, onnx_path: Path) -> tuple[str, DlibNet]:
    try:
        data = dat_path.read_bytes()
    except OSError as exc:
        raise DlibFormatError(f"{dat_path}: cannot read ({exc.strerror or exc})") from None
    net = parse_dat(data, str(dat_path))
    onnx_bytes = build_onnx(net, DAT_NAME, hashlib.sha256(data).hexdigest()).SerializeToString()
    atomic_write(onnx_path, onnx_bytes)
    return hashlib.sha256(onnx_bytes).hexdigest(), net


# ----------------------------------------------------------------------------------------------------
# the cached conversion in the engines folder


def ensure_onnx(dat_path: str | os.PathLike, engines_dir: str | os.PathLike, force: bool = False) -> Path:
    """The converted ONNX file for `dat_path`, converting (atomically) only when no valid cache exists.

    The cache is valid when its sha256 is the known conversion of this .dat (`KNOWN_CONVERSIONS`) or the
    hash recorded beside it when it was written. A cache that is missing, damaged or does not match is
    (re)converted, with a warning for the latter two. A damaged .dat raises DlibFormatError.
    """
    dat_path = Path(dat_path)
    try:
        dat_sha = file_sha256(dat_path)
    except OSError as exc:
        raise DlibFormatError(f"{dat_path}: cannot read ({exc.strerror or exc})") from None
    onnx_path = cached_onnx_path(engines_dir, dat_sha)
    record_path = onnx_path.with_suffix(".json")
    if onnx_path.exists() and not force:
        actual = file_sha256(onnx_path)
        if actual in expected_hashes(dat_sha, record_path):
            log.debug("using cached conversion %s", onnx_path)
            return onnx_path
        log.warning("cached %s does not match the expected sha256 (damaged or from another converter); "
                    "converting %s again", onnx_path, dat_path)
    log.info("converting %s to ONNX (%s)", dat_path, onnx_path)
    onnx_sha, net = _convert(dat_path, onnx_path)
    known = dlib_resnet.KNOWN_CONVERSIONS.get(dat_sha)
    if known and onnx_sha != known:
        log.warning("the conversion of %s has sha256 %s, not the reference %s (another onnx/protobuf "
                    "version?); the cached file is used as written", dat_path, onnx_sha, known)
    record = {"dat": str(dat_path), "dat_sha256": dat_sha, "onnx_sha256": onnx_sha,
              "converter_version": CONVERTER_VERSION, "input_mean_rgb": list(net.mean_rgb)}
    atomic_write(record_path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return onnx_path



if __name__ == "__main__":  # python -m agent.vision.dlib_convert DAT ENGINES_DIR (used by embed.converted_model)
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ensure_onnx(sys.argv[1], sys.argv[2])
