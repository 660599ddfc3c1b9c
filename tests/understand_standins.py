"""Small, honest implementations of the understanding protocols, for the pipeline's and the API's tests.

They decide from what they are given (rules over the text, the turn's real e5 vector), so a test
can tell whether the pipeline gave them the right inputs; they record what they were called with.
"""

from __future__ import annotations

import re
import threading

import numpy as np

from ragvigil.chat.handoff.stage import CRISIS_NOTICE
from ragvigil.chat.understand import default_small_talk_reply
from ragvigil.chat.understanding import Emotion, Intent, SafetyFinding, SafetyVerdict
from ragvigil.knowledge.embeddings import EmbedderBusy

CRISIS_EN = "If you are thinking about suicide, please call or text 988 now. You are not alone."
CRISIS_ZH = "如果你有轻生的念头，请马上拨打 12356 心理援助热线。你并不孤单。"
# a crisis turn is also handed to a person: the notice follows the crisis response, streamed and stored alike
HANDED_EN = f"{CRISIS_EN}\n\n{CRISIS_NOTICE['en']}"
HANDED_ZH = f"{CRISIS_ZH}\n\n{CRISIS_NOTICE['zh']}"
CALM_EN = "I can't help with that. If someone is in danger, please contact the local emergency number."
CALM_ZH = "这个我帮不了。如果有人身处危险，请联系当地紧急电话。"
REPLACED_EN = "Sorry, I can't share that answer. A person from our team can help instead."
REPLACED_ZH = "抱歉，这个回答不能发送。我们的工作人员可以帮你。"

# (rule id, category, severity, pattern): a crisis, something to settle calmly, something to answer and flag
RULES = (
    ("self_harm.suicide", "self_harm", "critical", re.compile(r"suicide|kill myself|不想活|自杀", re.I)),
    ("violence.weapon", "violence", "high", re.compile(r"\bbomb\b|炸弹", re.I)),
    ("harassment.insult", "harassment", "low", re.compile(r"\bidiot\b|笨蛋", re.I)),
)


def _verdict(text: str) -> SafetyVerdict:
    found = [SafetyFinding(cat, sev, "pattern", rule) for rule, cat, sev, rx in RULES if rx.search(text)]
    if not found:
        return SafetyVerdict()
    worst = found[0]  # RULES is in falling severity
    return SafetyVerdict(worst.category, worst.severity, tuple(found))


class RuleSafety:
    """Patterns over the text; ``broken`` makes the input check raise (a failed filter)."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.checked: list[str] = []
        self.outputs: list[str] = []

    def check(self, text: str, vector: np.ndarray | None = None) -> SafetyVerdict:
        if self.broken:
            raise RuntimeError("lexicon file missing")
        self.checked.append(text)
        return _verdict(text)

    def check_output(self, text: str) -> SafetyVerdict:
        self.outputs.append(text)
        return _verdict(text)

    def response(self, verdict: SafetyVerdict, language: str) -> str:
        if verdict.crisis:
            return CRISIS_ZH if language == "zh" else CRISIS_EN
        return CALM_ZH if language == "zh" else CALM_EN

    def replacement(self, verdict: SafetyVerdict, language: str) -> str:
        return REPLACED_ZH if language == "zh" else REPLACED_EN


class KeywordIntents:
    """Greeting / thanks by keyword (small talk), a question otherwise."""

    name = "keywords"
    GREETING = re.compile(r"^\s*(hello|hi|hey|你好|您好)\b", re.I)
    THANKS = re.compile(r"thank|谢谢", re.I)

    def classify(self, text: str, vector: np.ndarray | None, language: str) -> Intent:
        if self.GREETING.search(text):
            return Intent("greeting", 0.93, "small_talk")
        if self.THANKS.search(text):
            return Intent("thanks", 0.91, "small_talk")
        return Intent("product_inquiry", 0.62)


class VectorEmotion:
    """Polarity from the turn's embedding against a fixed direction (none without a vector: neutral)."""

    name = "fixed-vector"

    def __init__(self, direction: np.ndarray | None = None) -> None:
        self.direction = direction
        self.vectors: list[np.ndarray | None] = []
        self.lock = threading.Lock()

    def analyze(self, text: str, vector: np.ndarray | None, language: str) -> Emotion:
        with self.lock:
            self.vectors.append(vector)
        if vector is None:
            return Emotion("neutral", "neutral", 0.0)
        direction = self.direction if self.direction is not None else np.ones_like(vector) / np.sqrt(len(vector))
        score = float(np.clip(np.dot(vector, direction) / (np.linalg.norm(vector) or 1.0), -1.0, 1.0))
        if re.search(r"sad|难过", text, re.I):
            return Emotion("sadness", "very_negative", -0.9)
        return Emotion("neutral", "neutral", score)


class CountingEmbedder:
    """Wraps a query embedder and counts what reaches it (``busy``: every call raises EmbedderBusy)."""

    def __init__(self, inner: object, busy: bool = False) -> None:
        self.inner = inner
        self.busy = busy
        self.calls: list[str] = []
        self.dim = inner.dim  # type: ignore[attr-defined]
        self.name = inner.name  # type: ignore[attr-defined]

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        self.calls.append(text)
        if self.busy:
            raise EmbedderBusy("all 1 embedding engines stayed busy for 0.0s")
        return self.inner.embed_query(text, timeout_s)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def understand_with_standins(rt: object, broken: bool = False) -> tuple[RuleSafety, VectorEmotion, KeywordIntents]:
    """Plug the stand-ins into a runtime the way the real checkers are plugged in (``rt.safety``...)."""
    safety, emotion, intents = RuleSafety(broken), VectorEmotion(), KeywordIntents()
    rt.safety, rt.emotion, rt.intents = safety, emotion, intents  # type: ignore[attr-defined]
    rt.understanding.small_talk_reply = default_small_talk_reply  # type: ignore[attr-defined]
    return safety, emotion, intents
