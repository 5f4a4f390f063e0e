"""Fixed-point formats, the one rounding function of the project, and the numpy reference quantizer.

Convention (stated once, used everywhere): a format ``Q(bits, frac)`` stores an integer ``q`` and means the
real value ``q * 2**-frac``.  ``bits`` counts every stored bit, the sign bit included when ``signed``.
``frac`` may be negative or larger than ``bits``.  A per-channel format has one ``frac`` per channel along
``axis``; ``bits`` and ``signed`` are shared.  Reports print ``Q<int>.<frac>`` with ``int = bits - frac``
(sign included), e.g. ``Q1.7`` for an 8-bit signed tensor with 7 fractional bits, and add ``u`` when unsigned.

Rounding is round-half-away-from-zero, both in the float simulation and in the integer graph; overflow
saturates (never wraps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np

ROUNDING = "half_away_from_zero"
MIN_BITS = 1
MAX_BITS = 32


class FormatError(ValueError):
    """A fixed-point format that cannot exist or cannot be realized."""


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero (the project's only rounding mode), in float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def rounding_right_shift(acc: np.ndarray, shift) -> np.ndarray:
    """Integer reference of the requantize shift: ``round_half_away(acc / 2**shift)`` for ``shift >= 1``.

    Uses the same identity as the integer graph, ``(acc + 2**(s-1) - [acc < 0]) >> s``.
    """
    acc = np.asarray(acc, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    neg = ((acc < 0) & (shift > 0)).astype(np.int64)
    return np.right_shift(acc + half - neg, shift)


@dataclass(frozen=True)
class FixedPointFormat:
    """``Q(bits, frac)``, signed or unsigned; ``frac`` is an int or one int per channel along ``axis``."""

    bits: int
    frac: int | tuple[int, ...]
    signed: bool = True
    axis: int | None = None
    multiplier: tuple[int, ...] | None = None   # per channel: value = q * m * 2**-frac (cluster scales)
    symmetric: bool = False                      # qmin = -qmax (e.g. ternary: 2 bits, levels -1, 0, 1)

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise FormatError(f"bits must be an integer, got {self.bits!r}")
        object.__setattr__(self, "bits", int(self.bits))
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise FormatError(f"bits must be in {MIN_BITS}..{MAX_BITS}, got {self.bits}")
        if self.signed and self.bits < 2:
            raise FormatError("a signed format needs at least 2 bits (one is the sign)")
        if isinstance(self.frac, (list, tuple, np.ndarray)):
            fr = tuple(int(f) for f in self.frac)
            if not fr:
                raise FormatError("per-channel frac must not be empty")
            if self.axis is None:
                raise FormatError("a per-channel format needs an axis")
            object.__setattr__(self, "frac", fr)
        elif isinstance(self.frac, (int, np.integer)) and not isinstance(self.frac, bool):
            object.__setattr__(self, "frac", int(self.frac))
            object.__setattr__(self, "axis", None)
        else:
            raise FormatError(f"frac must be an integer or a list of integers, got {self.frac!r}")
        for f in self.frac_list:
            if abs(f) > 64:
                raise FormatError(f"frac {f} is out of the supported range -64..64")
        if self.multiplier is not None:
            m = tuple(int(v) for v in self.multiplier)
            if not self.per_channel or len(m) != len(self.frac):
                raise FormatError("a multiplier needs a per-channel format with one multiplier per channel")
            if any(v < 1 or v >= 1 << 16 for v in m):
                raise FormatError("multipliers must be integers in 1..65535")
            object.__setattr__(self, "multiplier", m)
        if self.symmetric and not self.signed:
            raise FormatError("a symmetric format must be signed")

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def per_channel(self) -> bool:
        return isinstance(self.frac, tuple)

    @property
    def frac_list(self) -> tuple[int, ...]:
        return self.frac if isinstance(self.frac, tuple) else (self.frac,)

    @property
    def qmin(self) -> int:
        if self.symmetric:
            return -self.qmax
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def max_abs_q(self) -> int:
        """Largest magnitude of a stored integer (times the largest multiplier, if any)."""
        return max(-self.qmin, self.qmax) * (max(self.multiplier) if self.multiplier else 1)

    @property
    def storage_dtype(self) -> str:
        for width in (8, 16, 32):
            if self.bits <= width:
                return f"{'int' if self.signed else 'uint'}{width}"
        raise FormatError(f"no storage type for {self.bits} bits")

    def multiplier_array(self, ndim: int) -> np.ndarray:
        """Per-channel integer multipliers broadcastable against a tensor of rank ``ndim`` (1 if none)."""
        if self.multiplier is None:
            return np.array(1, dtype=np.int64)
        shape = [1] * ndim
        shape[self.axis if self.axis >= 0 else self.axis + ndim] = len(self.multiplier)
        return np.asarray(self.multiplier, dtype=np.int64).reshape(shape)

    def frac_array(self, ndim: int) -> np.ndarray:
        """``frac`` as an int64 array broadcastable against a tensor of rank ``ndim``."""
        if not self.per_channel:
            return np.array(self.frac, dtype=np.int64)
        shape = [1] * ndim
        axis = self.axis if self.axis >= 0 else self.axis + ndim
        shape[axis] = len(self.frac)
        return np.asarray(self.frac, dtype=np.int64).reshape(shape)

    # ---- numpy reference quantizer ------------------------------------------------------------
    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Real values -> stored integers (int64), rounded half away from zero and saturated."""
        x = np.asarray(x, dtype=np.float64)
        scaled = np.ldexp(x, self.frac_array(x.ndim).astype(np.int32))
        if self.multiplier is not None:
            scaled = scaled / self.multiplier_array(x.ndim)
        return np.clip(round_half_away(scaled), self.qmin, self.qmax).astype(np.int64)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q)
        m = self.multiplier_array(q.ndim)
        return np.ldexp((q * m).astype(np.float64), -self.frac_array(q.ndim).astype(np.int32))

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        return self.dequantize(self.quantize(x))

    # ---- text ---------------------------------------------------------------------------------
    def __str__(self) -> str:
        u = "" if self.signed else "u"
        if self.multiplier is not None:
            levels = "ternary" if self.symmetric and self.bits == 2 else f"{self.bits}b"
            return f"{levels}*m[{min(self.multiplier)}..{max(self.multiplier)}]*2^-[{min(self.frac)}..{max(self.frac)}]"
        if self.per_channel:
            lo, hi = min(self.frac), max(self.frac)
            return f"{u}Q{self.bits}[f={lo}..{hi}/ch]"
        return f"{u}Q{self.bits - self.frac}.{self.frac}"

    def to_json(self) -> dict:
        d = {"bits": self.bits, "frac": list(self.frac) if self.per_channel else self.frac,
             "signed": self.signed}
        if self.per_channel:
            d["axis"] = self.axis
        if self.multiplier is not None:
            d["multiplier"] = list(self.multiplier)
        if self.symmetric:
            d["symmetric"] = True
        return d

    @classmethod
    def from_json(cls, d: dict, where: str = "format") -> "FixedPointFormat":
        if not isinstance(d, dict):
            raise FormatError(f"{where}: expected an object like {{'bits': 8, 'frac': 5, 'signed': true}}, got {d!r}")
        unknown = set(d) - {"bits", "frac", "signed", "axis", "multiplier", "symmetric"}
        missing = {"bits", "frac"} - set(d)
        if unknown or missing:
            raise FormatError(f"{where}: unknown keys {sorted(unknown)} / missing keys {sorted(missing)}")
        try:
            return cls(d["bits"], d["frac"], bool(d.get("signed", True)), d.get("axis"), d.get("multiplier"),
                       bool(d.get("symmetric", False)))
        except FormatError as e:
            raise FormatError(f"{where}: {e}") from None


