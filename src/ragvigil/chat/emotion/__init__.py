"""Emotion per user turn: the offline analyzer (default), the LLM-backed one, and the deterioration signal.

The public face: ``build_emotion_analyzer(settings, generator)`` gives the configured
``EmotionAnalyzer`` (``chat.understanding``); ``deterioration(emotions, ...)`` says whether a session's
user is getting worse. How the offline analyzer decides is in ``offline.py``'s docstring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragvigil.chat.emotion.llm import LLMEmotionAnalyzer, parse_verdict
from ragvigil.chat.emotion.offline import OfflineEmotionAnalyzer, polarity_of
from ragvigil.chat.emotion.trend import Deterioration, deterioration

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ragvigil.chat.understanding import Emotion, EmotionAnalyzer
    from ragvigil.config import EmotionSettings
    from ragvigil.providers.base import Generator

__all__ = [
    "Deterioration",
    "LLMEmotionAnalyzer",
    "OfflineEmotionAnalyzer",
    "build_emotion_analyzer",
    "deterioration",
    "parse_verdict",
    "polarity_of",
    "session_deterioration",
]


def build_emotion_analyzer(settings: EmotionSettings, generator: Generator | None = None) -> EmotionAnalyzer:
    """The analyzer ``settings.analyzer`` names; ``llm`` needs a generator (without one: offline)."""
    offline = OfflineEmotionAnalyzer.load(lexicon=settings.lexicon_file)
    if settings.analyzer == "llm" and generator is not None:
        return LLMEmotionAnalyzer(generator, offline, timeout_s=settings.llm_timeout_s)
    return offline


def session_deterioration(emotions: Sequence[Emotion | None], settings: EmotionSettings) -> Deterioration:
    """``deterioration`` with the configured ``negative_turns``, ``fall`` and ``window``."""
    return deterioration(emotions, settings.negative_turns, settings.fall, settings.window)
