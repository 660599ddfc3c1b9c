"""The crisis probe's threshold comes with its weights (chosen by cross-validation in training), unless set.

Why: a retrained probe has its own probability scale; a threshold fixed in the settings would silently
stop fitting it."""

from __future__ import annotations

import dataclasses

from ragvigil.chat.safety import SafetyChecker
from ragvigil.chat.safety.checker import Thresholds
from ragvigil.chat.safety.classifier import FALLBACK_CRISIS_THRESHOLD, Probes, load_probes
from ragvigil.config import SafetySettings
from tests.crisis_probe import vector_at


def test_the_shipped_weights_carry_the_threshold_training_chose() -> None:
    probes = load_probes()
    assert probes.crisis is not None
    assert probes.crisis_threshold == probes.crisis.meta["suggested_threshold"]
    assert 0.5 <= probes.crisis_threshold < 1.0
    assert probes.crisis_threshold != FALLBACK_CRISIS_THRESHOLD  # chosen, not the fallback


def test_unset_the_probes_own_threshold_decides_set_the_setting_does() -> None:
    probes = load_probes()
    own = probes.crisis_threshold
    above, below = vector_at(probes, own + (1 - own) / 2), vector_at(probes, own - 0.05)
    text = "a sentence with no lexicon term"
    default = SafetyChecker(probes=probes)
    assert default.check(text, above).crisis and not default.check(text, below).crisis
    assert [f.source for f in default.check(text, above).findings] == ["classifier"]
    assert not SafetyChecker(probes=probes, thresholds=Thresholds(crisis=0.999)).check(text, above).crisis
    assert SafetyChecker(probes=probes, thresholds=Thresholds(crisis=own - 0.1)).check(text, below).crisis
    assert SafetyChecker.from_settings(SafetySettings()).thresholds.crisis is None
    assert not SafetyChecker.from_settings(SafetySettings(crisis_threshold=0.999)).check(text, above).crisis


def test_weights_without_a_threshold_fall_back() -> None:
    probes = load_probes()
    assert probes.crisis is not None
    bare = Probes(dataclasses.replace(probes.crisis, meta={}), None)
    assert bare.crisis_threshold == FALLBACK_CRISIS_THRESHOLD
