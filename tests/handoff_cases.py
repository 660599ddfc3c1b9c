"""What the hand-off tests share: a small FAQ, the analyses of a crisis and of a request for a person, and
the stage that gives a turn the analysis the test chose, put where the runtime's own understand stage is.

The hand-off stage under test is always the runtime's own (``rt.handoffs``), wired by ``app.py``.
"""

from __future__ import annotations

from ragvigil.app import Runtime
from ragvigil.chat.handoff import Handoffs
from ragvigil.chat.pipeline import BaseStage, Stage, Turn
from ragvigil.chat.understanding import Emotion, Intent, SafetyFinding, SafetyVerdict, TurnAnalysis

FAQ = b"# FAQ\nShipping takes three days. Returns are free within thirty days."
CRISIS = TurnAnalysis(
    safety=SafetyVerdict("self_harm", "critical", (SafetyFinding("self_harm", "critical", "pattern", "p1"),)),
    emotion=Emotion("sadness", "very_negative", -0.9),
    intent=Intent("other", 0.3),
)
HUMAN = TurnAnalysis(emotion=Emotion("anger", "negative", -0.5), intent=Intent("human_request", 0.95, "handoff"))


class Given(BaseStage):
    """The analysis of every turn, as the understand stage would set it."""

    name = "understand"

    def __init__(self) -> None:
        self.analysis = TurnAnalysis()

    def __call__(self, turn: Turn) -> None:
        turn.analysis = self.analysis


def understand_as(rt: Runtime, stage: Stage) -> Handoffs:
    """Put ``stage`` in place of the runtime's understand stage; the runtime's own hand-off parts."""
    parts = rt.handoffs
    assert parts.stage in rt.pipeline.stages  # the runtime's own wiring
    stages = rt.pipeline.stages
    stages[next(i for i, s in enumerate(stages) if s.name == "understand")] = stage
    return parts
