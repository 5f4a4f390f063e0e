"""Running data through a model in chunks that honour the model's batch dimension (numpy only).

Published ONNX models nearly always fix the batch (``1x3x224x224``); ours export it symbolic.  Every stage
that runs data (calibration, plan scoring, evaluation, the bit-exact check, a board over RPC) goes through
``padded_chunks`` (or ``run_batched``, which calls a function on each chunk):

- a model with a *fixed* batch ``B`` gets chunks of exactly ``B`` inputs; the last chunk is padded with
  copies of its last input and its outputs are trimmed, so no input is dropped and no padding is counted;
- a model with a *dynamic* batch gets chunks of ``batch_size`` (the last one shorter).

``inputs`` may be an ndarray or any array-like with ``len()`` and slicing that returns ndarrays (e.g.
``tvm_fxp.images.ImageFolder``, which decodes each chunk when it is sliced: memory stays at one chunk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class Batching:
    """How inputs are chunked for one model: ``fixed`` is the model's own batch size, None when dynamic."""

    fixed: int | None
    batch_size: int = 256

    @property
    def chunk(self) -> int:
        return self.fixed if self.fixed is not None else max(1, int(self.batch_size))

    def describe(self) -> dict:
        """What summary.json records."""
        if self.fixed is not None:
            return {"kind": "fixed", "model_batch": self.fixed, "chunk": self.fixed,
                    "note": f"the model fixes its batch at {self.fixed}: inputs run in chunks of {self.fixed}, "
                            "the last chunk padded with copies of its last input and the padding trimmed"}
        return {"kind": "dynamic", "model_batch": None, "chunk": self.chunk,
                "note": f"the model's batch is dynamic: inputs run in chunks of up to {self.chunk}"}

    def chunks(self, n: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` of each chunk of ``n`` inputs (every input in exactly one chunk)."""
        step = self.chunk
        for start in range(0, n, step):
            yield start, min(start + step, n)

    def pad(self, x: np.ndarray) -> np.ndarray:
        """``x`` padded to the fixed batch with copies of its last input (unchanged when dynamic or full)."""
        if self.fixed is None or len(x) == self.fixed:
            return x
        if len(x) > self.fixed:
            raise ValueError(f"a chunk of {len(x)} inputs for a model with fixed batch {self.fixed}")
        reps = np.repeat(x[-1:], self.fixed - len(x), axis=0)
        return np.concatenate([x, reps], axis=0)


def trim(out, valid: int, padded: int):
    """Keep the first ``valid`` rows of each output whose leading dim is the padded chunk size."""
    if isinstance(out, (list, tuple)):
        return type(out)(trim(o, valid, padded) for o in out)
    if valid != padded and getattr(out, "ndim", 0) > 0 and out.shape[0] == padded:
        return out[:valid]
    return out


def padded_chunks(inputs, batching: Batching) -> Iterator[tuple[int, int, list]]:
    """``(start, stop, xs)`` for every chunk of ``inputs`` (an array or array-like, or a list of them, one per
    model input): ``xs`` holds each input's chunk as float32, padded to the fixed batch."""
    arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    for start, stop in batching.chunks(len(arrays[0])):
        yield start, stop, [batching.pad(np.ascontiguousarray(a[start:stop], dtype=np.float32)) for a in arrays]


def run_batched(fn: Callable, inputs, batching: Batching, progress: Callable | None = None) -> list:
    """``fn(chunk)`` for every chunk of ``inputs`` (padded for a fixed batch, outputs trimmed); with a list of
    arrays (one per model input) ``fn`` gets the list of their chunks.

    Returns the list of per-chunk results (each an ndarray, or a list/tuple of them for several outputs).
    ``progress``: wraps the chunk iterator (e.g. a tqdm partial).
    """
    several = isinstance(inputs, (list, tuple))
    it = padded_chunks(inputs, batching)
    if progress is not None:
        it = progress(list(it))
    return [trim(fn(xs if several else xs[0]), stop - start, len(xs[0])) for start, stop, xs in it]


def concat(results: Sequence):
    """Concatenate per-chunk outputs along the batch axis: an array, or a list of arrays when each chunk's
    result is a list (several outputs)."""
    if len(results) and isinstance(results[0], (list, tuple)):
        return [np.concatenate(parts) for parts in zip(*results)]
    return np.concatenate(list(results)) if len(results) else np.zeros((0,), np.float32)
