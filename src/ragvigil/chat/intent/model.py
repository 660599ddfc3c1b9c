"""The intent model over e5 query vectors: which example intent a turn's vector is closest to, and how sure.

Why kNN over the examples with a softmax vote: e5 puts paraphrases of one request close together,
but an intent's examples form several clusters (``"refund my order"`` and ``"退款"`` are both
``billing_refund``), so a single centroid blurs them; a linear probe needs many rows per intent to
beat the neighbours alone (the benchmark ``bench/quality_intent.py`` compares them). The vote is a
softmax of the top-k cosines at a temperature, so the confidence is a probability that sums to 1
over intents, and a turn far from every example (low top cosine) is out of scope: ``other``.

The default, ``ensemble``, averages the kNN vote with the probe's probabilities: the two err on
different turns (the neighbours on a near-duplicate of another intent's example, the probe on a
rare phrasing), and on BANKING77's held-out split the average scored 0.927 against 0.913 (kNN) and
0.915 (probe). The probe is fitted at load, so it is only fitted when rows x intents is within
``probe_max_cells`` (about a second of one core); a larger file is classified by kNN alone.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ragvigil.chat.probe import LinearProbe, fit

__all__ = ["METHODS", "IntentModel", "Prediction"]

Method = Literal["ensemble", "knn", "centroid", "probe"]
METHODS: tuple[str, ...] = ("ensemble", "knn", "centroid", "probe")
OUT_OF_SCOPE = "other"
# rows x intents of the largest probe fitted at load: 300 epochs of full-batch Adam took 0.5 s for the
# shipped file (280 x 11 = 3,080 cells) and 2.9 s for 25,000 cells on one busy core, so 10,000 is about
# a second. OpenBLAS threads fighting for busy cores can make it 10x slower: OPENBLAS_NUM_THREADS=1 helps.
PROBE_MAX_CELLS = 10_000
PROBE_L2 = 1e-2
PROBE_EPOCHS = 300


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
        method: Method = "ensemble",
        k: int = 10,
        temperature: float = 0.01,
        min_similarity: float = 0.0,
        min_confidence: float = 0.0,
        probe_max_cells: int | None = PROBE_MAX_CELLS,
    ) -> None:
        """``probe_max_cells`` None: fit the probe whatever the size (offline use, e.g. the benchmark)."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
        x = _normalise(np.asarray(vectors, dtype=np.float32))
        if x.ndim != 2 or len(x) != len(labels) or not len(x):
            raise ValueError("one vector per label, at least one")
        self.k = max(1, int(k))
        self.temperature = float(temperature)
        self.min_similarity = float(min_similarity)
        self.min_confidence = float(min_confidence)
        self.labels: tuple[str, ...] = tuple(sorted(set(labels)))
        index = {label: i for i, label in enumerate(self.labels)}
        self._y = np.array([index[label] for label in labels], dtype=np.int64)
        self._x = x
        self._centroids = _normalise(np.stack([x[self._y == i].mean(axis=0) for i in range(len(self.labels))]))
        too_large = probe_max_cells is not None and len(x) * len(self.labels) > probe_max_cells
        if method == "ensemble" and (too_large or len(self.labels) < 2):
            method = "knn"  # too large to fit at load in about a second, or one intent: the neighbours alone
        self.method: Method = method
        self._probe: LinearProbe | None = None
        if method in ("probe", "ensemble"):
            self._probe = fitted_probe(x, list(labels))

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
            return self._probe_proba(q), top
        votes = self._knn(q, sims)
        if self.method == "ensemble":
            return (votes + self._probe_proba(q)) / 2.0, top
        return votes, top

    def _probe_proba(self, q: np.ndarray) -> np.ndarray:
        assert self._probe is not None
        order = [self._probe.labels.index(label) for label in self.labels]
        return self._probe.proba(q)[:, order]

    def _knn(self, q: np.ndarray, sims: np.ndarray) -> np.ndarray:
        k = min(self.k, sims.shape[1])
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near_sims = np.take_along_axis(sims, nearest, axis=1)
        weights = _softmax(near_sims / self.temperature)
        votes = np.zeros((len(q), len(self.labels)), dtype=np.float64)
        np.add.at(votes, (np.repeat(np.arange(len(q)), k), self._y[nearest].ravel()), weights.ravel())
        return votes

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

    def similarity_to(self, vector: np.ndarray, label: str) -> float:
        """The top cosine of ``vector`` to the examples of ``label`` alone (-1 for an unknown label)."""
        if label not in self.labels:
            return -1.0
        q = _normalise(np.atleast_2d(np.asarray(vector, dtype=np.float32)))
        own = self._x[self._y == self.labels.index(label)]
        return float((q @ own.T).max())

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


_PROBES: OrderedDict[str, LinearProbe] = OrderedDict()  # fitted probes by training data, a few per process
_PROBES_LOCK = threading.Lock()
PROBES_KEPT = 8


def fitted_probe(x: np.ndarray, labels: list[str]) -> LinearProbe:
    """The probe of these examples, fitted once per process: every runtime (a restart of the app, a test's
    own) loads the same intents file, and the fit is the one costly step of loading it (a CPU shared with
    BLAS threads can stretch half a second into ten). Keyed by the vectors and labels themselves."""
    digest = hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    digest.update("\0".join(labels).encode())
    digest.update(f"{PROBE_L2}:{PROBE_EPOCHS}".encode())
    key = digest.hexdigest()
    with _PROBES_LOCK:
        probe = _PROBES.get(key)
        if probe is not None:
            _PROBES.move_to_end(key)
            return probe
    probe = fit(x, labels, l2=PROBE_L2, epochs=PROBE_EPOCHS)
    with _PROBES_LOCK:
        _PROBES[key] = probe
        while len(_PROBES) > PROBES_KEPT:
            _PROBES.popitem(last=False)
    return probe
