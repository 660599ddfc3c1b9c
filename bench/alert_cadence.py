"""Alert evaluation cadence: what evaluating the P1 groups every second costs, next to the old 3 s cycle.

What it does (in process, a temp data dir, stops by itself): builds one runtime (so the registry
holds every collector a real instance has: health checks, host and process figures), then runs its
alert service in real time for ``--seconds`` in each of two ways:
  * before: every rule of the default pack once every 3 s (``tick``, what the loop did before groups
    had their own interval);
  * after: the loop body (``run_due``) every second: the availability and provider groups each
    second, the other groups every 3 s.
It prints the time per cycle and the evaluation time per second of wall time (the share of one core).
An idle instance has fewer label series than a busy one; ``bench/drills.py`` prints the same figure
from a live instance under the drills' traffic.

    .venv/bin/python bench/alert_cadence.py              # ~1 minute
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import Report, Row, empty_config, exit_on_sigterm, machine_line, temp_data_dir


def run(service, seconds: float, step: float, body) -> list[float]:  # type: ignore[no-untyped-def]
    """Cycle durations (s) of ``body(t)`` called every ``step`` seconds for ``seconds``."""
    took: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        t0 = time.perf_counter()
        body(time.time())
        took.append(time.perf_counter() - t0)
        time.sleep(max(0.0, step - (time.monotonic() - started)))
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="real time per mode")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    exit_on_sigterm()
    started = time.perf_counter()
    import os

    from ragvigil.app import Runtime
    from ragvigil.config import Settings

    report = Report("alert evaluation cadence")
    with temp_data_dir("cadence") as data:
        os.environ["RAGVIGIL_CONFIG_FILE"] = str(empty_config(data))
        rt = Runtime(Settings(_env_file=None, data_dir=data))  # type: ignore[call-arg]
        try:
            service = rt.alerts
            assert service is not None
            service.recorder = None  # disk snapshots are the same in both modes: leave them out
            groups = service.status()["group_intervals_s"]
            rules = len(service.engine.ruleset.rules)
            before = run(service, args.seconds, 3.0, service.tick)
            after = run(service, args.seconds, service.cadence.step, service.run_due)
        finally:
            rt.close()
    for name, took, every in (("before: every rule every 3 s", before, 3.0), ("after: run_due every 1 s", after, 1.0)):
        per_s = sum(took) / (len(took) * every)
        report.add(
            Row(
                "cadence",
                name,
                statistics.median(took) * 1000,
                "ms",
                digits=2,
                display=f"{statistics.median(took) * 1000:.2f} ms median, {max(took) * 1000:.1f} ms max",
                note=f"{len(took)} cycles, {per_s * 1000:.2f} ms of evaluation per second ({per_s:.2%} of a core)",
            )
        )
    ratio = (sum(after) / args.seconds) / max(sum(before) / args.seconds, 1e-9)
    report.note(f"{rules} rules; group intervals {groups}; after/before cost per second {ratio:.2f}×")
    report.note(machine_line())
    return report.finish(started, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
