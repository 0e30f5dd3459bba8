#!/usr/bin/env python3
"""Build the MTCNN P-Net, R-Net and O-Net ONNX graphs from the original weights.

The weights are the ones shipped, as plain numpy arrays, in the PyPI package `mtcnn==0.1.1` (MIT,
Ivan de Paz Centeno; converted from the original Caffe models of Zhang et al. via David Sandberg's
facenet). Only the .npy file is read: neither TensorFlow nor the `mtcnn` code is imported.

    pip install mtcnn==0.1.1 --no-deps
    python tools/build_mtcnn_onnx.py            # writes agent/models/mtcnn/{pnet,rnet,onet}.onnx

Layer order (Keras `set_weights` order in mtcnn/network/factory.py): per conv layer kernel
(kh, kw, cin, cout), bias (cout,), PReLU alpha (1, 1, cout); per dense layer weight (in, out), bias (out,),
PReLU alpha (out,) for the hidden one. Max pools use TensorFlow "SAME" padding where noted, i.e. the extra
row/column goes at the end and padded cells never win (-inf).

The transposition quirk: the reference feeds every network the image with x and y swapped (a MATLAB
column-major relic of the Caffe originals): NHWC input of shape (N, W, H, C). We bake that into the
weights so the ONNX graphs take a plain NCHW image and give plain (N, C, H', W') maps:

- a conv kernel K[kh, kw, cin, cout] that slides over the transposed image is, over the plain image,
  the kernel W[cout, cin, y, x] = K[x, y, cin, cout], i.e. K.transpose(3, 2, 1, 0);
- PReLU, bias and the symmetric max pools commute with the transposition;
- Keras' Flatten reads the last feature map as (W', H', C) (transposed, channels last), ONNX Flatten as
  (C, H', W'); the first dense layer's rows are permuted accordingly.

The regression and landmark outputs are left exactly as the reference reads them: reg = (dx1, dy1, dx2,
dy2) and landmarks = (x1..x5, y1..y5), both relative to the candidate box in plain image coordinates.

Graphs: opset 13, IR version 7 (accepted by ONNX Runtime and by TensorRT 8.x), float32, NCHW.
P-Net has a dynamic batch, height and width (one graph for every pyramid scale; its only pool uses
ceil_mode so it needs no input-size dependent padding); R-Net (24x24) and O-Net (48x48) have a dynamic batch.
Outputs: pnet (prob (N, 2, H', W'), reg (N, 4, H', W')); rnet (prob, reg); onet (prob, reg, landmarks).
The output is byte-for-byte deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 7
WEIGHTS_SHA256 = "9e04e975abf93c7173e956df4b496d6da269e08b9e87f2daec963ee1176576b0"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "agent" / "models" / "mtcnn"
NETS = ("pnet", "rnet", "onet")


def default_weights_path() -> Path:
    """mtcnn/data/mtcnn_weights.npy of the installed `mtcnn` package, found without importing it."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the PyPI package mtcnn==0.1.1 is not installed: pip install mtcnn==0.1.1 --no-deps "
                         "(or pass --weights PATH/mtcnn_weights.npy)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "mtcnn_weights.npy"


def load_weights(path: Path, check_hash: bool = True) -> dict[str, list[np.ndarray]]:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if check_hash and digest != WEIGHTS_SHA256:
        raise SystemExit(f"{path}: sha256 {digest} is not the mtcnn 0.1.1 weights ({WEIGHTS_SHA256}); "
                         "pass --no-check-hash to convert it anyway")
    weights = np.load(path, allow_pickle=True).tolist()
    if not isinstance(weights, dict) or set(weights) != set(NETS):
        raise SystemExit(f"{path}: expected a dict with keys {NETS}")
    return {net: [np.asarray(a, dtype=np.float32) for a in weights[net]] for net in NETS}


