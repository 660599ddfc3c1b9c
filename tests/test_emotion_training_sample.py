"""The emotion training script's probe sample: with ``--cached-only`` it takes only rows the vector cache holds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

import train_emotion  # noqa: E402

from _datasets import Example  # noqa: E402
from _vectors import VectorCache  # noqa: E402


def test_cached_only_takes_the_cached_rows_in_order_and_embeds_nothing(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path / "vectors.sqlite")
    rows = [Example(f"review {i}", "positive" if i % 2 else "negative") for i in range(6)]
    for e in (rows[1], rows[4], rows[5]):  # as a previous run would have left them
        cache._db.execute("INSERT INTO vectors VALUES (?, ?)", (cache.key(e.text), np.zeros(384, np.float32).tobytes()))
    cache._db.commit()
    assert train_emotion.probe_sample(rows, 2, cache) == [rows[1], rows[4]]
    assert train_emotion.probe_sample(rows, 10, cache) == [rows[1], rows[4], rows[5]]
    assert train_emotion.probe_sample(rows, 2) == rows[:2]  # without the cache: the first rows, as before
    assert cache._embedder is None  # finding out started no embedding
