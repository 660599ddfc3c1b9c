"""A linear probe over the turn's e5 embedding: softmax regression, trained and read with numpy alone.

Why written here rather than taken from scikit-learn: the service only needs ``predict`` (one
384x k matrix product per turn), and scikit-learn with scipy would be ~100 MB of runtime
dependencies for it. Training is full-batch Adam on the cross-entropy with L2, which converges
in seconds for tens of thousands of 384-d rows; the training scripts call ``fit``.

e5 vectors all sit in a narrow cone (cosines 0.7-1.0), so the probe centres and scales each
feature with the training set's statistics, stored with the weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LinearProbe", "fit"]


@dataclass
class LinearProbe:
    """``labels[i]`` is column ``i`` of ``weights`` (dim x k); ``meta`` says what it was trained on."""

    labels: tuple[str, ...]
    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        x = (np.atleast_2d(np.asarray(vectors, dtype=np.float32)) - self.mean) / self.scale
        return x @ self.weights + self.bias

    def proba(self, vectors: np.ndarray) -> np.ndarray:
        """(n, k) class probabilities of ``vectors`` (one row per vector)."""
        return _softmax(self.logits(vectors))

    def predict(self, vector: np.ndarray) -> tuple[str, float]:
        """The most likely label of one vector and its probability."""
        p = self.proba(vector)[0]
        i = int(np.argmax(p))
        return self.labels[i], float(p[i])

    def probability(self, vector: np.ndarray, label: str) -> float:
        return float(self.proba(vector)[0][self.labels.index(label)])

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            labels=np.array(self.labels),
            weights=self.weights.astype(np.float32),
            bias=self.bias.astype(np.float32),
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            meta=np.array(json.dumps(self.meta, ensure_ascii=False)),
        )

    @classmethod
    def load(cls, path: Path) -> LinearProbe:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                labels=tuple(str(s) for s in z["labels"]),
                weights=z["weights"],
                bias=z["bias"],
                mean=z["mean"],
                scale=z["scale"],
                meta=json.loads(str(z["meta"])),
            )


def fit(
    vectors: np.ndarray,
    labels: Sequence[str],
    l2: float = 1e-3,
    epochs: int = 400,
    lr: float = 0.05,
    balanced: bool = False,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> LinearProbe:
    """Softmax regression of ``labels`` on ``vectors`` (full-batch Adam; ``balanced`` weights rare classes up)."""
    x = np.asarray(vectors, dtype=np.float64)
    classes = tuple(sorted(set(labels)))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[label] for label in labels])
    n, d = x.shape
    k = len(classes)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    x = (x - mean) / scale
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    counts = np.bincount(y, minlength=k).astype(np.float64)
    sample_w = (n / (k * counts))[y] if balanced else np.ones(n)
    sample_w /= sample_w.sum()
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.01, size=(d, k))
    b = np.zeros(k)
    m_w, v_w, m_b, v_b = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, epochs + 1):
        p = _softmax(x @ w + b)
        g = (p - onehot) * sample_w[:, None]
        grad_w = x.T @ g + l2 * w
        grad_b = g.sum(axis=0)
        m_w = beta1 * m_w + (1 - beta1) * grad_w
        v_w = beta2 * v_w + (1 - beta2) * grad_w**2
        m_b = beta1 * m_b + (1 - beta1) * grad_b
        v_b = beta2 * v_b + (1 - beta2) * grad_b**2
        step = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)
        w -= step * m_w / (np.sqrt(v_w) + eps)
        b -= step * m_b / (np.sqrt(v_b) + eps)
    return LinearProbe(
        classes,
        w.astype(np.float32),
        b.astype(np.float32),
        mean.astype(np.float32),
        scale.astype(np.float32),
        dict(meta or {}, rows=n, l2=l2, epochs=epochs, balanced=balanced),
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
