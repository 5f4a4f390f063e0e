"""The plan: which tensor gets which fixed-point format.

A plan is data.  On disk it is JSON::

    {
      "format_version": 1,
      "method": "uniform", "config": {"bits": 8},
      "rounding": "half_away_from_zero",
      "model": {"sha256": "...", "name": "fmnist_vgg.onnx"},
      "tensors": {
        "input":            {"bits": 8, "frac": 7, "signed": false},
        "conv2d_0.weight":  {"bits": 8, "frac": 6, "signed": true},
        "conv2d_0.bias":    {"bits": 8, "frac": 5, "signed": true},
        "conv2d_0.output":  {"bits": 8, "frac": 4, "signed": false},
        ...
      },
      "layers": {"conv2d_0": {...informative: op, fan_in, macs, accumulator bound...}},
      "bias_correction": {"conv2d_0": [0.0012, -0.0003, ...]},    (optional)
      "proofs": {"conv2d_0": {"input_bits": 8, "weight_bits": 6, "acc_bits": 16, "proof": "l1",
                              "bound": 30211, "bound_bits": 16}}   (optional)
    }

``bias_correction`` (optional, from a label-free correction step such as FxP-QNet's) adds a float to each
output channel's bias of a layer before the bias is quantized (``Plan.corrected_bias``); every pass reads
the bias through it.  ``proofs`` (optional, from a method that proves accumulator widths, such as de
Bruin's) holds one ``AccumulatorProof`` per weighted layer, made by ``tvm_fxp.bounds.prove_accumulator``;
``Realize`` checks each against the weights and refuses a layer the claim does not hold for.  Only
``tensors``, ``bias_correction`` and ``proofs`` are authoritative; a user may edit any entry (pin a layer to 16 bits) and the plan is
validated again when loaded and when bound to a model.  ``layers`` is recomputed on every save.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path


from .formats import ROUNDING, FixedPointFormat, FormatError

FORMAT_VERSION = 1


class PlanError(ValueError):
    """An invalid plan; the message names the plan file or tensor and what to do."""


PROOF_KINDS = ("worst-case", "l1", "l1 per k-tile")


@dataclass(frozen=True)
class AccumulatorProof:
    """A method's claim that one weighted layer's accumulator fits ``acc_bits`` (signed) for inputs of
    ``input_bits`` and weights of ``weight_bits``: ``bound`` is the proven magnitude of the whole reduction
    (bias included; worst case or per-channel L1, ``tvm_fxp.bounds``).  k-tiled (``tiles`` > 0): each of the
    ``tiles`` input-channel ranges (at most ``k`` products) sums below ``tile_bound`` in ``acc_bits``, and the
    partial sums are added in 32 bits."""

    input_bits: int
    weight_bits: int
    acc_bits: int
    proof: str
    bound: int
    tiles: int = 0
    k: int = 0
    tile_bound: int = 0

    @property
    def claimed_bound(self) -> int:
        """The magnitude the claim says fits ``acc_bits``: the tiles' partial sums when tiled."""
        return self.tile_bound if self.tiles else self.bound

    def to_json(self) -> dict:
        d = {"input_bits": self.input_bits, "weight_bits": self.weight_bits, "acc_bits": self.acc_bits,
             "proof": self.proof, "bound": self.bound, "bound_bits": int(self.bound).bit_length() + 1}
        if self.tiles:
            d.update(tiles=self.tiles, k=self.k, tile_bound=self.tile_bound,
                     tile_bits=int(self.tile_bound).bit_length() + 1, partial_sum_bits=32)
        return d

    @classmethod
    def from_json(cls, d, where: str) -> "AccumulatorProof":
        ints = ("input_bits", "weight_bits", "acc_bits", "bound")
        tiled = ("tiles", "k", "tile_bound")
        if not isinstance(d, dict) or any(not isinstance(d.get(k), int) or d[k] < 0 for k in ints) or \
                d.get("proof") not in PROOF_KINDS or \
                any(not isinstance(d.get(k, 0), int) or d.get(k, 0) < 0 for k in tiled):
            raise PlanError(f"{where}: a proof needs non-negative integers {list(ints)} (and, k-tiled, "
                            f"{list(tiled)}) and 'proof' one of {list(PROOF_KINDS)}; got {d!r}")
        if not 2 <= d["acc_bits"] <= 64:
            raise PlanError(f"{where}: acc_bits {d['acc_bits']} is not an accumulator width (2..64)")
        return cls(*(d[k] for k in ints[:3]), d["proof"], d["bound"], *(d.get(k, 0) for k in tiled))


