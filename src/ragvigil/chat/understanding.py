"""What a user turn is understood to be: its safety verdict, its emotion and its intent.

The shapes live here, apart from the checkers that produce them, so the pipeline, the API, the
hand-off policy and the canary share one vocabulary and none of them imports a model. Each checker
reads the turn's query embedding (``vector``), the one retrieval uses: understanding a turn costs
no second embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CATEGORIES",
    "CRISIS_CATEGORIES",
    "EMOTIONS",
    "POLARITIES",
    "SAFE",
    "SEVERITIES",
    "Emotion",
    "EmotionAnalyzer",
    "Handoff",
    "Intent",
    "IntentClassifier",
    "SafetyCheck",
    "SafetyFinding",
    "SafetyVerdict",
    "TurnAnalysis",
]

# what the safety check looks for; a verdict's category is one of these, or None when nothing was found
CATEGORIES = ("self_harm", "violence", "harassment", "sexual_minors", "illegal")
CRISIS_CATEGORIES = frozenset({"self_harm"})  # answered with the crisis response and handed to a person first
SEVERITIES = ("none", "low", "medium", "high", "critical")  # in rising order
POLARITIES = ("very_negative", "negative", "neutral", "positive", "very_positive")  # the 5-step scale
EMOTIONS = ("joy", "sadness", "anger", "fear", "disgust", "surprise", "neutral")  # fear covers anxiety


@dataclass(frozen=True)
class SafetyFinding:
    """One reason for a verdict: which category, how severe, and what found it (never the matched text)."""

    category: str
    severity: str
    source: str  # "lexicon", "pattern" or "classifier"
    rule: str = ""  # the lexicon entry's or pattern's id, or the classifier's name (loggable: no user text)
    score: float | None = None  # the classifier's probability, when it was the source


@dataclass(frozen=True)
class SafetyVerdict:
    """The combined verdict on one text: the most severe finding's category and severity."""

    category: str | None = None
    severity: str = "none"
    findings: tuple[SafetyFinding, ...] = ()

    @property
    def flagged(self) -> bool:
        return self.category is not None

    @property
    def crisis(self) -> bool:
        return self.category in CRISIS_CATEGORIES

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "severity": self.severity}


SAFE = SafetyVerdict()


@dataclass(frozen=True)
class Emotion:
    """``label`` one of EMOTIONS; ``polarity`` one of POLARITIES; ``score`` the polarity in [-1, 1]."""

    label: str
    polarity: str
    score: float
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "polarity": self.polarity, "score": round(self.score, 4)}


@dataclass(frozen=True)
class Intent:
    """``name`` from the intents file (``other`` when out of scope); ``action`` what the intent asks for."""

    name: str
    confidence: float
    action: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "confidence": round(self.confidence, 4)}


@dataclass
class TurnAnalysis:
    """Everything understood about one user turn, as the API and the stored message carry it."""

    safety: SafetyVerdict = SAFE
    emotion: Emotion | None = None
    intent: Intent | None = None
    ms: dict[str, float] = field(default_factory=dict)  # what each part cost (analysis only, no embedding)

    def to_dict(self) -> dict[str, Any]:
        return {
            "safety": self.safety.to_dict(),
            "emotion": self.emotion.to_dict() if self.emotion else None,
            "intent": self.intent.to_dict() if self.intent else None,
        }


@dataclass(frozen=True)
class Handoff:
    """A turn handed to a person: why, how urgently (1 = first), and the record that queues it."""

    reason: str  # crisis, complaint, human_request, negative_trend, repeated_no_answer
    priority: int  # 1 (crisis) .. 4
    id: str | None = None  # the hand-off record's id, once stored

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "reason": self.reason, "priority": self.priority}


class SafetyCheck(Protocol):
    """Input and output safety (``chat.safety.SafetyChecker``)."""

    def check(self, text: str, vector: np.ndarray | None = None) -> SafetyVerdict:
        """The verdict on a user message (``vector``: its query embedding, for the classifier)."""
        ...

    def check_output(self, text: str) -> SafetyVerdict:
        """The verdict on an answer about to be sent."""
        ...

    def response(self, verdict: SafetyVerdict, language: str) -> str:
        """The reply to a flagged user message (a crisis: the crisis response with the locale's hotlines)."""
        ...

    def replacement(self, verdict: SafetyVerdict, language: str) -> str:
        """What is sent instead of an answer that failed ``check_output``."""
        ...


class EmotionAnalyzer(Protocol):
    """Emotion of one user turn (``chat.emotion``): an offline default, an optional LLM-backed one."""

    name: str

    def analyze(self, text: str, vector: np.ndarray | None, language: str) -> Emotion: ...


class IntentClassifier(Protocol):
    """Intent of one user turn (``chat.intent``), from the intents file's examples in the e5 space."""

    def classify(self, text: str, vector: np.ndarray | None, language: str) -> Intent: ...
