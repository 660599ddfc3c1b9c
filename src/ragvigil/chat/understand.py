"""Understanding a user turn: safety, emotion and intent, from the one query embedding retrieval uses.

Why a stage of its own, placed before safe mode and retrieval: a crisis message must be settled
before anything could answer it from the knowledge base or the LLM, and every later stage (small
talk, hand-off) reads what was understood. The message is embedded here through the runtime's
shared query cache with exactly the text retrieval will embed, so retrieval's own embedding is a
cache hit: understanding costs no second embedding.

The rule for a flagged message (documented in the README): a crisis category, or a severity of
``high`` or ``critical``, settles the turn with the safety check's response (a crisis: the crisis
response with the locale's hotlines); ``low`` and ``medium`` findings are answered as usual and
flagged (logged, counted, on the analysis). A safety check that raises fails closed: the turn is
settled with the safe-mode response and degraded with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ragvigil.chat.pipeline import BaseStage, Turn
from ragvigil.chat.understanding import (
    CATEGORIES,
    EMOTIONS,
    POLARITIES,
    SEVERITIES,
    EmotionAnalyzer,
    Intent,
    IntentClassifier,
    SafetyCheck,
    SafetyVerdict,
    TurnAnalysis,
)
from ragvigil.knowledge.embeddings import EmbedderBusy, EmbedderUnavailable
from ragvigil.ops import metrics, semconv

if TYPE_CHECKING:
    import numpy as np

    from ragvigil.knowledge.embeddings import Embedder

log = logging.getLogger(__name__)
T = TypeVar("T")

SETTLED_BY = "safety"  # Turn.settled_by of a turn the input check answered
SETTLING_SEVERITIES = frozenset({"high", "critical"})  # non-crisis findings at these severities settle the turn
MAX_INTENT_LABELS = 64  # distinct intent names counted in metrics; any further one is "other"

SMALL_TALK = {  # short friendly replies of the built-in small-talk texts, by intent name and language
    "greeting": {"en": "Hello! How can I help you today?", "zh": "你好！有什么可以帮你的吗？"},
    "thanks": {"en": "You're welcome! Is there anything else I can help with?", "zh": "不客气！还有什么可以帮你的吗？"},
    "goodbye": {"en": "Goodbye, and take care!", "zh": "再见，祝你一切顺利！"},
    "": {"en": "I'm here to help. What would you like to know?", "zh": "我在这里，有什么想了解的吗？"},
}


def default_small_talk_reply(intent: Intent, language: str) -> str | None:
    """A short reply to greeting, thanks, goodbye or chit-chat (intents whose name contains the key)."""
    name = intent.name.lower()
    texts = next((v for k, v in SMALL_TALK.items() if k and k in name), SMALL_TALK[""])
    return texts.get(language, texts["en"])


SmallTalkReply = Callable[[Intent, str], "str | None"]


@dataclass
class Understanding:
    """The checkers a turn is understood with; each ``None`` when not configured (then the turn has no such part).

    The runtime holds one of these (``rt.safety``, ``rt.emotion``, ``rt.intents`` read and replace its
    fields), and the stages read it on every turn, so a checker swapped at run time is used at once.
    """

    safety: SafetyCheck | None = None
    emotion: EmotionAnalyzer | None = None
    intent: IntentClassifier | None = None
    small_talk_reply: SmallTalkReply = default_small_talk_reply
    _intent_labels: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def configured(self) -> bool:
        return self.safety is not None or self.emotion is not None or self.intent is not None

    def analyze(self, text: str, vector: np.ndarray | None, language: str) -> TurnAnalysis:
        """Safety, then emotion, then intent of ``text``; each part timed in ``ms``.

        The safety check's exception propagates (the caller fails closed); an emotion or intent
        failure only leaves that part out: it changes no answer, so it must not fail one.
        """
        analysis = TurnAnalysis()
        safety, emotion, intent = self.safety, self.emotion, self.intent
        if safety is not None:
            start = time.perf_counter()
            try:
                analysis.safety = safety.check(text, vector)
            finally:
                _timed(analysis, "safety", start)
        if emotion is not None:
            analysis.emotion = _optional(analysis, "emotion", lambda: emotion.analyze(text, vector, language))
        if intent is not None:
            analysis.intent = _optional(analysis, "intent", lambda: intent.classify(text, vector, language))
        return analysis

    def count(self, analysis: TurnAnalysis) -> None:
        """The turn's analysis in metrics, every label from a bounded set."""
        if analysis.safety.flagged:
            count_flag(analysis.safety, "input")
        if analysis.emotion is not None:
            e = analysis.emotion
            metrics.EMOTION_TURNS.labels(_bounded(e.label, EMOTIONS), _bounded(e.polarity, POLARITIES)).inc()
        if analysis.intent is not None:
            metrics.INTENT_TURNS.labels(self.intent_label(analysis.intent.name)).inc()

    def intent_label(self, name: str) -> str:
        """``name`` itself while fewer than MAX_INTENT_LABELS names were counted, else ``other``."""
        with self._lock:
            if name in self._intent_labels:
                return name
            if len(self._intent_labels) < MAX_INTENT_LABELS and len(name) <= 64:
                self._intent_labels.add(name)
                return name
        return "other"


