"""Metrics: top-1, agreement and KL divergence between two models' outputs, SQNR of a quantizer (no TVM)."""

from __future__ import annotations

import numpy as np


def top1(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def sqnr_db(x: np.ndarray, xq: np.ndarray) -> float:
    noise = float(np.sum((x.astype(np.float64) - xq) ** 2))
    signal = float(np.sum(x.astype(np.float64) ** 2))
    if noise == 0:
        return float("inf")
    return 10 * np.log10(max(signal, 1e-300) / noise)


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def kl_divergence(float_logits, q_logits) -> float:
    p = _log_softmax(float_logits.astype(np.float64))
    q = _log_softmax(q_logits.astype(np.float64))
    return float(np.mean(np.sum(np.exp(p) * (p - q), axis=1)))
