"""A Chinese turn is read by the Chinese polarity probe and combiner, any other turn by the general ones.

Why: one probe trained on Chinese reviews helped Chinese and cost English; the turn's language picks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from ragvigil.chat.emotion import OfflineEmotionAnalyzer
from ragvigil.chat.emotion.offline import is_chinese
from ragvigil.chat.probe import LinearProbe
from ragvigil.knowledge.embeddings import E5Embedder


@pytest.fixture(scope="module")
def embedder() -> Iterator[E5Embedder]:
    yield E5Embedder(threads=1)


def _flipped(probe: LinearProbe) -> LinearProbe:
    """The probe with its positive and negative columns swapped: it reads every turn the other way round."""
    order = [probe.labels.index(label) for label in probe.labels]
    neg, pos = probe.labels.index("negative"), probe.labels.index("positive")
    order[neg], order[pos] = pos, neg
    return dataclasses.replace(probe, weights=probe.weights[:, order], bias=probe.bias[order])


def test_the_shipped_analyzer_has_a_chinese_probe_trained_on_more_reviews() -> None:
    analyzer = OfflineEmotionAnalyzer.load()
    assert analyzer.polarity_zh is not None and analyzer.combiner_zh is not None
    assert analyzer.polarity_zh.meta["rows"] > 10 * analyzer.polarity.meta["rows"] // 2
    assert analyzer.combiner_zh.dim == analyzer.combiner.dim == 3


@pytest.mark.parametrize(
    ("text", "chinese"), [("这家酒店房间干净，服务热情，下次还住", True), ("this hotel was wonderful", False)]
)
def test_the_turns_language_picks_the_probe(embedder: E5Embedder, text: str, chinese: bool) -> None:
    shipped = OfflineEmotionAnalyzer.load()
    assert shipped.polarity_zh is not None
    flipped_zh = dataclasses.replace(shipped, polarity_zh=_flipped(shipped.polarity_zh))
    v = embedder.embed_query(text)
    base, changed = shipped.margin(v, is_chinese(text))[0], flipped_zh.margin(v, is_chinese(text))[0]
    assert base != 0
    if chinese:
        assert np.isclose(changed, -base)  # the Chinese probe read it
    else:
        assert changed == base  # the general probe read it, the Chinese one was never asked


def test_a_given_language_wins_over_the_characters() -> None:
    assert is_chinese("酒店很好") and not is_chinese("hotel ok")
    assert not is_chinese("酒店很好", "en") and is_chinese("hotel ok", "zh-CN")
