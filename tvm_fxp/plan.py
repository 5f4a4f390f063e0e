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
      "bias_correction": {"conv2d_0": [0.0012, -0.0003, ...]}     (optional)
    }

``bias_correction`` (optional, from a label-free correction step such as FxP-QNet's) adds a float to each
output channel's bias of a layer before the bias is quantized (``Plan.corrected_bias``); every pass reads
the bias through it.  Only ``tensors`` and ``bias_correction`` are authoritative; a user may edit any entry (pin a layer to 16 bits) and the plan is
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


@dataclass
class Plan:
    tensors: dict                                  # key -> FixedPointFormat
    method: str = "manual"
    config: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)     # informative, filled by tvm_fxp.api
    bias_correction: dict = field(default_factory=dict)   # layer -> list of per-channel bias deltas (floats)

    def __getitem__(self, key: str) -> FixedPointFormat:
        try:
            return self.tensors[key]
        except KeyError:
            raise PlanError(f"plan has no format for tensor {key!r}") from None

    def with_format(self, key: str, fmt: FixedPointFormat) -> "Plan":
        t = dict(self.tensors)
        t[key] = fmt
        return Plan(t, self.method, dict(self.config), dict(self.model), {}, dict(self.bias_correction))

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
        return cls(parsed, str(d.get("method", "manual")), dict(d.get("config") or {}),
                   dict(d.get("model") or {}), dict(d.get("layers") or {}),
                   {str(k): [float(x) for x in v] for k, v in corr.items()})

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
