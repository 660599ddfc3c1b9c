"""A grounded answer composed from the passages' own sentences, with [n] citations; no model.

What users read in the embedded default and during every LLM outage, so it must find the sentence
that answers: candidates come from a splitter that keeps titles, quotes and abbreviations whole
(``knowledge.chunking.split_sentences``), are ranked by ``ranking`` (question terms, the background
sentence vectors, the kind of content asked for, FAQ structure, the passage's rank), and ``compose``
writes the best one, cited, noting when the source is in another language. With no relevant passage
it says so plainly instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterator

from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.providers.base import Generation, GenerationRequest
from ragvigil.providers.extractive.compose import compose, script_language
from ragvigil.providers.extractive.ranking import PassageCache, Weights, rank

__all__ = ["NO_ANSWER", "ExtractiveGenerator"]

NO_ANSWER = {
    "zh": "抱歉，知识库里没有找到与这个问题相关的内容。您可以换个说法再问，或联系人工客服。",
    "en": "Sorry, I could not find anything about this in the knowledge base. "
    "You could rephrase the question or ask to talk to a person.",
}


class ExtractiveGenerator:
    """The model-free generator: one cited sentence (two when needed) from the passages, or the no-answer."""

    name = "extractive"

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_sentences: int = 2,
        max_chars: int = 600,
        weights: Weights | None = None,
        prepared_passages: int = 512,
    ) -> None:
        self.tokenizer = tokenizer
        # what ranking needs of a passage, prepared once per chunk: a turn then only scores its sentences
        self.passages = PassageCache(tokenizer, prepared_passages)
        self.max_sentences = max_sentences
        self.max_chars = max_chars  # an answer sentence longer than this is cut (a table row, a run-on line)
        self.weights = weights or Weights()

    def check(self) -> None:
        return None

    def generate(self, request: GenerationRequest) -> Generation:
        reader = script_language(request.question) or ("zh" if request.language == "zh" else "en")
        if not request.passages:
            return Generation(NO_ANSWER[reader], self.name)
        ranked = rank(request, self.tokenizer, self.weights, self.passages)
        if not ranked:
            return Generation(NO_ANSWER[reader], self.name)
        for c in ranked:
            if len(c.text) > self.max_chars:
                c.text = c.text[: self.max_chars].rstrip() + "…"
        by_position = {(c.passage, c.position): c for c in ranked}
        short = 12 if self.max_sentences > 1 else 0
        margin = self.weights.pair_margin if self.max_sentences > 1 else 0.0
        text, cited = compose(ranked, by_position, reader, short, margin, self.weights.pair_chars)
        return Generation(text, self.name, cited=cited)

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        text = self.generate(request).text
        for i in range(0, len(text), 24):
            yield text[i : i + 24]
