"""A vector the shipped crisis probe scores at a chosen probability, for the threshold tests."""

from __future__ import annotations

import numpy as np

from ragvigil.chat.safety.classifier import Probes


def vector_at(probes: Probes, p: float) -> np.ndarray:
    """A vector the crisis probe gives probability ``p``: the training mean moved along the crisis direction."""
    probe = probes.crisis
    assert probe is not None
    c, b = probe.labels.index("crisis"), probe.labels.index("benign")
    d = probe.weights[:, c] - probe.weights[:, b]
    t = float(np.log(p / (1 - p))) - float(probe.bias[c] - probe.bias[b])
    v = probe.mean + t * probe.scale * d / float(d @ d)
    assert abs(probes.crisis_probability(v) - p) < 1e-3
    return v
