"""Cross-lingual retrieval: an English question finds the Chinese document that answers it and the reverse,
through ``HybridRetriever`` with the real bundled e5, while same-language questions keep their own document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ragvigil.app import Runtime
from ragvigil.config import RetrievalSettings
from ragvigil.knowledge import retrieval
from ragvigil.knowledge.crosslingual import own_strength, prefer_crosslingual, script_of
from ragvigil.knowledge.retrieval import HybridRetriever, vector_weights
from tests.conftest import make_settings

HELPCENTRE = Path(__file__).resolve().parents[1] / "samples" / "helpcentre"
DOCS = (
    "en-sync-troubleshooting.md",
    "en-version-history-trash.md",
    "en-storage-attachments.md",
    "en-payment-methods.md",
    "zh-two-factor-auth.md",
    "zh-web-clipper.md",
    "zh-invoice.md",
    "zh-billing-refund.md",
)


@pytest.fixture(scope="module")
def helpcentre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """Four English-only and four Chinese-only help-centre articles, every vector filled in."""
    rt = Runtime(make_settings(tmp_path_factory.mktemp("crosslingual")))
    for name in DOCS:
        assert rt.ingestor.ingest_bytes("hc", name, (HELPCENTRE / name).read_bytes()).outcome == "created"
    rt.filler.drain()
    yield rt
    rt.close()


def _first(rt: Runtime, question: str, mode: str = "hybrid") -> tuple[str, bool]:
    hit = rt.retriever.search("hc", question, mode=mode).hits[0]
    return hit.source, hit.relevant


@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("How do I set up an authenticator app as a second login step?", "zh-two-factor-auth.md"),
        ("Which browsers does the clipping extension work in?", "zh-web-clipper.md"),
        ("How can my company get a VAT invoice (fapiao) for what we paid?", "zh-invoice.md"),
        ("同步图标变成红色感叹号是怎么回事？", "en-sync-troubleshooting.md"),
        ("不小心把笔记改坏了，能退回到之前的版本吗？", "en-version-history-trash.md"),
    ],
)
def test_a_question_finds_the_document_in_the_other_language(helpcentre: Runtime, question: str, source: str) -> None:
    first, relevant = _first(helpcentre, question)
    assert first == source
    assert relevant  # judged by its cosine: term coverage is 0 across languages
    hit = helpcentre.retriever.search("hc", question).hits[0]
    assert hit.language == source[:2] != script_of(question)


@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("What does sync error E2013 mean?", "en-sync-troubleshooting.md"),
        ("What happens to my subscription if my card renewal payment fails?", "en-payment-methods.md"),
        ("怎么申请增值税专用发票", "zh-invoice.md"),
        ("退款申请通过后多久能到账？", "zh-billing-refund.md"),
    ],
)
def test_a_same_language_question_keeps_its_own_document_first(helpcentre: Runtime, question: str, source: str) -> None:
    first, relevant = _first(helpcentre, question)
    assert (first, relevant) == (source, True)
    other = [h for h in helpcentre.retriever.search("hc", question).hits if h.language != script_of(question)]
    assert not any(h.relevant for h in other)  # the other language's nearest hits are noise here


def test_the_other_language_stays_behind_when_its_own_language_answers(helpcentre: Runtime) -> None:
    hits = helpcentre.retriever.search("hc", "两步验证一直提示验证码无效怎么办", k=100).hits
    languages = [h.language for h in hits]
    assert languages[0] == "zh"
    assert "en" in languages  # still listed, after every Chinese hit
    assert languages.index("en") > max(i for i, lang in enumerate(languages) if lang == "zh")


def test_a_monolingual_base_ranks_as_plain_fusion(tmp_path: Path) -> None:
    """With one language only nothing is split: RRF of BM25 and vector ranks, the vector side weighted up by the
    share of the query that BM25's best hit misses (a paraphrase shares few words with its answer)."""
    rt = Runtime(make_settings(tmp_path))
    try:
        for name in DOCS[:4]:
            rt.ingestor.ingest_bytes("en", name, (HELPCENTRE / name).read_bytes())
        rt.filler.drain()
        res = rt.retriever.search("en", "where do deleted notes go and for how long", k=10)
        rs = rt.retriever.settings
        top = next(h for h in res.hits if h.bm25_rank == 1)
        assert 0 < top.term_coverage < 1  # so the boost is in play
        wv = vector_weights(rs.vector_weight, rs.paraphrase_vector_boost, top.term_coverage)
        expected = [
            (rs.bm25_weight / (rs.rrf_k + h.bm25_rank) if h.bm25_rank else 0.0)
            + (wv / (rs.rrf_k + h.vector_rank) if h.vector_rank else 0.0)
            for h in res.hits
        ]
        assert [h.score for h in res.hits] == pytest.approx(expected, rel=1e-4)
        assert [h.score for h in res.hits] == sorted((h.score for h in res.hits), reverse=True)
        assert {h.language for h in res.hits} == {"en"}
    finally:
        rt.close()


