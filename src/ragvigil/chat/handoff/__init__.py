"""Hand-off to a person: when a turn is handed over (``HandoffPolicy``), the queue (``HandoffStore``,
spooled to disk while the database is down), and the ``handoff`` stage that tells the user."""

from ragvigil.chat.handoff.build import Handoffs, build_handoffs
from ragvigil.chat.handoff.policy import PRIORITY, REASONS, HandoffPolicy, RecentFromStore
from ragvigil.chat.handoff.request import HandoffRequest
from ragvigil.chat.handoff.signals import deteriorating, negative_streak
from ragvigil.chat.handoff.spool import HandoffSpool
from ragvigil.chat.handoff.stage import HandOff
from ragvigil.chat.handoff.store import (
    HandoffConflict,
    HandoffNotFound,
    HandoffReplayer,
    HandoffStore,
    NewHandoff,
)

__all__ = [
    "PRIORITY",
    "REASONS",
    "HandOff",
    "HandoffConflict",
    "HandoffNotFound",
    "HandoffPolicy",
    "HandoffReplayer",
    "HandoffRequest",
    "HandoffSpool",
    "HandoffStore",
    "Handoffs",
    "NewHandoff",
    "RecentFromStore",
    "build_handoffs",
    "deteriorating",
    "negative_streak",
]
