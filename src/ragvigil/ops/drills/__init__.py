"""Fault drills: break one thing on purpose, drive traffic, and measure detection, action and recovery.

A drill runs against a running instance through its public API only (``InstanceClient``): the
admin fault API injects the fault (refused unless ``faults.enabled``), synthetic users on loopback
ask questions, and the drill watches alerts, incident timelines and answers. ``run(name, client)``
returns a ``DrillResult``; ``DRILLS`` lists them. Used by ``ragvigil drill`` and ``bench/drills.py``.
"""

from ragvigil.ops.drills.catalog import DRILLS, run
from ragvigil.ops.drills.client import DrillError, InstanceClient
from ragvigil.ops.drills.experiment import DrillOptions, DrillResult

__all__ = ["DRILLS", "DrillError", "DrillOptions", "DrillResult", "InstanceClient", "run"]
