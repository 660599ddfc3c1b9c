"""When a turn is handed to a person, and how urgently.

Reasons, most urgent first: ``crisis`` (1), ``complaint`` and ``negative_trend`` (2),
``human_request`` and ``repeated_no_answer`` (3). Of several triggers the most urgent one wins;
the store keeps one open record per session and reason, so a trigger firing turn after turn
never queues a duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ragvigil.chat.handoff.signals import negative_streak, no_answer_streak, polarity_of
from ragvigil.chat.history import SessionHistory
from ragvigil.chat.sessions import SessionNotFound, SessionOwner, StoredMessage
from ragvigil.chat.understanding import Handoff
from ragvigil.config import HandoffSettings

if TYPE_CHECKING:
    from ragvigil.chat.pipeline import Turn

log = logging.getLogger(__name__)

PRIORITY = {"crisis": 1, "complaint": 2, "negative_trend": 2, "human_request": 3, "repeated_no_answer": 3}
REASONS = tuple(PRIORITY)

# the session's messages before this turn, oldest first
RecentMessages = Callable[[str, SessionOwner, int], list[StoredMessage]]


class RecentFromStore:
    """The session's last messages, whole, from ``SessionHistory`` (database merged with the journal).

    Only for a turn whose history stage did not read them (``Turn.earlier`` is None); the history
    read degrades the turn when the database is down, this one just counts what is known.
    """

    def __init__(self, history: SessionHistory) -> None:
        self.history = history

    def __call__(self, session_id: str, owner: SessionOwner, limit: int) -> list[StoredMessage]:
        try:
            messages, problem = self.history.recent_messages(session_id, limit, owner)
        except SessionNotFound:
            return []
        if problem:
            log.warning("handoff_history_unavailable", extra={"error": problem})
        return messages  # type: ignore[return-value]  # stored rows carry the same fields


class HandoffPolicy:
    """``decide(turn)``: the hand-off a turn calls for, or None (see the module docstring)."""

    def __init__(self, settings: HandoffSettings, recent: RecentMessages | None = None) -> None:
        self.settings = settings
        self.recent = recent

    def decide(self, turn: Turn) -> Handoff | None:
        """The most urgent trigger of this turn, given the session's stored analyses and answers."""
        if not self.settings.enabled:
            return None
        reasons = [r for r in self.triggers(turn) if r in PRIORITY]
        if not reasons:
            return None
        reason = min(reasons, key=lambda r: (PRIORITY[r], REASONS.index(r)))
        return Handoff(reason, PRIORITY[reason])

    def triggers(self, turn: Turn) -> list[str]:
        """Every reason this turn gives for a hand-off."""
        out: list[str] = []
        analysis = turn.analysis
        if analysis is not None:
            if analysis.safety.crisis:
                out.append("crisis")
            intent = analysis.intent
            if intent is not None:
                if intent.name == "human_request":
                    out.append("human_request")
                elif intent.name == "complaint" or intent.action == "handoff":
                    out.append("complaint")
        earlier = self._earlier(turn)
        polarities = [polarity_of(m.analysis) for m in earlier if m.role == "user"]
        polarities.append(analysis.emotion.polarity if analysis and analysis.emotion else None)
        if negative_streak(polarities) >= self.settings.negative_turns:
            out.append("negative_trend")
        answers = [(m.content, m.sources) for m in earlier if m.role == "assistant"]
        answers.append((turn.answer, turn.sources))
        if no_answer_streak(answers) >= self.settings.no_answer_turns:
            out.append("repeated_no_answer")
        return out

    @property
    def look_back(self) -> int:
        """How many of the session's latest messages the trends read (the history stage reads them for it)."""
        return 2 * max(self.settings.negative_turns, self.settings.no_answer_turns)

    def _earlier(self, turn: Turn) -> list[StoredMessage]:
        if turn.session_id is None or turn.new_session:
            return []
        if turn.earlier is not None:
            return turn.earlier[-self.look_back :]  # what the history stage read: no second read of the session
        if self.recent is None:
            return []
        return self.recent(turn.session_id, SessionOwner(turn.owner, turn.user_id), self.look_back)
