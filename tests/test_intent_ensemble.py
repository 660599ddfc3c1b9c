"""The intent model's default: the kNN vote averaged with a probe fitted at load, kNN alone for large files."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragvigil.chat.intent import ExampleIntentClassifier, ExampleVectors, IntentSet, IntentSpec
from ragvigil.chat.intent.model import PROBE_MAX_CELLS, IntentModel


def clusters(per: int, intents: int, dim: int = 32, seed: int = 7) -> tuple[np.ndarray, list[str]]:
    """``per`` noisy rows around each of ``intents`` random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(intents, dim))
    x = np.concatenate([c + rng.normal(scale=0.6, size=(per, dim)) for c in centres])
    return x.astype(np.float32), [f"i{j}" for j in range(intents) for _ in range(per)]


def test_the_default_is_the_average_of_the_knn_vote_and_the_probe() -> None:
    x, y = clusters(per=12, intents=4)
    q = clusters(per=3, intents=4, seed=8)[0]
    ensemble = IntentModel(x, y)
    assert ensemble.method == "ensemble"
    knn, _ = IntentModel(x, y, method="knn").scores(q)
    probe, _ = IntentModel(x, y, method="probe").scores(q)
    both, _ = ensemble.scores(q)
    np.testing.assert_allclose(both, (knn + probe) / 2, atol=1e-6)
    np.testing.assert_allclose(both.sum(axis=1), 1.0, atol=1e-5)  # still a probability over intents


def test_on_overlapping_intents_the_ensemble_beats_the_neighbours_alone() -> None:
    # 8 intents, 10 examples each, noise wide enough that their clouds overlap (the hard case of a
    # real intents file: a few phrasings per intent); the same centres for the examples and the turns
    centres = np.random.default_rng(1).normal(size=(8, 32))

    def sample(per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = np.concatenate([c + rng.normal(scale=1.5, size=(per, 32)) for c in centres]).astype(np.float32)
        return x, np.array([f"i{j}" for j in range(8) for _ in range(per)])

    x, y = sample(10, 7)
    q, gold = sample(50, 9)

    def accuracy(model: IntentModel) -> float:
        proba, _ = model.scores(q)
        return float((np.array(model.labels)[proba.argmax(axis=1)] == gold).mean())

    knn, ensemble = accuracy(IntentModel(x, list(y), method="knn")), accuracy(IntentModel(x, list(y)))
    assert ensemble >= knn + 0.03, (knn, ensemble)


def test_a_file_too_large_to_fit_at_load_is_classified_by_knn_alone() -> None:
    x, y = clusters(per=20, intents=5)
    assert IntentModel(x, y, probe_max_cells=len(x) * 5 - 1).method == "knn"
    assert IntentModel(x, y, probe_max_cells=len(x) * 5).method == "ensemble"
    assert IntentModel(x, y, probe_max_cells=None).method == "ensemble"  # no bound: offline use
    assert IntentModel(x[:20], y[:20]).method == "knn"  # one intent: nothing for a probe to separate
    assert PROBE_MAX_CELLS >= 280 * 11  # the shipped file (280 examples, 11 intents) gets the ensemble


class _Fixed(ExampleVectors):
    def __init__(self, table: dict[str, np.ndarray]) -> None:
        super().__init__(embedder=None, path=None)  # type: ignore[arg-type]
        self.table = table

    def vectors(self, texts):  # type: ignore[no-untyped-def]
        return np.stack([self.table[t] for t in texts])


def test_the_classifier_logs_the_method_it_loaded_with(caplog: pytest.LogCaptureFixture) -> None:
    x, y = clusters(per=10, intents=3)
    texts = [f"t{n}" for n in range(len(x))]
    by: dict[str, list[str]] = {}
    for t, label in zip(texts, y, strict=True):
        by.setdefault(label, []).append(t)
    intents = IntentSet(tuple(IntentSpec(n, tuple(ex)) for n, ex in sorted(by.items())), 0.0, "test")
    vectors = _Fixed(dict(zip(texts, x, strict=True)))
    with caplog.at_level(logging.INFO, logger="ragvigil.chat.intent.classifier"):
        small = ExampleIntentClassifier(intents, None, vectors=vectors)
        large = ExampleIntentClassifier(intents, None, vectors=vectors, probe_max_cells=10)
    assert (small.model.method, large.model.method) == ("ensemble", "knn")
    assert [r.method for r in caplog.records if r.msg == "intents_loaded"] == ["ensemble", "knn"]


def test_the_same_examples_are_fitted_once_per_process() -> None:
    x, y = clusters(per=12, intents=4, seed=11)
    first, again = IntentModel(x, y), IntentModel(x.copy(), list(y))  # e.g. a second runtime, same intents file
    assert first._probe is not None and again._probe is first._probe
    other = IntentModel(x[:-1], y[:-1])  # an edited file is fitted anew
    assert other._probe is not first._probe
