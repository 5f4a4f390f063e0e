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


# ---- opset-aware helpers and classic ImageNet CNN families --------------------------------------------------
#
# ``Net`` extends ``GraphBuilder`` with the ops the classic CNNs use, each written the way exporters of the
# model's opset write it (Clip by attributes before opset 11, Dropout's ratio attribute before 12, Unsqueeze
# axes attribute before 13, Slice attributes before 10, HardSwish only from 14).  ``weights`` chooses how
# weights reach the graph: ``initializer``, ``constant`` (Constant nodes) or ``subgraph`` (computed by a
# constant subgraph: a flat Constant reshaped and scaled).  Weights are random He-initialised.

class Net(GraphBuilder):
    def __init__(self, input_shape, seed=0, opset=13, weights="initializer", fc="gemm", flatten="flatten"):
        super().__init__(input_shape, seed, opset)
        assert weights in ("initializer", "constant", "subgraph") and fc in ("gemm", "matmul")
        assert flatten in ("flatten", "reshape", "shape")
        self.weights, self.fc_kind, self.flatten_kind = weights, fc, flatten

    # constants ---------------------------------------------------------------------------------------------
    def tensor(self, arr, p="c", dtype=np.float32):
        """A constant input of a node (weights follow ``self.weights``; shapes/axes are initializers)."""
        arr = np.asarray(arr, dtype=dtype)
        if dtype != np.float32 or self.weights == "initializer":
            name = self._name(p)
            self.inits.append(numpy_helper.from_array(arr, name))
            return name
        if self.weights == "constant":
            return self.op("Constant", [], p, value=numpy_helper.from_array(arr, self._name("v")))
        flat = self.op("Constant", [], p, value=numpy_helper.from_array((arr * 0.5).reshape(-1), self._name("v")))
        shaped = self.op("Reshape", [flat, self.tensor(np.array(arr.shape, np.int64), "s", np.int64)])
        two = self.op("Constant", [], "two", value=numpy_helper.from_array(np.array(2.0, np.float32), self._name("v")))
        return self.op("Mul", [shaped, two], p)

    def const(self, arr, p="c"):
        return self.tensor(arr, p)

    # layers ------------------------------------------------------------------------------------------------
    def conv(self, x, cin, cout, k=3, stride=1, pad=1, groups=1, bias=True):
        fan_in = cin // groups * k * k
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // groups, k, k))
        ins = [x, self.tensor(w, "w")] + ([self.tensor(self.rng.normal(0, 0.1, cout), "b")] if bias else [])
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups)

    def bn(self, x, c):
        r = self.rng
        attrs = {"epsilon": 1e-5}
        if self.opset < 9:
            attrs["spatial"] = 1
        return self.op("BatchNormalization", [x, self.tensor(r.uniform(0.5, 1.5, c)), self.tensor(r.normal(0, 0.1, c)),
                                              self.tensor(r.normal(0, 0.1, c)), self.tensor(r.uniform(0.5, 1.5, c))],
                       **attrs)

    def bn_mul_add(self, x, c):
        """Batch-norm as some exporters write it: per-channel Mul then Add, scales unsqueezed to (C, 1, 1)."""
        s = self.unsqueeze(self.tensor(self.rng.uniform(0.5, 1.5, c), "s"), [1, 2])
        t = self.unsqueeze(self.tensor(self.rng.normal(0, 0.1, c), "t"), [1, 2])
        return self.op("Add", [self.op("Mul", [x, s]), t])

    def conv_bn(self, x, cin, cout, k=3, stride=1, pad=1, groups=1, act="relu", bn="bn"):
        y = self.conv(x, cin, cout, k, stride, pad, groups, bias=False)
        y = self.bn(y, cout) if bn == "bn" else self.bn_mul_add(y, cout)
        return self.act(y, act)

    def act(self, x, kind):
        if kind is None:
            return x
        if kind == "relu":
            return self.op("Relu", [x])
        if kind == "relu6":
            return self.clip(x, 0.0, 6.0)
        if kind == "hswish":
            return self.hardswish(x)
        raise ValueError(kind)

    def fc(self, x, k, n, kind=None):
        kind = kind or self.fc_kind
        w = self.rng.normal(0, np.sqrt(2.0 / k), (n, k))
        b = self.rng.normal(0, 0.1, n)
        if kind == "gemm":
            attrs = {"transB": 1} if self.opset >= 7 else {"transB": 1, "broadcast": 1}
            return self.op("Gemm", [x, self.tensor(w, "w"), self.tensor(b, "b")], **attrs)
        return self.op("Add", [self.op("MatMul", [x, self.tensor(w.T.copy(), "w")]), self.tensor(b, "b")])

    # elementwise and layout --------------------------------------------------------------------------------
    def clip(self, x, lo, hi):
        if self.opset < 11:
            return self.op("Clip", [x], min=float(lo), max=float(hi))
        return self.op("Clip", [x, self.tensor(np.float32(lo), "lo"), self.tensor(np.float32(hi), "hi")])

    def unsqueeze(self, x, axes):
        if self.opset < 13:
            return self.op("Unsqueeze", [x], axes=list(axes))
        return self.op("Unsqueeze", [x, self.tensor(np.array(axes, np.int64), "ax", np.int64)])

    def dropout(self, x, ratio=0.5):
        if self.opset < 12:
            return self.op("Dropout", [x], ratio=ratio)
        return self.op("Dropout", [x, self.tensor(np.float32(ratio), "ratio")])

    def hardsigmoid(self, x):
        return self.op("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)

    def hardswish(self, x):
        """HardSwish itself from opset 14; before that ``x * Clip(x + 3, 0, 6) / 6`` (PyTorch's export)."""
        if self.opset >= 14:
            return self.op("HardSwish", [x])
        r6 = self.clip(self.op("Add", [x, self.tensor(np.float32(3.0), "three")]), 0.0, 6.0)
        return self.op("Div", [self.op("Mul", [x, r6]), self.tensor(np.float32(6.0), "six")])

    def se(self, x, c, r=4, gate="hsig"):
        """Squeeze-and-excite: GlobalAveragePool, 1x1 conv, ReLU, 1x1 conv, gate, channel-wise Mul."""
        s = self.op("GlobalAveragePool", [x])
        s = self.op("Relu", [self.conv(s, c, max(c // r, 1), k=1, pad=0)])
        s = self.conv(s, max(c // r, 1), c, k=1, pad=0)
        s = self.hardsigmoid(s) if gate == "hsig" else self.op("Sigmoid", [s])
        return self.op("Mul", [x, s])

    def lrn(self, x, size=5, alpha=1e-4, beta=0.75, bias=1.0):
        return self.op("LRN", [x], size=size, alpha=alpha, beta=beta, bias=bias)

    def maxpool(self, x, k, s, pad=0):
        return self.op("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4)

    def avgpool(self, x, k, s, pad=0, count_include_pad=0):
        attrs = {"count_include_pad": count_include_pad} if pad else {}
        return self.op("AveragePool", [x], kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4, **attrs)

    def shuffle(self, x, c, groups, h, w):
        """Channel shuffle: Reshape (N, g, c/g, H, W), Transpose, Reshape back."""
        y = self.op("Reshape", [x, self.tensor(np.array([0, groups, c // groups, h, w], np.int64), "sh", np.int64)])
        y = self.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
        return self.op("Reshape", [y, self.tensor(np.array([0, c, h, w], np.int64), "sh", np.int64)])

    def flatten(self, x):
        if self.flatten_kind == "flatten":
            return self.op("Flatten", [x])
        if self.flatten_kind == "reshape":
            return self.op("Reshape", [x, self.tensor(np.array([0, -1], np.int64), "sh", np.int64)])
        shape = self.op("Shape", [x])
        if self.opset < 10:
            batch = self.op("Slice", [shape], starts=[0], ends=[1], axes=[0])
        else:
            i64 = lambda v: self.tensor(np.array(v, np.int64), "i", np.int64)
            batch = self.op("Slice", [shape, i64([0]), i64([1]), i64([0])])
        target = self.op("Concat", [batch, self.tensor(np.array([-1], np.int64), "m1", np.int64)], axis=0)
        return self.op("Reshape", [x, target])

    def softmax(self, x):
        return self.op("Softmax", [x], axis=1 if self.opset < 13 else -1)

    def model(self, out, dynamic=("N",), dims=None) -> onnx.ModelProto:
        """Like ``GraphBuilder.model``; ``dynamic`` names the symbolic leading input dims (batch only by
        default), ``dims`` gives every input dim (ints or names) instead.

        Opsets before 9 are written as their exporters wrote them: IR version 3, initializers listed as graph
        inputs too."""
        dims = list(dims) if dims is not None else list(dynamic) + self.input_shape[len(dynamic):]
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)
        inputs = [inp]
        if self.opset < 9:
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits]
        g = helper.make_graph(self.nodes, "g", inputs, [onnx.ValueInfoProto(name=out)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8 if self.opset >= 13 else 7 if self.opset >= 12 else 6 if self.opset >= 11 else 5 \
            if self.opset >= 10 else 4 if self.opset >= 9 else 3
        inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
        info = {v.name: v for v in inferred.graph.value_info}
        if out in info and info[out].type.tensor_type.HasField("shape"):
            m.graph.output[0].CopyFrom(info[out])
        else:
            m.graph.output[0].CopyFrom(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", "K"]))
        onnx.checker.check_model(m)
        return m


def _spatial(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def alexnet(g: Net, image: int, width: float = 1 / 8, fc: int = 512, variant: str = "alexnet", softmax=True):
    """AlexNet (grouped convs, LRN, Dropout, large Gemm) or ZFNet-512 (7x7/2 stem, LRN bias 2)."""
    c = [max(int(v * width), 4) for v in (96, 256, 384, 384, 256)]
    if variant == "alexnet":
        x, size = g.conv("input", 3, c[0], k=11, stride=4, pad=0), _spatial(image, 11, 4, 0)
        lrn = dict(size=5, alpha=1e-4, beta=0.75, bias=1.0)
    else:
        x, size = g.conv("input", 3, c[0], k=7, stride=2, pad=1), _spatial(image, 7, 2, 1)
        lrn = dict(size=5, alpha=5e-4, beta=0.75, bias=2.0)
    x = g.maxpool(g.lrn(g.op("Relu", [x]), **lrn), 3, 2)
    size = _spatial(size, 3, 2, 0)
    x = g.lrn(g.op("Relu", [g.conv(x, c[0], c[1], k=5, pad=2, groups=2 if variant == "alexnet" else 1)]), **lrn)
    x = g.maxpool(x, 3, 2)
    size = _spatial(size, 3, 2, 0)
    x = g.op("Relu", [g.conv(x, c[1], c[2])])
    x = g.op("Relu", [g.conv(x, c[2], c[3], groups=2 if variant == "alexnet" else 1)])
    x = g.op("Relu", [g.conv(x, c[3], c[4], groups=2 if variant == "alexnet" else 1)])
    x = g.maxpool(x, 3, 2, pad=1)
    size = _spatial(size, 3, 2, 1)
    x = g.flatten(x)
    x = g.dropout(g.op("Relu", [g.fc(x, c[4] * size * size, fc)]))
    x = g.dropout(g.op("Relu", [g.fc(x, fc, fc)]))
    x = g.fc(x, fc, 10)
    return g.softmax(x) if softmax else x


def vgg(g: Net, image: int, cfg=(64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"),
        width: float = 1 / 8, fc: int = 256, bn=False, softmax=True):
    x, cin, size = "input", 3, image
    for v in cfg:
        if v == "M":
            x, size = g.maxpool(x, 2, 2), size // 2
            continue
        cout = max(int(v * width), 4)
        x = g.conv_bn(x, cin, cout) if bn else g.op("Relu", [g.conv(x, cin, cout)])
        cin = cout
    x = g.flatten(x)
    x = g.dropout(g.op("Relu", [g.fc(x, cin * size * size, fc)]))
    x = g.dropout(g.op("Relu", [g.fc(x, fc, fc)]))
    x = g.fc(x, fc, 10)
    return g.softmax(x) if softmax else x


def _inception(g: Net, x, cin, c1, c3r, c3, c5r, c5, cp, bn, pool="max"):
    conv = (lambda x, ci, co, k, p: g.conv_bn(x, ci, co, k=k, pad=p, bn="muladd")) if bn else \
        (lambda x, ci, co, k, p: g.op("Relu", [g.conv(x, ci, co, k=k, pad=p)]))
    b1 = conv(x, cin, c1, 1, 0)
    b2 = conv(conv(x, cin, c3r, 1, 0), c3r, c3, 3, 1)
    b3 = conv(conv(x, cin, c5r, 1, 0), c5r, c5, 3, 1) if bn else conv(conv(x, cin, c5r, 1, 0), c5r, c5, 5, 2)
    if bn:   # Inception v2: 5x5 factorised into two 3x3
        b3 = conv(b3, c5, c5, 3, 1)
    p = g.maxpool(x, 3, 1, pad=1) if pool == "max" else g.avgpool(x, 3, 1, pad=1, count_include_pad=0)
    b4 = conv(p, cin, cp, 1, 0)
    return g.op("Concat", [b1, b2, b3, b4], axis=1), c1 + c3 + c5 + cp


def inception(g: Net, image: int, version: int = 1, width: float = 1 / 8, modules: int = 3, softmax=True):
    """GoogLeNet (v1: LRN, max-pool branches) or BN-Inception (v2: batch-norm as Mul/Add, avg-pool branches)."""
    w = lambda v: max(int(v * width), 2)
    bn = version == 2
    x = g.conv_bn("input", 3, w(64), k=7, stride=2, pad=3, bn="muladd") if bn else \
        g.op("Relu", [g.conv("input", 3, w(64), k=7, stride=2, pad=3)])
    x = g.maxpool(x, 3, 2, pad=1)
    if not bn:
        x = g.lrn(x)
    x = g.op("Relu", [g.conv(x, w(64), w(64), k=1, pad=0)])
    x = g.op("Relu", [g.conv(x, w(64), w(192))])
    if not bn:
        x = g.lrn(x)
    x = g.maxpool(x, 3, 2, pad=1)
    cin = w(192)
    pool = "avg" if bn else "max"
    x, cin = _inception(g, x, cin, w(64), w(96), w(128), w(16), w(32), w(32), bn, pool)
    if modules >= 2:
        x, cin = _inception(g, x, cin, w(128), w(128), w(192), w(32), w(96), w(64), bn, pool)
    x = g.maxpool(x, 3, 2, pad=1)
    for _ in range(modules - 2):
        x, cin = _inception(g, x, cin, w(192), w(96), w(208), w(16), w(48), w(64), bn, pool)
    size = _spatial(_spatial(_spatial(_spatial(image, 7, 2, 3), 3, 2, 1), 3, 2, 1), 3, 2, 1)
    x = g.avgpool(x, size, 1)         # the final 7x7 average pool, at the reduced size
    x = g.dropout(x, 0.4)
    x = g.fc(g.flatten(x), cin, 10)
    return g.softmax(x) if softmax else x


def _bottleneck(g: Net, x, cin, mid, stride):
    cout = mid * 4
    y = g.conv_bn(x, cin, mid, k=1, pad=0)
    y = g.conv_bn(y, mid, mid, k=3, stride=stride, pad=1)
    y = g.conv_bn(y, mid, cout, k=1, pad=0, act=None)
    short = x if (stride == 1 and cin == cout) else g.conv_bn(x, cin, cout, k=1, stride=stride, pad=0, act=None)
    return g.op("Relu", [g.op("Sum", [y, short])]), cout


def resnet50(g: Net, image: int, width: float = 1.0, blocks=(3, 4, 6, 3), softmax=True):
    """ResNet-50: 7x7/2 stem, max pool, bottleneck stages with projection shortcuts, ``Sum`` residuals,
    global average pool, Gemm."""
    w = lambda v: max(int(v * width), 2)
    x = g.maxpool(g.conv_bn("input", 3, w(64), k=7, stride=2, pad=3), 3, 2, pad=1)
    cin = w(64)
    for stage, (n, mid) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for i in range(n):
            x, cin = _bottleneck(g, x, cin, w(mid), 2 if (i == 0 and stage > 0) else 1)
    x = g.op("GlobalAveragePool", [x])
    x = g.fc(g.flatten(x), cin, 10 if image < 224 else 1000)
    return g.softmax(x) if softmax else x


def densenet(g: Net, image: int, growth: int = 8, blocks=(3, 6, 12, 8), softmax=True):
    """DenseNet-BC: pre-activation BN-ReLU-Conv dense layers, every layer's input the concat of all before it
    (batch-norm after a concat cannot fold into a conv), transitions with 2x2 average pools."""
    c = 2 * growth
    x = g.maxpool(g.conv_bn("input", 3, c, k=3, stride=1, pad=1), 3, 2, pad=1)
    for bi, n in enumerate(blocks):
        for _ in range(n):
            y = g.conv(g.op("Relu", [g.bn(x, c)]), c, 4 * growth, k=1, pad=0, bias=False)
            y = g.conv(g.op("Relu", [g.bn(y, 4 * growth)]), 4 * growth, growth, bias=False)
            x, c = g.op("Concat", [x, y], axis=1), c + growth
        if bi < len(blocks) - 1:
            x = g.conv(g.op("Relu", [g.bn(x, c)]), c, c // 2, k=1, pad=0, bias=False)
            x, c = g.avgpool(x, 2, 2), c // 2
    x = g.op("GlobalAveragePool", [g.op("Relu", [g.bn(x, c)])])
    x = g.fc(g.flatten(x), c, 10)
    return g.softmax(x) if softmax else x


def squeezenet(g: Net, image: int, width: float = 1 / 4, softmax=True, classes: int = 10):
    """SqueezeNet 1.1: fire modules (1x1 squeeze, concat of 1x1 and 3x3 expands), final conv, global pool."""
    w = lambda v: max(int(v * width), 2)

    def fire(x, cin, s, e):
        s_ = g.op("Relu", [g.conv(x, cin, w(s), k=1, pad=0)])
        a = g.op("Relu", [g.conv(s_, w(s), w(e), k=1, pad=0)])
        b = g.op("Relu", [g.conv(s_, w(s), w(e), k=3, pad=1)])
        return g.op("Concat", [a, b], axis=1), 2 * w(e)

    x = g.maxpool(g.op("Relu", [g.conv("input", 3, w(64), k=3, stride=2, pad=0)]), 3, 2)
    x, c = fire(x, w(64), 16, 64)
    x, c = fire(x, c, 16, 64)
    x = g.maxpool(x, 3, 2)
    x, c = fire(x, c, 32, 128)
    x, c = fire(x, c, 32, 128)
    x = g.maxpool(x, 3, 2, pad=1)
    x, c = fire(x, c, 48, 192)
    x, c = fire(x, c, 64, 256)
    x = g.dropout(x)
    x = g.op("Relu", [g.conv(x, c, classes, k=1, pad=0)])
    x = g.flatten(g.op("GlobalAveragePool", [x]))
    return g.softmax(x) if softmax else x


def shufflenet(g: Net, image: int, groups: int = 2, channels=(24, 48, 96), repeats=(2, 2, 1), softmax=True):
    """ShuffleNet v1: grouped 1x1 convs, channel shuffle (Reshape/Transpose/Reshape), depthwise 3x3,
    strided units concat an average-pooled shortcut, others add it (``Sum``)."""
    x = g.conv_bn("input", 3, 12, k=3, stride=2, pad=1)
    x = g.maxpool(x, 3, 2, pad=1)
    size = _spatial(_spatial(image, 3, 2, 1), 3, 2, 1)
    cin = 12
    for stage, (cout, n) in enumerate(zip(channels, repeats)):
        for i in range(n):
            stride = 2 if i == 0 else 1
            out = cout - cin if stride == 2 else cout
            mid = out // 4 // groups * groups or groups
            gr = 1 if (stage == 0 and i == 0) else groups
            y = g.conv_bn(x, cin, mid, k=1, pad=0, groups=gr)
            y = g.shuffle(y, mid, groups, size, size)
            size_out = _spatial(size, 3, stride, 1)
            y = g.conv_bn(y, mid, mid, k=3, stride=stride, pad=1, groups=mid, act=None)
            y = g.conv_bn(y, mid, out, k=1, pad=0, groups=groups, act=None)
            if stride == 2:
                short = g.avgpool(x, 3, 2, pad=1, count_include_pad=0)
                x = g.op("Relu", [g.op("Concat", [short, y], axis=1)])
            else:
                x = g.op("Relu", [g.op("Sum", [y, x])])
            cin, size = cout, size_out
    x = g.op("GlobalAveragePool", [x])
    x = g.fc(g.flatten(x), cin, 10)
    return g.softmax(x) if softmax else x


def mobilenet(g: Net, image: int, version: int = 2, width: float = 1 / 4, repeats=(1, 2, 2, 2, 1), softmax=True):
    """MobileNet v2 (inverted residuals, depthwise convs, ReLU6 as Clip) or v3 (hard-swish, squeeze-and-
    excite with HardSigmoid gating); ``repeats`` blocks per stage (a 0 drops the stage)."""
    w = lambda v: max(int(v * width) // 2 * 2, 4)
    v3 = version == 3
    stem_act = "hswish" if v3 else "relu6"
    x = g.conv_bn("input", 3, w(32), stride=2, act=stem_act)
    cin = w(32)
    # (expansion, out channels, repeats, stride, activation, squeeze-excite)
    cfg = [(1, 16, 1, "relu6", False), (6, 24, 2, "relu6", False), (6, 32, 2, "relu6", True),
           (6, 64, 2, "hswish", True), (6, 96, 1, "hswish", True)]
    for (t, c, s, act, se), n in zip(cfg, repeats):
        if not v3:
            act, se = "relu6", False
        for i in range(n):
            cout, stride = w(c), s if i == 0 else 1
            hidden = cin * t
            y = x if t == 1 else g.conv_bn(x, cin, hidden, k=1, pad=0, act=act)
            y = g.conv_bn(y, hidden, hidden, k=3, stride=stride, pad=1, groups=hidden, act=act)
            if se:
                y = g.se(y, hidden)
            y = g.conv_bn(y, hidden, cout, k=1, pad=0, act=None)
            x = g.op("Add", [x, y]) if (stride == 1 and cin == cout) else y
            cin = cout
    x = g.conv_bn(x, cin, w(320), k=1, pad=0, act=stem_act)
    x = g.flatten(g.op("GlobalAveragePool", [x]))
    if v3:
        x = g.dropout(g.hardswish(g.fc(x, w(320), 64)), 0.2)
        x = g.fc(x, 64, 10)
    else:
        x = g.fc(g.dropout(x, 0.2), w(320), 10)
    return g.softmax(x) if softmax else x


def mobilenet_v2(g: Net, image: int, width: float = 1.0, classes: int = 1000, softmax=True):
    """MobileNetV2 as published (Sandler et al. 2018, torchvision's): 32-channel 3x3/2 stem, the seven
    inverted-residual stages (t, c, n, s) = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2)
    (6,320,1,1), 1x1 conv to 1280, global average pool, Gemm; ReLU6 as Clip, batch-norm after every conv."""
    def w(v):
        return max(int(v * width + 4) // 8 * 8, 8)

    x = g.conv_bn("input", 3, w(32), stride=2, act="relu6")
    cin = w(32)
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            cout, stride, hidden = w(c), s if i == 0 else 1, cin * t
            y = x if t == 1 else g.conv_bn(x, cin, hidden, k=1, pad=0, act="relu6")
            y = g.conv_bn(y, hidden, hidden, k=3, stride=stride, pad=1, groups=hidden, act="relu6")
            y = g.conv_bn(y, hidden, cout, k=1, pad=0, act=None)
            x = g.op("Add", [x, y]) if (stride == 1 and cin == cout) else y
            cin = cout
    last = max(1280, w(1280))
    x = g.conv_bn(x, cin, last, k=1, pad=0, act="relu6")
    x = g.fc(g.flatten(g.op("GlobalAveragePool", [x])), last, classes)
    return g.softmax(x) if softmax else x


def multi_io_model(g: GraphBuilder, inputs: list, outputs: list, opset: int = 13) -> onnx.ModelProto:
    """A model of ``g``'s nodes with several inputs ``[(name, dims)]`` and outputs ``[name]`` (shapes inferred)."""
    return nodes_model(g.nodes, g.inits, inputs, outputs, opset, "multi")


def nodes_model(nodes: list, inits: list, inputs: list, outputs: list, opset: int = 13,
                name: str = "g") -> onnx.ModelProto:
    """A checked model of ONNX ``nodes`` and initializers ``inits`` with float inputs ``[(name, dims)]`` and
    outputs ``[name]``, whose types and shapes ONNX's shape inference fills in."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(d)) for n, d in inputs]
    graph = helper.make_graph(nodes, name, ins, [onnx.ValueInfoProto(name=o) for o in outputs], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    info = {v.name: v for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
    for k, o in enumerate(outputs):
        m.graph.output[k].CopyFrom(info[o])
    onnx.checker.check_model(m)
    return m


# ---- detection and segmentation families -----------------------------------------------------------------------

def _silu(g: Net, x):
    """SiLU as exporters write it (PyTorch before opset 14 has no SiLU op): ``x * Sigmoid(x)``."""
    return g.op("Mul", [x, g.op("Sigmoid", [x])])


def _slice(g: Net, x, starts, ends, axes, steps):
    i64 = lambda v: g.tensor(np.array(v, np.int64), "i", np.int64)
    return g.op("Slice", [x, i64(starts), i64(ends), i64(axes), i64(steps)])


def yolo(g: Net, image: int, width: float = 1 / 8, classes: int = 2, anchors: int = 3, stem="focus",
         spp="spp", decode=True):
    """YOLOv5-style detector: a slicing "focus" stem (four stride-2 Slices concatenated) or a strided conv stem,
    CSP (C3) blocks with SiLU ``x * Sigmoid(x)`` and residual bottlenecks, an SPP block (max pools 5/9/13, or the
    chained SPPF), a PAN neck with nearest ``Resize`` upsampling and concats, and three heads (strides 8, 16, 32)
    of ``anchors * (5 + classes)`` channels, decoded with a Sigmoid.  Returns the three head outputs."""
    w = lambda v: max(int(v * width), 4)

    def cbs(x, cin, cout, k=1, s=1):
        return _silu(g, g.conv_bn(x, cin, cout, k=k, stride=s, pad=k // 2, act=None))

    def c3(x, cin, cout, n=1, shortcut=True):
        h = cout // 2
        a = cbs(x, cin, h)
        for _ in range(n):
            y = cbs(cbs(a, h, h), h, h, k=3)
            a = g.op("Add", [a, y]) if shortcut else y
        b = cbs(x, cin, h)
        return cbs(g.op("Concat", [a, b], axis=1), 2 * h, cout)

    if stem == "focus":
        parts = [_slice(g, "input", [i, j], [image, image], [2, 3], [2, 2]) for j, i in ((0, 0), (0, 1), (1, 0), (1, 1))]
        x = cbs(g.op("Concat", parts, axis=1), 12, w(64), k=3)
    else:
        x = cbs("input", 3, w(64), k=6 if False else 3, s=2)
    x = c3(cbs(x, w(64), w(128), k=3, s=2), w(128), w(128))
    p3 = c3(cbs(x, w(128), w(256), k=3, s=2), w(256), w(256), n=2)
    p4 = c3(cbs(p3, w(256), w(512), k=3, s=2), w(512), w(512))
    x = cbs(p4, w(512), w(1024), k=3, s=2)
    h = w(1024) // 2
    s = cbs(x, w(1024), h)
    if spp == "spp":
        pools = [g.maxpool(s, k, 1, pad=k // 2) for k in (5, 9, 13)]
    else:
        pools = [g.maxpool(s, 5, 1, pad=2)]
        for _ in range(2):
            pools.append(g.maxpool(pools[-1], 5, 1, pad=2))
    p5 = c3(cbs(g.op("Concat", [s] + pools, axis=1), 4 * h, w(1024)), w(1024), w(1024), shortcut=False)

    def up(x):
        return g.op("Resize", [x, "", g.tensor(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest",
                    coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    t5 = cbs(p5, w(1024), w(512))
    n4 = c3(g.op("Concat", [up(t5), p4], axis=1), 2 * w(512), w(512), shortcut=False)
    t4 = cbs(n4, w(512), w(256))
    o3 = c3(g.op("Concat", [up(t4), p3], axis=1), 2 * w(256), w(256), shortcut=False)
    o4 = c3(g.op("Concat", [cbs(o3, w(256), w(256), k=3, s=2), t4], axis=1), 2 * w(256), w(512), shortcut=False)
    o5 = c3(g.op("Concat", [cbs(o4, w(512), w(512), k=3, s=2), t5], axis=1), 2 * w(512), w(1024), shortcut=False)
    heads = []
    for o, c in ((o3, w(256)), (o4, w(512)), (o5, w(1024))):
        y = g.conv(o, c, anchors * (5 + classes), k=1, pad=0)
        heads.append(g.op("Sigmoid", [y]) if decode else y)
    return heads


def unet(g: Net, image: int, width: float = 1 / 8, classes: int = 1, depth: int = 3):
    """U-Net-style segmenter: an encoder of conv-BN-ReLU pairs and max pools, a decoder that upsamples
    alternately with ConvTranspose (learned, 2x2 stride 2) and bilinear ``Resize`` (half_pixel) followed by a
    1x1 conv, skip concats with the encoder, and a per-pixel Sigmoid."""
    w = lambda v: max(int(v * width), 4)
    chans = [w(64 * 2 ** i) for i in range(depth + 1)]

    def double(x, cin, cout):
        return g.conv_bn(g.conv_bn(x, cin, cout), cout, cout)

    skips, x, cin = [], "input", 3
    for c in chans[:-1]:
        x = double(x, cin, c)
        skips.append((x, c))
        x, cin = g.maxpool(x, 2, 2), c
    x = double(x, cin, chans[-1])
    cin = chans[-1]
    for i, (skip, c) in enumerate(reversed(skips)):
        if i % 2 == 0:
            wt = g.rng.normal(0, np.sqrt(2.0 / (cin * 4)), (cin, c, 2, 2))
            x = g.op("ConvTranspose", [x, g.tensor(wt, "w"), g.tensor(g.rng.normal(0, 0.1, c), "b")],
                     kernel_shape=[2, 2], strides=[2, 2])
        else:
            x = g.op("Resize", [x, "", g.tensor(np.array([1, 1, 2, 2], np.float32), "scales")], mode="linear",
                     coordinate_transformation_mode="half_pixel")
            x = g.conv(x, cin, c, k=1, pad=0)
        x = double(g.op("Concat", [x, skip], axis=1), 2 * c, c)
        cin = c
    return g.op("Sigmoid", [g.conv(x, cin, classes, k=1, pad=0)])


def detection_model(g: Net, outs, image: int) -> onnx.ModelProto:
    """A model of ``g``'s nodes with one image input (batch symbolic) and the outputs ``outs``."""
    return multi_io_model(g, [("input", ["N", g.input_shape[1], image, image])], list(outs), opset=g.opset)