def _timed(analysis: TurnAnalysis, part: str, start: float) -> None:
    seconds = time.perf_counter() - start
    analysis.ms[part] = round(seconds * 1000, 3)
    metrics.ANALYSIS_DURATION.labels(part).observe(seconds)


def _optional(analysis: TurnAnalysis, part: str, run: Callable[[], T]) -> T | None:
    """One optional part of the analysis, timed; its failure leaves the part out (it changes no answer)."""
    start = time.perf_counter()
    try:
        return run()
    except Exception as exc:
        log.warning(f"{part}_analysis_failed", extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
        return None
    finally:
        _timed(analysis, part, start)


def _bounded(value: str | None, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else "other"


def count_flag(verdict: SafetyVerdict, direction: str) -> None:
    """Count and log one flagged text: category, severity and rule ids, never its content."""
    category = _bounded(verdict.category, CATEGORIES)
    severity = _bounded(verdict.severity, SEVERITIES)
    metrics.SAFETY_FLAGS.labels(category, severity, direction).inc()
    rules = [f"{f.source}:{f.rule}" for f in verdict.findings][:10]
    log.warning(
        "safety_flagged", extra={"category": category, "severity": severity, "direction": direction, "rules": rules}
    )


def settles(verdict: SafetyVerdict) -> bool:
    """The documented rule: a crisis, or a high/critical finding, is answered by the safety response alone."""
    return verdict.crisis or (verdict.flagged and verdict.severity in SETTLING_SEVERITIES)


class Understand(BaseStage):
    """Embed the message once (shared cache), understand it, and settle it when the safety rule says so.

    ``max_query_chars`` must be retrieval's, so the text embedded here is the one retrieval embeds;
    the wait for an engine is half the turn's time left, like retrieval's. A busy or failed embedder
    leaves the checkers without a vector: they still run (on the text), and the turn goes on.
    """

    name = "understand"

    def __init__(
        self,
        understanding: Understanding,
        embedder: Embedder | None,
        max_query_chars: int,
        safe_response: Callable[[str], str],
        budget_s: float | None = None,
    ) -> None:
        self.understanding = understanding
        self.embedder = embedder
        self.max_query_chars = max_query_chars
        self.safe_response = safe_response  # the fail-closed answer (safe mode's text in the turn's language)
        self.budget_s = budget_s

    def vector(self, turn: Turn) -> np.ndarray | None:
        """The turn's query embedding as retrieval will ask for it, or None (no engine in time, or none at all)."""
        if self.embedder is None:
            return None
        left = turn.time_left(self.budget_s)
        if left is not None and left <= 0:
            return None
        try:
            return self.embedder.embed_query(turn.message[: self.max_query_chars], None if left is None else left / 2)
        except (EmbedderBusy, EmbedderUnavailable) as exc:
            log.info("understand_without_vector", extra={"error": str(exc)[:200]})
            return None

    def __call__(self, turn: Turn) -> None:
        u = self.understanding
        if not u.configured:
            return  # nothing to understand with: the turn goes on as it always did
        vector = self.vector(turn)
        try:
            analysis = u.analyze(turn.message, vector, turn.language)
        except Exception as exc:  # fail closed: an unchecked message is never answered from the KB or the LLM
            log.error("safety_check_failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            metrics.SAFETY_FLAGS.labels("error", "none", "input").inc()
            turn.analysis = TurnAnalysis()
            self._settle(turn, self.safe_response(turn.language))
            turn.degrade(f"safety check failed ({type(exc).__name__}); answered with the safe response")
            return
        turn.analysis = analysis
        u.count(analysis)
        safety = u.safety
        if safety is not None and settles(analysis.safety):
            self._settle(turn, safety.response(analysis.safety, turn.language))

    def _settle(self, turn: Turn, answer: str) -> None:
        turn.answer = answer
        turn.sources = []
        turn.settled_by = SETTLED_BY

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        """Categories and labels only: never the message's text."""
        attrs: dict[str, Any] = {semconv.SPAN_KIND: semconv.CHAIN, "ragvigil.settled_by": turn.settled_by}
        a = turn.analysis
        if a is None:
            return attrs
        attrs["ragvigil.safety.category"] = a.safety.category
        attrs["ragvigil.safety.severity"] = a.safety.severity
        if a.safety.findings:
            attrs["ragvigil.safety.rules"] = ",".join(f"{f.source}:{f.rule}" for f in a.safety.findings[:10])
        if a.emotion is not None:
            attrs["ragvigil.emotion.label"] = a.emotion.label
            attrs["ragvigil.emotion.polarity"] = a.emotion.polarity
        if a.intent is not None:
            attrs["ragvigil.intent.name"] = a.intent.name
            attrs["ragvigil.intent.confidence"] = round(a.intent.confidence, 4)
        return attrs