def frac_for_range(abs_max, bits: int, signed: bool) -> int | np.ndarray:
    """Largest ``frac`` such that ``abs_max`` does not saturate in ``Q(bits, frac)``.

    Dynamic fixed point: the integer part is just wide enough for the observed magnitude.  A zero (or
    all-zero channel) range gets ``frac = bits - 1`` (any value works; this keeps shifts small).
    """
    qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    a = np.asarray(abs_max, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise FormatError("range is not finite (NaN or inf in the data)")
    with np.errstate(divide="ignore"):
        f = np.floor(np.log2((qmax + 0.5) / np.where(a > 0, a, 1.0))).astype(np.int64)
    # guard the floor against log2 rounding: step down/up until round(a * 2**f) <= qmax < round(a*2**(f+1))
    for _ in range(2):
        over = round_half_away(np.ldexp(a, f.astype(np.int32))) > qmax
        f = np.where(over, f - 1, f)
        under = round_half_away(np.ldexp(a, (f + 1).astype(np.int32))) <= qmax
        f = np.where(under & (a > 0), f + 1, f)
    f = np.where(a > 0, f, bits - 1)
    f = np.clip(f, -64, 64)
    return int(f) if f.ndim == 0 else f


def ceil_log2(n: int) -> int:
    return 0 if n <= 1 else int(math.ceil(math.log2(n)))


def bits_for_magnitude(m: int) -> int:
    """Signed bits needed to hold every integer in ``[-m, m]``."""
    return int(m).bit_length() + 1

