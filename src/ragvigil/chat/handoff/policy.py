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

from sqlalchemy.exc import SQLAlchemyError

from ragvigil.chat.handoff.signals import negative_streak, no_answer_streak, polarity_of
from ragvigil.chat.journal import Journal
from ragvigil.chat.sessions import SessionNotFound, SessionOwner, SessionStore, StoredMessage
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
    """The session's last messages from the database plus its journaled turns (database down: the journal alone).

    Why not ``SessionHistory.recent``: that gives role and text only; the policy needs each message's
    stored analysis and sources.
    """

    def __init__(self, sessions: SessionStore, journal: Journal | None = None) -> None:
        self.sessions = sessions
        self.journal = journal

    def __call__(self, session_id: str, owner: SessionOwner, limit: int) -> list[StoredMessage]:
        journaled: list[StoredMessage] = []
        if self.journal is not None:
            for entry in self.journal.entries_for(session_id):
                if SessionOwner(entry.owner, entry.user_id) == owner:
                    journaled.extend(entry.messages)
        try:
            rows = self.sessions.recent(session_id, limit, owner)
        except SessionNotFound:
            rows = []
        except SQLAlchemyError as exc:  # the turn is answered all the same; the trend then counts what is known
            log.warning("handoff_history_unavailable", extra={"error": type(exc).__name__})
            rows = []
        stored = {m.id for m in rows}
        merged = rows + [m for m in journaled if m.id not in stored]
        merged.sort(key=lambda m: m.created_at)
        return merged[-limit:]


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

    def _earlier(self, turn: Turn) -> list[StoredMessage]:
        if self.recent is None or turn.session_id is None or turn.new_session:
            return []
        window = 2 * max(self.settings.negative_turns, self.settings.no_answer_turns)
        return self.recent(turn.session_id, SessionOwner(turn.owner, turn.user_id), window)
