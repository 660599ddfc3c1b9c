"""Priority tiers of admission and the crisis check that puts a turn in the first one.

Why a tier per request and not per key only: a person writing that they want to die must be
answered first whatever key their app uses. There is one definition of crisis, the runtime's safety
check: the runtime hands admission ``verdict_check`` over it (lexicon only, no embedding on the
admission path), and ``ops`` never imports ``chat``. The small phrase list is only the fallback for a
runtime without a safety check, or while that check fails.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from enum import IntEnum


class Priority(IntEnum):
    """Higher is admitted first; when the queue is full the lowest waiter is shed first."""

    background = 0  # ingestion, analytics
    normal = 1
    vip = 2
    crisis = 3


CrisisCheck = Callable[[str], bool]
# the runtime's safety check read at call time: True / False, or None when no safety check is configured
SafetyRead = Callable[[str], bool | None]

log = logging.getLogger(__name__)

CRISIS_PHRASES = (
    # zh
    "自杀",
    "自殺",
    "不想活",
    "活不下去",
    "想死",
    "轻生",
    "結束生命",
    "结束生命",
    "结束自己",
    "割腕",
    "跳楼",
    "寻死",
    # en
    "suicide",
    "suicidal",
    "kill myself",
    "killing myself",
    "end my life",
    "take my own life",
    "want to die",
    "self-harm",
    "self harm",
    "hurt myself",
)
MAX_CHECKED_CHARS = 20_000  # a message is at most a few thousand characters; the check stays bounded


def _normal(text: str) -> str:
    text = unicodedata.normalize("NFKC", text[:MAX_CHECKED_CHARS]).casefold()
    return re.sub(r"\s+", " ", text)


def phrase_check(phrases: Iterable[str] = CRISIS_PHRASES) -> CrisisCheck:
    """A ``CrisisCheck`` matching any of ``phrases`` (case, width and spacing ignored)."""
    wanted = tuple(_normal(p) for p in phrases)

    def check(text: str) -> bool:
        t = _normal(text)
        return any(p in t for p in wanted)

    return check


def verdict_check(read: SafetyRead, fallback: CrisisCheck | None = None) -> CrisisCheck:
    """A ``CrisisCheck`` asking the runtime's safety check (``read``) about at most ``MAX_CHECKED_CHARS``.

    ``read`` answers None when the runtime has no safety check; then, and when it raises (a failing
    check must not turn a request into a 500 before it is even admitted), the phrase list decides.
    """
    backup = fallback or phrase_check()

    def check(text: str) -> bool:
        text = text[:MAX_CHECKED_CHARS]
        try:
            crisis = read(text)
        except Exception as exc:
            log.warning("admission_safety_check_failed", extra={"error": type(exc).__name__})
            return backup(text)
        return backup(text) if crisis is None else bool(crisis)

    return check
