"""Is the user getting worse? A verdict over a session's recent user-turn emotions, for hand-off.

Two signs, either is enough: the last ``negative_turns`` turns were all negative (polarity negative
or very_negative), or the score fell by at least ``fall`` from the best of the window to the last
turn, ending on the negative side. Both read only the last ``window`` turns, so an old bad patch
that has since passed does not keep a session flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ragvigil.chat.understanding import Emotion

__all__ = ["NEGATIVE", "Deterioration", "deterioration"]

NEGATIVE = frozenset({"negative", "very_negative"})


@dataclass(frozen=True)
class Deterioration:
    """``worse``: the signal fired; ``reason``: ``negative_streak`` or ``falling_score`` (loggable, no text)."""

    worse: bool
    reason: str = ""
    turns: int = 0  # the turns that carry the reason (the streak's length, or the fall's span)
    drop: float = 0.0  # how far the score fell (falling_score)


STEADY = Deterioration(False)


def deterioration(
    emotions: Sequence[Emotion | None],
    negative_turns: int = 3,
    fall: float = 0.8,
    window: int = 6,
) -> Deterioration:
    """The verdict on ``emotions`` (a session's user turns, oldest first; None: a turn not analysed)."""
    if negative_turns < 1:
        raise ValueError("negative_turns must be at least 1")
    recent = [e for e in emotions if e is not None][-max(window, negative_turns) :]
    if not recent:
        return STEADY
    streak = 0
    for e in reversed(recent):
        if e.polarity not in NEGATIVE:
            break
        streak += 1
    if streak >= negative_turns:
        return Deterioration(True, "negative_streak", turns=streak)
    last = recent[-1]
    best_at = max(range(len(recent)), key=lambda i: recent[i].score)
    drop = recent[best_at].score - last.score
    if last.polarity in NEGATIVE and drop >= fall:
        return Deterioration(True, "falling_score", turns=len(recent) - best_at, drop=round(drop, 4))
    return STEADY
