"""The crisis training's threshold rule: the highest out-of-fold recall at the false-positive target of *each*
public source, so a small source with a high rate is not averaged away by the large ones."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

import train_safety  # noqa: E402


def test_each_source_must_meet_the_target_not_only_the_pool() -> None:
    pos = np.array([0.55, 0.65, 0.75, 0.85, 0.95])
    big = np.full(1000, 0.1)
    big[:2] = 0.7  # 0.2 % at 0.7
    small = np.full(100, 0.1)
    small[:3] = 0.8  # 3 % of a small source at 0.8: pooled with ``big`` it is only 0.45 %
    t = train_safety.choose_threshold(pos, {"big": big, "small": small}, fp_target=0.01)
    assert t > 0.8  # above the small source's false positives
    assert float((pos >= t).mean()) == 0.4
    pooled = train_safety.choose_threshold(pos, {"all": np.concatenate([big, small])}, fp_target=0.01)
    assert pooled == 0.5  # the pooled rate would have let every positive through


def test_never_below_the_floor_and_one_when_nothing_meets_the_target() -> None:
    pos = np.array([0.2, 0.3, 0.9])
    assert train_safety.choose_threshold(pos, {"a": np.zeros(10)}, fp_target=0.0) == 0.5
    assert train_safety.choose_threshold(pos, {"a": np.ones(10)}, fp_target=0.0) == 1.0
