"""The intent model over e5 query vectors: which example intent a turn's vector is closest to, and how sure.

Why kNN over the examples with a softmax vote: e5 puts paraphrases of one request close together,
but an intent's examples form several clusters (``"refund my order"`` and ``"退款"`` are both
``billing_refund``), so a single centroid blurs them; a linear probe needs many rows per intent to
beat the neighbours (the benchmark ``bench/quality_intent.py`` compares the three). The vote is a
softmax of the top-k cosines at a temperature, so the confidence is a probability that sums to 1
over intents, and a turn far from every example (low top cosine) is out of scope: ``other``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ragvigil.chat.probe import LinearProbe, fit

__all__ = ["METHODS", "IntentModel", "Prediction"]

Method = Literal["knn", "centroid", "probe"]
METHODS: tuple[str, ...] = ("knn", "centroid", "probe")
OUT_OF_SCOPE = "other"


@dataclass(frozen=True)
class Prediction:
    """``label`` the best intent (``other`` when rejected); ``confidence`` its vote; ``similarity`` the top cosine."""

    label: str
    confidence: float
    similarity: float
    best: str  # the best intent before the out-of-scope rule


class IntentModel:
    """Fitted once from (vector, label) rows; ``predict`` costs one (n x 384) product per turn."""

    def __init__(
        self,
        vectors: np.ndarray,
        labels: Sequence[str],
        method: Method = "knn",
        k: int = 10,
        temperature: float = 0.01,
        min_similarity: float = 0.0,
        min_confidence: float = 0.0,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
        x = _normalise(np.asarray(vectors, dtype=np.float32))
        if x.ndim != 2 or len(x) != len(labels) or not len(x):
            raise ValueError("one vector per label, at least one")
        self.method = method
        self.k = max(1, int(k))
        self.temperature = float(temperature)
        self.min_similarity = float(min_similarity)
        self.min_confidence = float(min_confidence)
        self.labels: tuple[str, ...] = tuple(sorted(set(labels)))
        index = {label: i for i, label in enumerate(self.labels)}
        self._y = np.array([index[label] for label in labels], dtype=np.int64)
        self._x = x
        self._centroids = _normalise(np.stack([x[self._y == i].mean(axis=0) for i in range(len(self.labels))]))
        self._probe: LinearProbe | None = fit(x, list(labels), l2=1e-2, epochs=300) if method == "probe" else None

    def scores(self, vectors: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n, intents), top cosine to any example (n,)) of ``vectors``.

        ``exclude[i]``: the index of an example row ``i`` may not see (its own, for a leave-one-out
        vote: how a threshold is chosen on the training data without looking at the eval set).
        """
        q = _normalise(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        sims = q @ self._x.T
        if exclude is not None:
            sims[np.arange(len(q)), exclude] = -1.0
        top = sims.max(axis=1)
        if self.method == "centroid":
            return _softmax((q @ self._centroids.T) / self.temperature), top
        if self.method == "probe":
            assert self._probe is not None
            order = [self._probe.labels.index(label) for label in self.labels]
            return self._probe.proba(q)[:, order], top
        k = min(self.k, sims.shape[1])
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near_sims = np.take_along_axis(sims, nearest, axis=1)
        weights = _softmax(near_sims / self.temperature)
        votes = np.zeros((len(q), len(self.labels)), dtype=np.float64)
        np.add.at(votes, (np.repeat(np.arange(len(q)), k), self._y[nearest].ravel()), weights.ravel())
        return votes, top

    def decide(self, proba: np.ndarray, top: np.ndarray) -> list[Prediction]:
        """The out-of-scope rule: ``other`` when the nearest example is too far or the vote too split."""
        out = []
        for p, s in zip(proba, top, strict=True):
            i = int(np.argmax(p))
            best, conf = self.labels[i], min(1.0, max(0.0, float(p[i])))  # float32 sums may pass 1
            rejected = float(s) < self.min_similarity or conf < self.min_confidence
            label = OUT_OF_SCOPE if rejected else best
            if rejected and best != OUT_OF_SCOPE:
                conf = 1.0 - conf
            out.append(Prediction(label, conf, float(s), best))
        return out

    def predict(self, vector: np.ndarray) -> Prediction:
        proba, top = self.scores(vector)
        return self.decide(proba, top)[0]


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