class GraphBuilder:
    """Appends nodes and initializers with stable, readable names."""

    def __init__(self, net: str, weights: list[np.ndarray]):
        self.net = net
        self.weights = list(weights)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.last = "input"

    def _take(self) -> np.ndarray:
        if not self.weights:
            raise SystemExit(f"{self.net}: ran out of weight arrays")
        return self.weights.pop(0)

    def _init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def _node(self, op: str, inputs: list[str], name: str, output: str | None = None, **attrs) -> str:
        output = output or name
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        self.last = output
        return output

    def conv(self, name: str, src: str | None = None, output: str | None = None) -> str:
        kernel, bias = self._take(), self._take()
        kh, kw, _, _ = kernel.shape
        w = self._init(f"{name}.weight", kernel.transpose(3, 2, 1, 0))  # undo the x/y swap, see module doc
        b = self._init(f"{name}.bias", bias)
        return self._node("Conv", [src or self.last, w, b], name, output, kernel_shape=[kw, kh], strides=[1, 1])

    def prelu(self, name: str, spatial: bool = True) -> str:
        alpha = self._take().reshape(-1)
        slope = alpha.reshape(-1, 1, 1) if spatial else alpha
        return self._node("PRelu", [self.last, self._init(f"{name}.slope", slope)], name)

    def max_pool(self, name: str, kernel: int, stride: int, pads: tuple[int, int, int, int] | None = None,
                 ceil_mode: bool = False) -> str:
        attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride]}
        if pads:
            attrs["pads"] = list(pads)
        if ceil_mode:
            attrs["ceil_mode"] = 1
        return self._node("MaxPool", [self.last], name, **attrs)

    def flatten(self, name: str) -> str:
        return self._node("Flatten", [self.last], name, axis=1)

    def dense(self, name: str, src: str | None = None, output: str | None = None,
              feature_map: tuple[int, int, int] | None = None) -> str:
        weight, bias = self._take(), self._take()
        if feature_map is not None:
            # Keras flattened a transposed channels-last map (W', H', C); ONNX flattens (C, H', W')
            c, h, w = feature_map
            weight = weight.reshape(w, h, c, -1).transpose(2, 1, 0, 3).reshape(c * h * w, -1)
        wt = self._init(f"{name}.weight", weight)
        b = self._init(f"{name}.bias", bias)
        return self._node("Gemm", [src or self.last, wt, b], name, output)

    def softmax(self, name: str, src: str, output: str) -> str:
        return self._node("Softmax", [src], name, output, axis=1)

    def model(self, input_shape: list, outputs: list[tuple[str, list]]) -> onnx.ModelProto:
        if self.weights:
            raise SystemExit(f"{self.net}: {len(self.weights)} weight arrays left unused")
        graph = helper.make_graph(
            self.nodes, self.net,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs],
            initializer=self.inits,
        )
        graph.doc_string = (f"MTCNN {self.net}: input float32 NCHW RGB, (pixel - 127.5) / 128. "
                            "Weights: PyPI mtcnn==0.1.1 (MIT), built by tools/build_mtcnn_onnx.py.")
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="face-agent tools/build_mtcnn_onnx.py", producer_version="1")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


def build_pnet(weights: list[np.ndarray]) -> onnx.ModelProto:
    g = GraphBuilder("pnet", weights)
    g.conv("conv1")
    g.prelu("prelu1")
    g.max_pool("pool1", 2, 2, ceil_mode=True)  # == TF "SAME" for a 2x2/2 pool, for any input size
    g.conv("conv2")
    g.prelu("prelu2")
    g.conv("conv3")
    trunk = g.prelu("prelu3")
    logits = g.conv("conv4_1", src=trunk)
    g.softmax("prob", logits, "prob")
    g.conv("conv4_2", src=trunk, output="reg")
    return g.model(["batch", 3, "height", "width"],
                   [("prob", ["batch", 2, "out_height", "out_width"]),
                    ("reg", ["batch", 4, "out_height", "out_width"])])


