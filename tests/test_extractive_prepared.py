"""The extractive generator prepares a passage once: a repeated passage is only scored, and a changed one is read afresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.providers.extractive import ExtractiveGenerator
from ragvigil.providers.extractive.ranking import rank
from ragvigil.types import GenerationRequest, Hit


class CountingTokenizer(Tokenizer):
    """The real tokenizer, counting the texts it is asked to tokenize."""

    def __init__(self, cache_dir: Path) -> None:
        super().__init__(cache_dir)
        self.texts: list[str] = []

    def tokens(self, text: str, keep_stopwords: bool = False) -> list[str]:
        self.texts.append(text)
        return super().tokens(text, keep_stopwords)


PRICING = "团队版每人每月 30 元。个人版免费。企业版请联系销售获取报价。付款后可以开具发票。"
SYNC = "Open the app and tap the cloud icon. The icon turns green when the sync is done. Sync runs every hour."


@pytest.fixture
def tokenizer(tmp_path: Path) -> CountingTokenizer:
    return CountingTokenizer(tmp_path)


def hit(chunk_id: int, text: str, anchor: str = "doc") -> Hit:
    return Hit(chunk_id, f"doc{chunk_id}", "doc", "doc.md", anchor, text, 1.0, relevant=True)


def test_a_repeated_passage_is_not_tokenized_again(tokenizer: CountingTokenizer) -> None:
    gen = ExtractiveGenerator(tokenizer)
    request = GenerationRequest("团队版多少钱？", [hit(1, PRICING)], language="zh")
    first = gen.generate(request).text
    tokenizer.texts.clear()
    second = gen.generate(GenerationRequest("团队版多少钱？", [hit(1, PRICING)], language="zh")).text
    assert second == first and "30 元" in first
    assert tokenizer.texts == ["团队版多少钱？"]  # only the question: the passage's sentences were prepared once


def test_the_same_answers_with_and_without_the_prepared_passages(tokenizer: CountingTokenizer) -> None:
    gen = ExtractiveGenerator(tokenizer)
    for question, text, lang in [("团队版多少钱？", PRICING, "zh"), ("How do I sync?", SYNC, "en")]:
        request = GenerationRequest(question, [hit(1, text), hit(2, SYNC if lang == "zh" else PRICING)], language=lang)
        cached = [
            (c.passage, c.position, c.text, round(c.score, 9)) for c in rank(request, tokenizer, None, gen.passages)
        ]
        fresh = [(c.passage, c.position, c.text, round(c.score, 9)) for c in rank(request, tokenizer)]
        again = [
            (c.passage, c.position, c.text, round(c.score, 9)) for c in rank(request, tokenizer, None, gen.passages)
        ]
        assert cached == fresh == again


def test_a_chunk_whose_text_changed_is_prepared_from_its_new_text(tokenizer: CountingTokenizer) -> None:
    gen = ExtractiveGenerator(tokenizer)
    assert "30 元" in gen.generate(GenerationRequest("团队版多少钱？", [hit(7, PRICING)], language="zh")).text
    changed = PRICING.replace("30 元", "45 元")
    answer = gen.generate(GenerationRequest("团队版多少钱？", [hit(7, changed)], language="zh")).text
    assert "45 元" in answer and "30 元" not in answer


def test_the_prepared_passages_are_bounded(tokenizer: CountingTokenizer) -> None:
    gen = ExtractiveGenerator(tokenizer, prepared_passages=3)
    for i in range(10):
        gen.generate(GenerationRequest("How do I sync?", [hit(i, f"{SYNC} Step {i}.")], language="en"))
    assert len(gen.passages) == 3
    tokenizer.texts.clear()
    gen.generate(GenerationRequest("How do I sync?", [hit(0, f"{SYNC} Step 0.")], language="en"))
    assert len(tokenizer.texts) > 1  # the oldest was dropped: prepared again
