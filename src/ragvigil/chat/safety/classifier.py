"""The classifiers over a turn's e5 embedding: one probe for crisis language, one for offensive language.

Both are ``chat.probe.LinearProbe`` weights shipped in this package (``crisis.npz``,
``offensive.npz``), trained by ``training/train_safety.py``; the data they were trained on and its
licences are in each file's ``meta``. A probe costs one 384 x 2 product per turn. A missing weights
file disables that probe (the lexicon still runs) and says so once in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragvigil.chat.probe import LinearProbe

__all__ = ["CRISIS_WEIGHTS", "OFFENSIVE_WEIGHTS", "Probes", "load_probes"]

log = logging.getLogger(__name__)
CRISIS_WEIGHTS = Path(__file__).with_name("crisis.npz")
OFFENSIVE_WEIGHTS = Path(__file__).with_name("offensive.npz")
FALLBACK_CRISIS_THRESHOLD = 0.9  # for weights that carry no threshold of their own


@dataclass(frozen=True)
class Probes:
    crisis: LinearProbe | None
    offensive: LinearProbe | None

    @property
    def crisis_threshold(self) -> float:
        """The threshold the training chose for these weights by cross-validation on its own rows (never on
        the benchmark's held-out phrasings): a retrained probe brings the threshold that fits it."""
        chosen = self.crisis.meta.get("suggested_threshold") if self.crisis is not None else None
        return float(chosen) if isinstance(chosen, int | float) and 0 < chosen <= 1 else FALLBACK_CRISIS_THRESHOLD

    def crisis_probability(self, vector: np.ndarray) -> float | None:
        return self.crisis.probability(vector, "crisis") if self.crisis is not None else None

    def offensive_probability(self, vector: np.ndarray) -> float | None:
        return self.offensive.probability(vector, "offensive") if self.offensive is not None else None


def _load(path: Path) -> LinearProbe | None:
    try:
        return LinearProbe.load(path)
    except (OSError, KeyError, ValueError) as e:
        log.warning("safety_probe_unavailable", extra={"source": str(path), "error": str(e)})
        return None


def load_probes(crisis: Path = CRISIS_WEIGHTS, offensive: Path = OFFENSIVE_WEIGHTS) -> Probes:
    return Probes(_load(crisis), _load(offensive))
