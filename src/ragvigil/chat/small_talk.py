"""Small talk: a greeting, a thanks or chit-chat gets a short friendly reply instead of "not found".

Why after retrieval and not before: "hi, how do I export my notes?" greets *and* asks; only when the
knowledge base has nothing relevant is the turn small talk alone -- and a hit counts only when it
shares a word with the message: e5 finds *some* passage close to "谢谢" (a pricing table, at a cosine
above the relevance threshold), which is no sign that anything was asked. The reply text comes from an
injected ``small_talk_reply(intent, language)`` (the intents file's texts), with built-in short
zh/en texts as the default.
"""

from __future__ import annotations

from typing import Any

from ragvigil.chat.pipeline import BaseStage, Turn
from ragvigil.chat.understand import Understanding
from ragvigil.ops import semconv

SETTLED_BY = "small_talk"
ACTION = "small_talk"  # the intents file's ``action`` of greeting, thanks and chit-chat


class SmallTalk(BaseStage):
    """Between retrieve and generate: settle a small-talk turn that retrieval found nothing relevant for."""

    name = "small_talk"

    def __init__(self, understanding: Understanding) -> None:
        self.understanding = understanding

    def __call__(self, turn: Turn) -> None:
        if turn.settled_by is not None or turn.out_of_time or turn.analysis is None:
            return
        intent = turn.analysis.intent
        if intent is None or intent.action != ACTION:
            return
        if turn.retrieval is not None and any(h.term_coverage > 0 for h in turn.retrieval.relevant_hits):
            return  # a question that also greets still gets its answer
        reply = self.understanding.small_talk_reply(intent, turn.language)
        if not reply:
            return
        turn.answer = reply
        turn.sources = []
        turn.settled_by = SETTLED_BY

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        return {semconv.SPAN_KIND: semconv.CHAIN, "ragvigil.settled_by": turn.settled_by}
