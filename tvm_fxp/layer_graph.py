"""The layer graph: the model as the allocation methods, the bounds and the reports see it (no TVM).

A *layer* is an anchor op plus the ops fused into its requantize (``tvm_fxp.passes.analysis`` finds them in a
prepared Relax function): ``conv2d``/``matmul`` (with weights and a bias), the residual ``add``, ``concat``,
``avgpool``/``mean``, the product ``mul`` of two activations, ``lrn`` and, when allowed, ``float`` islands.
Each layer's output is an activation with a plan key ``<layer>.output``; weighted layers add
``<layer>.weight`` and ``<layer>.bias``; the function parameters are the ``input`` layer(s).  The Relax
variables a layer was found at (``anchor``, ``tail``, ``bias_var``) are opaque here: only the passes read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np


def float_islands(lg) -> list:
    """``[(layer, op)]`` of the layers computed in float between a dequantize and a quantize."""
    return [(l.name, l.attrs.get("op")) for l in lg.layers.values() if l.op == "float"]


@dataclass
class Layer:
    name: str
    op: str                        # input | conv2d | matmul | add | concat | avgpool | mean | mul | lrn
    inputs: list                   # producer layer names, in argument order
    out_shape: tuple               # per image (batch dimension dropped)
    anchor: object = None          # relax binding var of the anchor op (None for the input)
    tail: object = None            # relax var whose value is the layer's output activation
    weight: np.ndarray | None = None
    weight_axis: int = 0           # output-channel axis of the weight (0 for OIHW, 1 for matmul (K, N))
    bias: np.ndarray | None = None  # 1-D, one value per output channel
    bias_var: object = None        # relax binding var of the bias add
    fan_in: int = 0                # products per output element
    macs: int = 0                  # multiply-accumulates per image
    fused: list = field(default_factory=list)  # activation op names fused after the anchor
    pool_count: int = 0            # elements summed per output by avgpool/mean (the full window)
    attrs: dict = field(default_factory=dict)  # op parameters (lrn: size, alpha, beta, bias)

    @property
    def output_key(self) -> str:
        return "input" if self.op == "input" and self.name == "input" else f"{self.name}.output"

    @property
    def weight_key(self) -> str:
        return f"{self.name}.weight"

    @property
    def bias_key(self) -> str:
        return f"{self.name}.bias"

    @property
    def channels(self) -> int:
        return 0 if self.weight is None else int(self.weight.shape[self.weight_axis])


@dataclass
class LayerGraph:
    layers: dict                   # name -> Layer, in topological order
    output: str                    # name of the layer the function returns (through pass-throughs)
    graph: nx.DiGraph
    outputs: list = field(default_factory=list)   # every returned layer, in order (tuple results)
    epilogue: list = field(default_factory=list)  # float ops after the output dequantize (softmax)

    def tensors(self) -> dict:
        """Plan key -> (kind, layer name, per-image shape) for every tensor that needs a format."""
        out = {}
        for layer in self.layers.values():
            out[layer.output_key] = ("input" if layer.op == "input" else "activation", layer.name,
                                     layer.out_shape)
            if layer.weight is not None:
                out[layer.weight_key] = ("weight", layer.name, layer.weight.shape)
            if layer.bias is not None:
                out[layer.bias_key] = ("bias", layer.name, layer.bias.shape)
        return out

    def by_tail(self) -> dict:
        return {l.tail: l for l in self.layers.values()}
