"""The answer text: the best sentence (a second only when it is needed), cited, with a note when the
source is in another language than the question.

Say less rather than more: one sentence usually is the answer; the next one of the same passage is
added only when the best is too short to stand alone, ends open (：), or is continued by the next
("它…", "此外…", "This…")."""

from __future__ import annotations

import re

from ragvigil.knowledge.tokenize import is_cjk
from ragvigil.providers.extractive.ranking import Candidate

__all__ = ["LANGUAGE_NOTE", "compose", "script_language"]

LANGUAGE_NOTE = {  # by the reader's language: the source is in the other one
    "zh": "（以下内容来自英文资料）",
    "en": "(This is from a Chinese document.)",
}
_CONTINUES = re.compile(
    r"^(?:它|他|她|其|这|该|此|但|但是|而|并|并且|而且|此外|另外|同时|也|还|其中|因此|所以|例如|比如|"
    r"(?:It|This|That|These|They|He|She|But|However|Also|Then|For example|So)\b)"
)
_OPEN_END = re.compile(r"[:：,，、]\s*$")
_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaffA-Za-z0-9]")
_LATIN = re.compile(r"[A-Za-z]")


def script_language(text: str) -> str | None:
    """``zh`` or ``en`` by script (the share of CJK characters); None for text with no letters."""
    if is_cjk(text):
        return "zh"
    return "en" if _LATIN.search(text) else None


def _needs_next(best: Candidate, nxt: Candidate | None, short_chars: int) -> bool:
    if nxt is None or nxt.passage != best.passage or nxt.position != best.position + 1:
        return False
    size = len(_WORD.findall(best.text))
    return size < short_chars or bool(_OPEN_END.search(best.text)) or (size < 24 and bool(_CONTINUES.match(nxt.text)))


def _runner_up(ranked: list[Candidate], margin: float, max_chars: int) -> Candidate | None:
    """The second best when it directly follows the best, is nearly as good, and the two stay short together:
    the answer then likely runs on into it. Never the sentence before: that is usually the lead that
    names the topic, which the best already answers about."""
    if len(ranked) < 2 or margin <= 0:
        return None
    best, second = ranked[0], ranked[1]
    near = second.passage == best.passage and second.position == best.position + 1
    fits = len(best.text) + len(second.text) <= max_chars
    return second if near and fits and second.score >= best.score - margin else None


def compose(
    ranked: list[Candidate],
    by_position: dict[tuple[int, int], Candidate],
    reader: str,
    short_chars: int = 12,
    pair_margin: float = 0.0,
    pair_chars: int = 90,
) -> tuple[str, list[int]]:
    """``(text, cited)`` for the best of ``ranked``; ``by_position`` finds the sentence that follows it."""
    best = ranked[0]
    chosen = [best]
    nxt = by_position.get((best.passage, best.position + 1))
    second = _runner_up(ranked, pair_margin, pair_chars)
    if second is not None:
        chosen = [best, second]
    elif _needs_next(best, nxt, short_chars):
        chosen.append(nxt)  # type: ignore[arg-type]
    sep = "" if reader == "zh" else " "
    body = sep.join(c.text for c in chosen)
    cited = [best.passage + 1]
    source = script_language(body)
    note = LANGUAGE_NOTE[reader] if source is not None and source != reader else ""
    return f"{note}{sep if note and reader == 'en' else ''}{body} [{best.passage + 1}]", cited
