"""Small ONNX graphs built with onnx.helper for pass tests (random He-initialised weights, no downloads)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    def __init__(self, input_shape, seed=0, opset=13):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.input_shape = list(input_shape)
        self.opset = opset
        self.n = 0

    def _name(self, p):
        self.n += 1
        return f"{p}{self.n}"

    def const(self, arr, p="c"):
        name = self._name(p)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def op(self, op_type, inputs, p=None, **attrs):
        out = self._name(p or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k=3, stride=1, pad=1, groups=1, bias=True):
        fan_in = cin // groups * k * k
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // groups, k, k))
        ins = [x, self.const(w, "w")] + ([self.const(self.rng.normal(0, 0.1, cout), "b")] if bias else [])
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups)

    def bn(self, x, c):
        r = self.rng
        return self.op("BatchNormalization", [x, self.const(r.uniform(0.5, 1.5, c)), self.const(r.normal(0, 0.1, c)),
                                              self.const(r.normal(0, 0.1, c)), self.const(r.uniform(0.5, 1.5, c))])

    def gemm(self, x, k, n):
        w = self.rng.normal(0, np.sqrt(2.0 / k), (n, k))
        return self.op("Gemm", [x, self.const(w, "w"), self.const(self.rng.normal(0, 0.1, n), "b")], transB=1)

    def model(self, out) -> onnx.ModelProto:
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N"] + self.input_shape[1:])
        g = helper.make_graph(self.nodes, "g", [inp], [onnx.ValueInfoProto(name=out)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(m)
        info = {v.name: v for v in inferred.graph.value_info}
        m.graph.output[0].CopyFrom(info[out])
        onnx.checker.check_model(m)
        return m


def save(model, tmp_path, name="m.onnx"):
    p = tmp_path / name
    onnx.save(model, str(p))
    return p
