"""One process-wide switch for metrics, traces and per-request/per-stage log lines.

It exists to measure what observability costs (``bench/overhead.py`` runs the same load
with it on and off); production keeps it on.
"""

from __future__ import annotations

enabled: bool = True


def configure(on: bool) -> None:
    global enabled
    enabled = on
