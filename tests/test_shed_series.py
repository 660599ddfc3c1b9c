"""LoadShedding must fire on the first burst an instance ever sees.

The rule reads ``rate(ragvigil_admission_shed_total[1m])``; a labelled counter series that is born at
its first shed has no earlier sample, so its first increase is invisible to ``rate`` and a short burst
never fires the alert (the burst-10x drill saw 353 sheds and no alert). Every series must exist at 0
from the start, and the real alert engine must see the first sheds as an increase.
"""

from __future__ import annotations

import time

from ragvigil.app import Runtime
from ragvigil.config import AdmissionSettings
from ragvigil.ops import metrics
from ragvigil.ops.admission import Admission, FeatureFlags, Priority
from ragvigil.ops.admission.controller import SHED_REASONS


def test_every_shed_series_exists_at_zero_before_the_first_shed() -> None:
    Admission(AdmissionSettings(), FeatureFlags())
    for priority in Priority:
        for reason in SHED_REASONS:
            value = metrics.REGISTRY.get_sample_value(
                "ragvigil_admission_shed_total", {"priority": priority.name, "reason": reason}
            )
            assert value is not None, (priority.name, reason)


def test_the_first_sheds_of_a_burst_fire_load_shedding(sample_runtime: Runtime) -> None:
    rt = sample_runtime
    assert rt.alerts is not None
    t0 = time.time()
    rt.alerts.tick(t0)  # before the burst: every shed series is sampled at its value so far
    metrics.ADMISSION_SHED.labels("background", "predicted_wait").inc(40)  # the burst's sheds
    fired = False
    for step in range(1, 31):  # LoadShedding holds for some seconds; its rate window keeps the burst 30 s
        rt.alerts.tick(t0 + step)
        firing = {a.labels.get("alertname") for a in rt.alerts.engine.alerts() if a.state == "firing"}
        if fired := "LoadShedding" in firing:
            break
    assert fired