@dataclass
class Plan:
    tensors: dict                                  # key -> FixedPointFormat
    method: str = "manual"
    config: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)     # informative, filled by tvm_fxp.api
    bias_correction: dict = field(default_factory=dict)   # layer -> list of per-channel bias deltas (floats)
    proofs: dict = field(default_factory=dict)            # layer -> AccumulatorProof

    def __getitem__(self, key: str) -> FixedPointFormat:
        try:
            return self.tensors[key]
        except KeyError:
            raise PlanError(f"plan has no format for tensor {key!r}") from None

    def with_format(self, key: str, fmt: FixedPointFormat) -> "Plan":
        t = dict(self.tensors)
        t[key] = fmt
        return Plan(t, self.method, dict(self.config), dict(self.model), {}, dict(self.bias_correction),
                    dict(self.proofs))

    def corrected_bias(self, layer: str, bias):
        """The float32 bias of ``layer`` the plan quantizes: ``bias`` plus its correction, if any (any shape
        holding one value per output channel)."""
        import numpy as np

        delta = self.bias_correction.get(layer)
        if delta is None:
            return bias
        b = np.asarray(bias)
        d = np.asarray(delta, dtype=np.float64)
        if d.size != b.size:
            raise PlanError(f"bias_correction of {layer}: {d.size} values for a bias of {b.size} channels "
                            "(was the plan made for another model?)")
        return (b.astype(np.float64) + d.reshape(b.shape)).astype(np.float32)

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "config": self.config,
            "rounding": ROUNDING,
            "model": self.model,
            "tensors": {k: f.to_json() for k, f in self.tensors.items()},
            "layers": self.layers,
            **({"bias_correction": self.bias_correction} if self.bias_correction else {}),
            **({"proofs": {k: p.to_json() for k, p in self.proofs.items()}} if self.proofs else {}),
        }

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def from_json(cls, d, where: str = "plan") -> "Plan":
        if not isinstance(d, dict):
            raise PlanError(f"{where}: expected a JSON object")
        if d.get("format_version") != FORMAT_VERSION:
            raise PlanError(f"{where}: format_version must be {FORMAT_VERSION}, got {d.get('format_version')!r}")
        if d.get("rounding", ROUNDING) != ROUNDING:
            raise PlanError(f"{where}: rounding {d.get('rounding')!r} is not supported (only {ROUNDING})")
        tensors = d.get("tensors")
        if not isinstance(tensors, dict) or not tensors:
            raise PlanError(f"{where}: 'tensors' must be a non-empty object of tensor -> format")
        parsed = {}
        for k, v in tensors.items():
            try:
                parsed[k] = FixedPointFormat.from_json(v, where=f"{where}: tensor {k!r}")
            except FormatError as e:
                raise PlanError(str(e)) from None
        corr = d.get("bias_correction") or {}
        if not isinstance(corr, dict) or not all(
                isinstance(v, list) and v and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
                for v in corr.values()):
            raise PlanError(f"{where}: 'bias_correction' must map layer -> non-empty list of finite numbers")
        config = dict(d.get("config") or {})
        proofs = d.get("proofs", config.pop("proofs", None)) or {}   # plans written before proofs had their own key
        if not isinstance(proofs, dict):
            raise PlanError(f"{where}: 'proofs' must map layer -> proof")
        return cls(parsed, str(d.get("method", "manual")), config,
                   dict(d.get("model") or {}), dict(d.get("layers") or {}),
                   {str(k): [float(x) for x in v] for k, v in corr.items()},
                   {str(k): AccumulatorProof.from_json(v, f"{where}: proof of {k!r}") for k, v in proofs.items()})

    @classmethod
    def load(cls, path) -> "Plan":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise PlanError(f"plan file {p} does not exist") from None
        except json.JSONDecodeError as e:
            raise PlanError(f"plan file {p} is not valid JSON: {e}") from None
        return cls.from_json(d, where=f"plan file {p}")

    def check_keys(self, expected: dict, where: str = "plan") -> None:
        """The plan must cover exactly the model's tensors (a plan from another model fails here)."""
        missing = sorted(set(expected) - set(self.tensors))
        unknown = sorted(set(self.tensors) - set(expected))
        if missing or unknown:
            msg = [f"{where} does not match this model:"]
            if missing:
                msg.append(f"missing formats for {missing[:8]}{' ...' if len(missing) > 8 else ''}")
            if unknown:
                msg.append(f"unknown tensors {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
            msg.append("(was it made for another model? re-run `tvm-fxp quantize` on this model)")
            raise PlanError(" ".join(msg))
