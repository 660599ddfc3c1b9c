"""The ``handoff`` stage: after the answer is made, decide whether a person takes over, queue it, tell the user.

Runs after ``generate`` and before ``persist``, so the stored answer carries the notice and the
record names the user message about to be stored. A failure to queue never fails the turn: the
database down spools the hand-off (see ``store``); only a full spool leaves the turn without one,
and then the user is told no one could be reached (and the turn is degraded), never promised a person.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ragvigil.chat.handoff.policy import HandoffPolicy
from ragvigil.chat.handoff.spool import SpoolFull
from ragvigil.chat.handoff.store import HandoffStore, NewHandoff
from ragvigil.chat.pipeline import BaseStage, Turn
from ragvigil.chat.understanding import Handoff

log = logging.getLogger(__name__)

NOTICE = {
    "zh": "我们已请工作人员跟进这段对话，会尽快与您联系。",
    "en": "A member of our team has been asked to follow up on this conversation and will be in touch soon.",
}
UNREACHABLE = {
    "zh": "抱歉，现在暂时无法为您转接工作人员。请稍后再试，或通过帮助中心的联系页面联系我们。",
    "en": "Sorry, we could not reach a person for you just now. Please try again shortly, "
    "or contact us through the help centre's contact page.",
}
CRISIS_NOTICE = {
    "zh": "我们也已请一位工作人员尽快跟进。",
    "en": "We have also asked a person from our team to follow up with you as soon as possible.",
}


def notice(handoff: Handoff, language: str) -> str:
    texts = CRISIS_NOTICE if handoff.reason == "crisis" else NOTICE
    return texts.get(language, texts["en"])


class HandOff(BaseStage):
    name = "handoff"

    def __init__(self, policy: HandoffPolicy, store: HandoffStore) -> None:
        self.policy = policy
        self.store = store

    def __call__(self, turn: Turn) -> None:
        decided = self.policy.decide(turn)
        if decided is None or turn.session_id is None:
            if not turn.answer:  # settled for a hand-off that the policy then did not make
                turn.answer = UNREACHABLE.get(turn.language, UNREACHABLE["en"])
            return
        new = NewHandoff(
            turn.session_id, turn.owner, turn.user_id, turn.user_message_id, decided.reason, decided.priority
        )
        try:
            record_id, where = self.store.create(new)
        except (SQLAlchemyError, SpoolFull, OSError) as exc:
            log.error("handoff_not_queued", extra={"reason": decided.reason, "error": type(exc).__name__})
            turn.degrade(f"hand-off ({decided.reason}) could not be queued ({type(exc).__name__})")
            _tell(turn, UNREACHABLE.get(turn.language, UNREACHABLE["en"]))
            return
        turn.handoff = Handoff(decided.reason, decided.priority, record_id)
        _tell(turn, notice(decided, turn.language))  # after the crisis response (hotlines first) or the answer
        log.info(
            "handoff_queued",
            extra={"reason": decided.reason, "priority": decided.priority, "handoff_id": record_id, "stored_in": where},
        )

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        attrs = super().span_attributes(turn)
        if turn.handoff is not None:
            attrs |= {
                "ragvigil.handoff.reason": turn.handoff.reason,
                "ragvigil.handoff.priority": turn.handoff.priority,
            }
        return attrs


def _tell(turn: Turn, text: str) -> None:
    """Append ``text`` to the answer as a paragraph of its own (the whole answer when there is none)."""
    turn.answer = f"{turn.answer.rstrip()}\n\n{text}" if turn.answer else text
