"""Per-turn understanding measured on public labelled data nobody on the team wrote: safety, emotion, intent.

``python bench/quality.py [--data ../shared/datasets] [--only safety,emotion,intent] [--json out.json]``

Each part lives in its own script (``quality_safety.py``, ``quality_emotion.py``, ``quality_intent.py``, each runnable
alone) and exposes ``run(data, cache) -> list[Row]``; this one runs them in one process, sharing the cached e5
vectors (``_vectors.py``), and prints one table with the issue's targets. Only files the datasets README marks
*train* (or a split held out inside one, fixed by seed) are used for exemplars or training; the numbers come from
the *eval* files and held-out splits.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import _datasets
from _common import Report, console, exit_on_sigterm, machine_line
from _vectors import VectorCache

PARTS = ("safety", "emotion", "intent")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=_datasets.DEFAULT_DATA, help="datasets folder")
    ap.add_argument("--only", default=",".join(PARTS), help="which parts, comma separated")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    data = args.data.resolve()
    if not data.is_dir():
        ap.error(f"{data} not found (use --data)")
    wanted = [p.strip() for p in args.only.split(",") if p.strip()]
    for part in wanted:
        if part not in PARTS:
            ap.error(f"unknown part {part!r} (one of {', '.join(PARTS)})")
    console.print(f"[bold]ragvigil understanding quality[/bold] — {machine_line()}; data {data}")
    started = time.perf_counter()
    report = Report("Safety, emotion and intent on public labelled data")
    cache = VectorCache()
    try:
        for part in wanted:
            module = importlib.import_module(f"quality_{part}")
            for row in module.run(data, cache):
                report.add(row)
    finally:
        cache.close()
    return report.finish(started, args.json)


if __name__ == "__main__":
    sys.exit(main())
