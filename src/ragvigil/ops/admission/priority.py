"""Priority tiers of admission and the crisis check that puts a turn in the first one.

Why a tier per request and not per key only: a person writing that they want to die must be
answered first whatever key their app uses. The phrase list is small and explicit on purpose; the
safety work replaces it with a classifier, so the check is one callable (``CrisisCheck``).
"""

from __future__ import annotations

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