def build_rnet(weights: list[np.ndarray]) -> onnx.ModelProto:
    g = GraphBuilder("rnet", weights)
    g.conv("conv1")  # 24 -> 22
    g.prelu("prelu1")
    g.max_pool("pool1", 3, 2, pads=(0, 0, 1, 1))  # TF "SAME": 22 -> 11
    g.conv("conv2")  # 11 -> 9
    g.prelu("prelu2")
    g.max_pool("pool2", 3, 2)  # "VALID": 9 -> 4
    g.conv("conv3")  # 4 -> 3
    g.prelu("prelu3")
    g.flatten("flatten")
    g.dense("fc4", feature_map=(64, 3, 3))
    trunk = g.prelu("prelu4", spatial=False)
    logits = g.dense("fc5_1", src=trunk)
    g.softmax("prob", logits, "prob")
    g.dense("fc5_2", src=trunk, output="reg")
    return g.model(["batch", 3, 24, 24], [("prob", ["batch", 2]), ("reg", ["batch", 4])])


def build_onet(weights: list[np.ndarray]) -> onnx.ModelProto:
    g = GraphBuilder("onet", weights)
    g.conv("conv1")  # 48 -> 46
    g.prelu("prelu1")
    g.max_pool("pool1", 3, 2, pads=(0, 0, 1, 1))  # TF "SAME": 46 -> 23
    g.conv("conv2")  # 23 -> 21
    g.prelu("prelu2")
    g.max_pool("pool2", 3, 2)  # "VALID": 21 -> 10
    g.conv("conv3")  # 10 -> 8
    g.prelu("prelu3")
    g.max_pool("pool3", 2, 2)  # TF "SAME" needs no padding here: 8 -> 4
    g.conv("conv4")  # 4 -> 3
    g.prelu("prelu4")
    g.flatten("flatten")
    g.dense("fc5", feature_map=(128, 3, 3))
    trunk = g.prelu("prelu5", spatial=False)
    logits = g.dense("fc6_1", src=trunk)
    g.softmax("prob", logits, "prob")
    g.dense("fc6_2", src=trunk, output="reg")
    g.dense("fc6_3", src=trunk, output="landmarks")
    return g.model(["batch", 3, 48, 48],
                   [("prob", ["batch", 2]), ("reg", ["batch", 4]), ("landmarks", ["batch", 10])])


def check_heads(net: str, weights: list[np.ndarray]) -> list[np.ndarray]:
    """Check the output layers' shapes, so that a different weights file fails loudly, not silently wrong.

    Keras `get_weights` lists layers in creation order (factory.py): P-Net conv4_1 (2, prob) then conv4_2
    (4, reg); R-Net dense 2 then 4; O-Net dense 2, 4, 10 - the order the builders read them in.
    """
    expected_tail = {"pnet": [(1, 1, 32, 2), (2,), (1, 1, 32, 4), (4,)],
                     "rnet": [(128, 2), (2,), (128, 4), (4,)],
                     "onet": [(256, 2), (2,), (256, 4), (4,), (256, 10), (10,)]}[net]
    tail = [tuple(a.shape) for a in weights[-len(expected_tail):]]
    if tail != expected_tail:
        raise SystemExit(f"{net}: unexpected output-layer shapes {tail}, expected {expected_tail}")
    return weights


BUILDERS = {"pnet": build_pnet, "rnet": build_rnet, "onet": build_onet}


def build_all(weights: dict[str, list[np.ndarray]]) -> dict[str, bytes]:
    """Serialized ONNX model per net (deterministic bytes)."""
    return {net: BUILDERS[net](check_heads(net, weights[net])).SerializeToString(deterministic=True)
            for net in NETS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="mtcnn_weights.npy (default: from the installed mtcnn package)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--no-check-hash", action="store_true", help="accept a weights file of another sha256")
    args = parser.parse_args(argv)
    path = args.weights or default_weights_path()
    weights = load_weights(path, check_hash=not args.no_check_hash)
    args.out.mkdir(parents=True, exist_ok=True)
    for net, data in build_all(weights).items():
        target = args.out / f"{net}.onnx"
        target.write_bytes(data)
        print(f"{target}  {len(data)} bytes  sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
