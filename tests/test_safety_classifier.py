"""The crisis probe: loaded from the committed weights, it flags a crisis phrasing no lexicon term covers."""

from __future__ import annotations

import pytest

from ragvigil.chat.safety import SafetyChecker
from ragvigil.chat.safety.classifier import CRISIS_WEIGHTS, OFFENSIVE_WEIGHTS, load_probes
from ragvigil.knowledge.embeddings import E5Embedder

UNCOVERED = "I have written letters to say goodbye to everyone I love"


@pytest.fixture(scope="module")
def embedder() -> E5Embedder:
    return E5Embedder(threads=1)


def test_weights_are_committed_with_their_sources() -> None:
    probes = load_probes()
    assert probes.crisis is not None and probes.offensive is not None
    assert set(probes.crisis.labels) == {"crisis", "benign"}
    assert set(probes.offensive.labels) == {"offensive", "safe"}
    assert any("CC BY" in licence for licence in probes.crisis.meta["sources"].values())
    assert "COLD train" in probes.offensive.meta["sources"]
    assert CRISIS_WEIGHTS.stat().st_size < 64_000 and OFFENSIVE_WEIGHTS.stat().st_size < 64_000


def test_probe_flags_a_crisis_the_lexicon_misses(embedder: E5Embedder) -> None:
    checker = SafetyChecker()
    assert not checker.check(UNCOVERED).flagged  # no lexicon term or pattern covers it
    verdict = checker.check(UNCOVERED, embedder.embed_query(UNCOVERED))
    assert verdict.crisis
    assert [f.source for f in verdict.findings] == ["classifier"]
    assert verdict.findings[0].rule == "probe.crisis"


def test_probe_leaves_ordinary_turns(embedder: E5Embedder) -> None:
    checker = SafetyChecker()
    for text in ("please reset my password", "kill the process please", "这个酒店太差了", "I am so happy today"):
        assert not checker.check(text, embedder.embed_query(text)).flagged, text


def test_without_probes_the_lexicon_still_decides(embedder: E5Embedder) -> None:
    from ragvigil.chat.safety.classifier import Probes

    checker = SafetyChecker(probes=Probes(None, None))
    assert not checker.check(UNCOVERED, embedder.embed_query(UNCOVERED)).flagged
    assert checker.check("我想自杀", embedder.embed_query("我想自杀")).crisis


def test_benign_context_does_not_veto_a_confident_crisis(embedder: E5Embedder) -> None:
    text = "笑死 " + UNCOVERED  # a benign context of the lexicon's crisis entry, next to a real crisis
    checker = SafetyChecker()
    assert checker.check(text, embedder.embed_query(text)).crisis


def test_offensive_probe_flags_a_slur_free_generalisation(embedder: E5Embedder) -> None:
    text = "黑人都是懒惰的"  # a hateful generalisation with no lexicon term
    checker = SafetyChecker()
    assert not checker.check(text).flagged
    verdict = checker.check(text, embedder.embed_query(text))
    assert verdict.category == "harassment"
    assert [f.rule for f in verdict.findings] == ["probe.offensive"]
    for ordinary in ("what time do you open on sunday", "我的快递到哪了"):
        assert not checker.check(ordinary, embedder.embed_query(ordinary)).flagged
