"""A request for a person that the knowledge base has nothing for: the hand-off notice is the whole answer.

"转人工" used to get whatever passage shared a word with it ("…请联系客服申请人工解绑") and then the
notice; "I want to complain" with nothing relevant found, the "not found" text and then the notice. Settled here, between retrieve and generate, the turn skips generation and the
``handoff`` stage's notice is the answer; a stream sends it too, since a settled answer is known
before the stream starts. A request that also asks something the knowledge base answers keeps its
answer (the notice follows it). In the chain only while hand-off is on: otherwise nobody follows up.
"""

from __future__ import annotations

from typing import Any

from ragvigil.chat.pipeline import BaseStage, Turn
from ragvigil.ops import semconv

SETTLED_BY = "handoff_request"
ACTION = "handoff"  # the intents file's ``action`` of a complaint or a request for a person
# asking for a person is the whole question: a passage sharing "人工" (人工解绑) is no answer to it
HUMAN_REQUEST = "human_request"


class HandoffRequest(BaseStage):
    """Between retrieve and generate: settle a hand-off intent that retrieval found nothing relevant for."""

    name = "handoff_request"

    def __call__(self, turn: Turn) -> None:
        if turn.settled_by is not None or turn.out_of_time or turn.analysis is None:
            return
        intent = turn.analysis.intent
        if intent is None or intent.action != ACTION:
            return
        found = turn.retrieval is not None and any(h.term_coverage > 0 for h in turn.retrieval.relevant_hits)
        if found and intent.name != HUMAN_REQUEST:
            return  # "I want to complain: my export fails" still gets the export answer
        turn.answer = ""  # the handoff stage writes the notice, or says why no one could be reached
        turn.sources = []
        turn.settled_by = SETTLED_BY

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        return {semconv.SPAN_KIND: semconv.CHAIN, "ragvigil.settled_by": turn.settled_by}