def test_vector_weights() -> None:
    assert vector_weights(1.0, 1.0, None) == 1.0  # no BM25 hit: nothing to weigh against
    assert vector_weights(1.0, 1.0, 1.0) == 1.0  # BM25's best hit covers the whole query: equal weights
    assert vector_weights(1.0, 1.0, 0.25) == pytest.approx(1.75)
    assert vector_weights(2.0, 0.0, 0.0) == 2.0  # boost off: the configured weight


def test_with_a_zero_offset_the_language_gap_buries_the_other_language(helpcentre: Runtime) -> None:
    """The offset is what lifts the cross-lingual hit: without it e5's same-language noise wins again."""
    retriever = helpcentre.retriever
    saved = retriever.settings
    try:
        retriever.settings = saved.model_copy(update={"crosslingual_offset": 0.0})
        first, _ = _first(helpcentre, "同步图标变成红色感叹号是怎么回事？")
        assert first.startswith("zh-")
    finally:
        retriever.settings = saved


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("How do I pay with WeChat Pay?", "en"),
        ("能把笔记导出成 Word 或者 Markdown 格式吗？", "zh"),
        ("How do I pay with WeChat Pay (微信)?", "en"),
        ("E2013", "en"),
        ("？！ 123", None),
        ("退款", "zh"),
    ],
)
def test_script_of(text: str, script: str | None) -> None:
    assert script_of(text) == script


def test_prefer_crosslingual_rule() -> None:
    offset, floor = 0.08, 0.78
    # e5's typical gap: own-language noise 0.88, the answering passage in the other language 0.84
    assert prefer_crosslingual(0.88, 0.84, offset, floor)
    # an own-language passage that really answers sits ~0.10 above the other language's best
    assert not prefer_crosslingual(0.92, 0.82, offset, floor)
    # below the floor the other language never wins, even with nothing in the query's own language
    assert not prefer_crosslingual(None, 0.77, offset, floor)
    assert prefer_crosslingual(None, 0.80, offset, floor)
    assert not prefer_crosslingual(0.80, None, offset, floor)
    # query terms the own-language hit covers count for it: full coverage holds a close call
    assert prefer_crosslingual(own_strength(0.868, 0.0, 0.06), 0.80, offset, floor)
    assert not prefer_crosslingual(own_strength(0.868, 1.0, 0.06), 0.80, offset, floor)


def test_crosslingual_settings_are_bounded() -> None:
    with pytest.raises(ValueError):
        RetrievalSettings(crosslingual_candidates=0)
    with pytest.raises(ValueError):
        RetrievalSettings(crosslingual_offset=1.5)


def test_each_chunks_script_comes_with_the_bm25_view(helpcentre: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worked out when the view is built (in the background for a large base), never inside a query: on the
    first query after a rebuild it used to hold that query for minutes at 1M chunks."""
    index = helpcentre.catalog.bm25("hc")
    assert index.scripts == [script_of(r.text) for r in index.records]
    assert index.script_set == {"zh", "en"}
    seen: list[str] = []
    monkeypatch.setattr(retrieval, "script_of", lambda text: seen.append(text) or script_of(text))
    rt = helpcentre.retriever
    fresh = HybridRetriever(rt.catalog, rt.tokenizer, rt.embedder, rt.store, rt.settings)  # nothing cached
    question = "How do I set up an authenticator app as a second login step?"
    hits = fresh.search("hc", question).hits
    assert seen == [question]  # the query's own script only
    assert hits[0].source == "zh-two-factor-auth.md" and hits[0].language == "zh"  # ranked as before
