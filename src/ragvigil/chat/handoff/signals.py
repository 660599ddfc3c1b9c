"""The conversation signals a hand-off is decided on: a run of negative turns, a run of "not found" answers.

Why apart from the policy: the emotion trend (``GET /sessions/{id}/emotions``) and the policy must
agree on what "deteriorating" means, so both read it here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ragvigil.providers.extractive import NO_ANSWER

NEGATIVE = frozenset({"negative", "very_negative"})
_NO_ANSWER_TEXTS = tuple(NO_ANSWER.values())


def negative_streak(polarities: Iterable[str | None]) -> int:
    """How many of the last polarities (oldest first) are negative in a row, counted from the newest."""
    streak = 0
    for polarity in reversed(list(polarities)):
        if polarity not in NEGATIVE:
            break
        streak += 1
    return streak


def deteriorating(polarities: Sequence[str | None], turns: int) -> bool:
    """The user's last ``turns`` turns (oldest first, the newest included) were all negative."""
    return negative_streak(polarities) >= turns


def polarity_of(analysis: dict[str, Any] | None) -> str | None:
    """The polarity a stored ``TurnAnalysis.to_dict()`` carries (None: no emotion was analysed)."""
    emotion = (analysis or {}).get("emotion") or {}
    return emotion.get("polarity") if isinstance(emotion, dict) else None


def is_no_answer(content: str, sources: Sequence[Any] | None) -> bool:
    """An answer that found nothing: no sources, and the honest no-answer text (a notice may follow it)."""
    return not sources and content.startswith(_NO_ANSWER_TEXTS)


def no_answer_streak(answers: Iterable[tuple[str, Sequence[Any] | None]]) -> int:
    """How many of the last answers (oldest first; content and sources) found nothing, in a row."""
    streak = 0
    for content, sources in reversed(list(answers)):
        if not is_no_answer(content, sources):
            break
        streak += 1
    return streak
