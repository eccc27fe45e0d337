"""Probability helpers every learned model shares: softmax, and the temperature that calibrates it."""

from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes `y` (indices) under `proba`."""
    return -float(np.mean(np.log(proba[np.arange(len(y)), y] + 1e-12)))


def fit_temperature(logits: np.ndarray, y: np.ndarray, low: float = 0.2, high: float = 5.0, steps: int = 161) -> float:
    """The temperature minimising the log-loss of softmax(logits / T) on held-out rows (a 1-D grid search on a
    log scale: cheap, and the loss is convex in 1/T)."""
    best_t, best_loss = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(low), np.log(high), steps)):
        loss = log_loss(softmax(logits / t), y)
        if loss < best_loss:
            best_t, best_loss = float(t), loss
    return best_t
