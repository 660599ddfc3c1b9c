"""FAQ structure: which sentences ask (问：…？, Q:, a question heading) and which answer them (答：…, A:).

A question line must never be the answer (it repeats the user's words best of all, so it would win on
overlap); its match is credited to the answer that follows it instead."""

from __future__ import annotations

import re

__all__ = ["answer_prefix", "is_question", "strip_answer_prefix"]

_ASK = re.compile(r"^\s*(?:问|提问|Q\d*|Question)\s*[:：.、]", re.I)
_ANSWER = re.compile(r"^\s*(?:答|回答|解答|A\d*|Answer)\s*[:：.、]\s*", re.I)
_QUESTION_END = re.compile(r"[?？]\s*[”’」』\"]?$")


def is_question(sentence: str) -> bool:
    """A sentence that asks: marked 问/Q, or ending in a question mark."""
    return bool(_ASK.match(sentence) or _QUESTION_END.search(sentence))


def answer_prefix(sentence: str) -> bool:
    """A sentence marked as an FAQ answer (答：, A:)."""
    return bool(_ANSWER.match(sentence))


def strip_answer_prefix(sentence: str) -> str:
    """The answer without its 答：/A: mark, which says nothing to the reader of a chat answer."""
    return _ANSWER.sub("", sentence, count=1) or sentence
