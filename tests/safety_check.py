"""A small rule-based ``SafetyCheck`` for the canary, fault and drill tests: crisis on a few words, zh and en.

Honest on purpose (it really decides from the text) and generic: the tests built on it only use the
shipped probes and plain crisis phrasings, so they run unchanged against the real ``chat.safety`` checker.
``words`` can be emptied to play a filter that lost its lexicon.
"""

from __future__ import annotations

from typing import Any

from ragvigil.chat.understanding import SAFE, SafetyFinding, SafetyVerdict

CRISIS_WORDS = ("自杀", "不想活", "结束生命", "kill myself", "end my life", "suicide")
CRISIS_RESPONSE = {"zh": "你并不孤单。请拨打心理援助热线 12356。", "en": "You are not alone. Call or text 988."}


class RuleSafetyCheck:
    """Crisis when a crisis word is in the text (case-folded); everything else is clear."""

    def __init__(self, words: tuple[str, ...] = CRISIS_WORDS, flag_words: tuple[str, ...] = ()) -> None:
        self.words = words
        self.flag_words = flag_words  # flagged as harassment: plays a filter that flags benign text
        self.calls: list[tuple[str, Any]] = []

    def check(self, text: str, vector: Any = None) -> SafetyVerdict:
        self.calls.append((text, vector))
        low = text.casefold()
        if any(w in low for w in self.words):
            return SafetyVerdict("self_harm", "critical", (SafetyFinding("self_harm", "critical", "lexicon", "test"),))
        if any(w in low for w in self.flag_words):
            return SafetyVerdict("harassment", "medium", (SafetyFinding("harassment", "medium", "lexicon", "test"),))
        return SAFE

    def check_output(self, text: str) -> SafetyVerdict:
        return self.check(text)

    def response(self, verdict: SafetyVerdict, language: str) -> str:
        return CRISIS_RESPONSE["zh" if language == "zh" else "en"]

    def replacement(self, verdict: SafetyVerdict, language: str) -> str:
        return self.response(verdict, language)
