"""The understanding parts on their own: a failing emotion or intent part leaves only itself out, the
intent label set is bounded, and the stream guard never lets a flagged sentence through."""

from __future__ import annotations

import numpy as np

from ragvigil.chat.answer_check import AnswerCheck
from ragvigil.chat.pipeline import Turn
from ragvigil.chat.understand import MAX_INTENT_LABELS, Understanding
from ragvigil.chat.understanding import Emotion
from tests.understand_standins import REPLACED_EN, KeywordIntents, RuleSafety


class BrokenEmotion:
    name = "broken"

    def analyze(self, text: str, vector: np.ndarray | None, language: str) -> Emotion:
        raise ValueError("model file unreadable")


def test_a_failing_emotion_part_leaves_the_rest_of_the_analysis() -> None:
    u = Understanding(safety=RuleSafety(), emotion=BrokenEmotion(), intent=KeywordIntents())
    a = u.analyze("hello, I want to kill myself", None, "en")
    assert a.emotion is None and a.intent is not None and a.intent.name == "greeting"
    assert a.safety.crisis and set(a.ms) == {"safety", "emotion", "intent"}


def test_intent_labels_are_bounded() -> None:
    u = Understanding()
    labels = {u.intent_label(f"intent_{i}") for i in range(MAX_INTENT_LABELS + 10)}
    assert len(labels) == MAX_INTENT_LABELS + 1 and "other" in labels
    assert u.intent_label("intent_0") == "intent_0"  # a name already counted keeps its label


def _guarded(deltas: list[str]) -> tuple[str, Turn]:
    turn = Turn(message="q", kb="default")
    check = AnswerCheck(Understanding(safety=RuleSafety()), lambda language: "safe")
    relayed = "".join(check.guard(turn, iter(deltas)))
    return relayed, turn


def test_the_guard_relays_checked_sentences_and_stops_at_a_flagged_one() -> None:
    relayed, turn = _guarded(["First", " sentence. Sec", "ond one about a bo", "mb. Third."])
    assert relayed == "First sentence. \n\n" + REPLACED_EN and turn.replaced and turn.answer == REPLACED_EN
    clean, turn = _guarded(["No end", " of sentence at all"])
    assert clean == "No end of sentence at all" and not turn.replaced and turn.output_verdict is not None


def test_the_guard_checks_a_long_run_without_sentence_ends_before_relaying_it() -> None:
    words = ["word "] * 100 + ["bomb "] + ["word "] * 100  # no punctuation: relayed in held chunks
    relayed, turn = _guarded(words)
    assert "bomb" not in relayed and relayed.endswith(REPLACED_EN) and turn.replaced
