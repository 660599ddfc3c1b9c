"""The optional LLM-backed emotion analyzer: an OpenAI-compatible generator asked for a JSON verdict.

Why a strict parser and a fallback: a model's answer is untrusted text. The verdict is accepted only
as one JSON object (optionally inside a ```json fence) with a known ``label``, a known ``polarity``
and a numeric ``score`` in [-1, 1] whose side agrees with the polarity; anything else, and any
provider error, falls back to the offline analyzer. The turn never sees an exception from here.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from ragvigil.chat.understanding import EMOTIONS, POLARITIES, Emotion
from ragvigil.types import GenerationRequest

if TYPE_CHECKING:
    import numpy as np

    from ragvigil.chat.understanding import EmotionAnalyzer
    from ragvigil.providers.base import Generator

__all__ = ["INSTRUCTIONS", "MAX_TEXT_CHARS", "LLMEmotionAnalyzer", "VerdictRejected", "parse_verdict"]

log = logging.getLogger(__name__)
MAX_TEXT_CHARS = 2000  # of the user's turn sent to the model; the verdict needs no more
MAX_ANSWER_CHARS = 2000  # of the model's answer read by the parser
INSTRUCTIONS = (
    "You label the emotion of one user message. Reply with one JSON object and nothing else: "
    '{"label": one of ' + "|".join(EMOTIONS) + ', "polarity": one of ' + "|".join(POLARITIES) + ", "
    '"score": a number from -1 (very negative) to 1 (very positive)}. fear includes anxiety.'
)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class VerdictRejected(ValueError):
    """The model's answer is not a valid verdict (the reason says which rule it broke, never the text)."""


def parse_verdict(answer: str) -> Emotion:
    """The Emotion in a model's answer, or VerdictRejected (see the module docstring for the rules)."""
    text = answer.strip()[:MAX_ANSWER_CHARS]
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise VerdictRejected("not a JSON object") from exc
    if not isinstance(data, dict):
        raise VerdictRejected("not a JSON object")
    label, polarity, score = data.get("label"), data.get("polarity"), data.get("score")
    if label not in EMOTIONS:
        raise VerdictRejected("unknown label")
    if polarity not in POLARITIES:
        raise VerdictRejected("unknown polarity")
    if isinstance(score, bool) or not isinstance(score, int | float) or not -1.0 <= float(score) <= 1.0:
        raise VerdictRejected("score is not a number in [-1, 1]")
    score = float(score)
    if ("negative" in polarity and score > 0) or ("positive" in polarity and score < 0):
        raise VerdictRejected("score and polarity disagree")
    return Emotion(label=label, polarity=polarity, score=score)


class LLMEmotionAnalyzer:
    """``analyze`` asks ``generator``; on a provider error or a rejected verdict, ``fallback`` answers."""

    name = "llm"

    def __init__(self, generator: Generator, fallback: EmotionAnalyzer, timeout_s: float = 5.0) -> None:
        self.generator = generator
        self.fallback = fallback
        self.timeout_s = timeout_s

    def analyze(self, text: str, vector: np.ndarray | None, language: str = "") -> Emotion:
        return self.analyze_with_source(text, vector, language)[0]

    def analyze_with_source(self, text: str, vector: np.ndarray | None, language: str = "") -> tuple[Emotion, str]:
        """(emotion, who decided it): ``llm``, or ``fallback:<why>`` (error kind or parser rule, no text)."""
        request = GenerationRequest(
            question=f"Message:\n{text[:MAX_TEXT_CHARS]}\n\nJSON:",
            passages=[],
            history=[("system", INSTRUCTIONS)],
            language=language or "en",
            timeout_s=self.timeout_s,
        )
        try:
            return parse_verdict(self.generator.generate(request).text), "llm"
        except VerdictRejected as exc:
            reason = f"fallback:{exc}"
        except Exception as exc:
            reason = f"fallback:{getattr(exc, 'kind', type(exc).__name__)}"
        log.info("emotion analyzer fell back to offline", extra={"reason": reason})
        return self.fallback.analyze(text, vector, language), reason
