"""A grounded answer composed from the passages' own sentences, with [n] citations; no model.

It picks the sentences that carry most of the question's weighted terms, keeps them in
document order, and cites the passage each came from. With no relevant passage it says
so plainly instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ragvigil.knowledge.chunking import split_sentences
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.providers.base import Generation, GenerationRequest

NO_ANSWER = {
    "zh": "抱歉，知识库里没有找到与这个问题相关的内容。您可以换个说法再问，或联系人工客服。",
    "en": "Sorry, I could not find anything about this in the knowledge base. "
    "You could rephrase the question or ask to talk to a person.",
}
_LEAD = {"zh": "根据知识库：", "en": "From the knowledge base:"}
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)、])\s+")


class ExtractiveGenerator:
    name = "extractive"

    def __init__(self, tokenizer: Tokenizer, max_sentences: int = 3, max_chars: int = 600) -> None:
        self.tokenizer = tokenizer
        self.max_sentences = max_sentences
        self.max_chars = max_chars

    def check(self) -> None:
        return None

    def generate(self, request: GenerationRequest) -> Generation:
        lang = "zh" if request.language == "zh" else "en"
        if not request.passages:
            return Generation(NO_ANSWER[lang], self.name)
        q_tokens = set(self.tokenizer.tokens(request.question))
        scored: list[tuple[float, int, int, str]] = []  # (score, passage, position, sentence)
        for p_idx, hit in enumerate(request.passages):
            for pos, sentence in enumerate(split_sentences(hit.text)):
                sentence = _BULLET.sub("", sentence).strip()
                if len(sentence) < 4:
                    continue
                overlap = q_tokens & set(self.tokenizer.tokens(sentence))
                weight = sum(len(t) for t in overlap)  # longer shared terms say more
                # earlier passages rank higher; inside a passage, earlier sentences slightly
                scored.append((weight - 0.5 * p_idx - 0.01 * pos, p_idx, pos, sentence))
        if not scored:
            return Generation(NO_ANSWER[lang], self.name)
        best = sorted(scored, reverse=True)[: self.max_sentences]
        if best[0][0] <= 0:  # no shared terms (e.g. cross-lingual): lead of the best passage
            best = [s for s in scored if s[1] == 0][:2]
        top_weight = best[0][0]
        chosen = [b for b in best if b[0] >= top_weight * 0.4 or b is best[0]]
        chosen.sort(key=lambda b: (b[1], b[2]))
        parts: list[str] = []
        size = 0
        cited: list[int] = []
        for _, p_idx, _, sentence in chosen:
            if parts and size + len(sentence) > self.max_chars:
                break
            parts.append(f"{sentence} [{p_idx + 1}]")
            size += len(sentence)
            if p_idx + 1 not in cited:
                cited.append(p_idx + 1)
        sep = "" if lang == "zh" else " "
        return Generation(_LEAD[lang] + sep + sep.join(parts), self.name, cited=cited)

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        text = self.generate(request).text
        for i in range(0, len(text), 24):
            yield text[i : i + 24]
