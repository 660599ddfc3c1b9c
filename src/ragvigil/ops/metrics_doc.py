"""Render docs/metrics.md from the metric declarations, so the catalogue cannot drift.

python -m ragvigil.ops.metrics_doc > docs/metrics.md      (a test fails when it is stale)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from ragvigil.ops import metrics
from ragvigil.ops.health import HealthChecks, HealthCollector
from ragvigil.ops.system import HostCollector

_SUFFIX = {"counter": "_total"}


def _declared() -> list[tuple[str, str, str, tuple[str, ...]]]:
    rows = []
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            name = obj._name + _SUFFIX.get(obj._type, "")
            rows.append((name, obj._type, obj._documentation, tuple(obj._labelnames)))
    reg = CollectorRegistry()
    from prometheus_client import ProcessCollector

    ProcessCollector(registry=reg)
    health = HealthCollector()
    health.checks = HealthChecks()
    health.checks.add("example", lambda: None)
    reg.register(health)
    with tempfile.TemporaryDirectory() as d:
        reg.register(HostCollector(Path(d)))
        for fam in reg.collect():
            name = fam.name + _SUFFIX.get(fam.type, "")
            labels = tuple(sorted({k for sample in fam.samples for k in sample.labels}))
            rows.append((name, fam.type, fam.documentation, labels))
    health.checks.close()
    return sorted(rows)


def render() -> str:
    lines = [
        "# Metrics",
        "",
        "Generated from `src/ragvigil/ops/metrics.py`, `ops/system.py` and `ops/health.py` by",
        "`python -m ragvigil.ops.metrics_doc > docs/metrics.md`; a test fails when this file is stale.",
        "Histograms also export `_bucket`, `_sum` and `_count` series. Label values are bounded: routes",
        "are templates, stages/outcomes/kinds come from fixed lists in the code.",
        "",
        "| metric | type | labels | meaning |",
        "|---|---|---|---|",
    ]
    for name, kind, doc, labels in _declared():
        lines.append(f"| `{name}` | {kind} | {', '.join(f'`{x}`' for x in labels) or '—'} | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
