"""The deterioration signal over a session's recent user-turn emotions (oldest first)."""

from __future__ import annotations

import pytest

from ragvigil.chat.emotion import deterioration, polarity_of, session_deterioration
from ragvigil.chat.understanding import Emotion
from ragvigil.config import EmotionSettings, Settings


def turn(score: float, label: str = "neutral") -> Emotion:
    return Emotion(label=label, polarity=polarity_of(score), score=score)


def test_n_negative_turns_in_a_row_fire() -> None:
    run = [turn(0.5, "joy"), turn(-0.3, "sadness"), turn(-0.4, "sadness"), turn(-0.7, "sadness")]
    verdict = deterioration(run, negative_turns=3)
    assert verdict.worse and verdict.reason == "negative_streak" and verdict.turns == 3
    assert not deterioration(run, negative_turns=4, fall=2.0).worse  # N is the setting's to choose


def test_a_mixed_run_does_not_fire() -> None:
    mixed = [turn(-0.4), turn(0.3), turn(-0.4), turn(0.1), turn(-0.3)]
    assert not deterioration(mixed, negative_turns=3).worse
    assert not deterioration([turn(-0.5), turn(-0.5), turn(0.4)], negative_turns=2).worse  # recovered


def test_a_falling_score_fires_before_the_streak() -> None:
    falling = [turn(0.7, "joy"), turn(0.2), turn(-0.5, "anger")]
    verdict = deterioration(falling, negative_turns=3, fall=0.8)
    assert verdict.worse and verdict.reason == "falling_score" and verdict.drop == pytest.approx(1.2)
    assert not deterioration([turn(0.1), turn(-0.25)], negative_turns=3, fall=0.8).worse  # a small dip


def test_only_the_window_counts_and_unanalysed_turns_are_skipped() -> None:
    old_fall = [turn(0.9), turn(-0.5), *[turn(0.0) for _ in range(6)], turn(-0.25)]
    assert not deterioration(old_fall, negative_turns=3, fall=0.8, window=6).worse
    assert deterioration([turn(-0.3), None, turn(-0.3), turn(-0.3)], negative_turns=3).worse
    assert not deterioration([], negative_turns=3).worse


def test_the_settings_carry_n(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_EMOTION__NEGATIVE_TURNS", "2")
    settings = Settings().emotion
    assert settings.negative_turns == 2
    assert session_deterioration([turn(-0.3), turn(-0.3)], settings).worse
    assert not session_deterioration([turn(-0.3), turn(-0.3)], EmotionSettings()).worse  # default 3
