"""Helpers shared by the benchmark scripts: timing, percentiles, temp dirs and the result table.

Benchmarks are run by hand (``python bench/<name>.py``), never by the test suite.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
console = Console(highlight=False, width=int(os.environ.get("COLUMNS", "200")))


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of a list of durations in seconds."""
    if not seconds:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    arr = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(arr.max()), "n": len(arr)}


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """(result, seconds) of one call."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def fmt_num(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if abs(value) >= 10_000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:,.{min(digits, 1)}f}"
    else:
        text = f"{value:.{digits}f}"
    return f"{text} {unit}".strip()


@dataclass
class Row:
    """One measured number, optionally with a target and a baseline measured in the same run."""

    section: str
    name: str
    value: float | None
    unit: str = ""
    target: str = ""  # human text, e.g. "≥ 2,000"
    passed: bool | None = None  # None: no target
    baseline_name: str = ""
    baseline: float | None = None
    ratio: float | None = None  # value / baseline unless given
    note: str = ""
    digits: int = 1
    display: str = ""  # shown instead of ``value`` when set (e.g. "3.1 / 7.9 ms" for p50 / p95)
    extra: dict[str, float] = field(default_factory=dict)


class Report:
    """Collects rows and prints them as one table (plus optional JSON)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[Row] = []
        self.notes: list[str] = []

    def add(self, row: Row) -> Row:
        if row.ratio is None and row.baseline not in (None, 0) and row.value is not None:
            row.ratio = row.value / row.baseline  # type: ignore[operator]
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)

    def print(self) -> None:
        table = Table(title=self.title, show_lines=False, title_justify="left")
        for col, kw in (
            ("section", {"style": "dim"}),
            ("measure", {}),
            ("measured", {"justify": "right"}),
            ("target", {"justify": "right"}),
            ("result", {"justify": "center"}),
            ("baseline (same run)", {}),
            ("ratio", {"justify": "right"}),
            ("note", {"style": "dim"}),
        ):
            table.add_column(col, **kw)
        last_section = None
        for r in self.rows:
            if last_section is not None and r.section != last_section:
                table.add_section()
            last_section = r.section
            result = "" if r.passed is None else "[green]PASS[/green]" if r.passed else "[red]FAIL[/red]"
            base = f"{r.baseline_name}: {fmt_num(r.baseline, r.unit, r.digits)}" if r.baseline_name else ""
            if r.baseline_name and r.baseline is None:
                base = r.baseline_name
            ratio = "" if r.ratio is None else f"{r.ratio:.2f}×"
            shown = r.display or fmt_num(r.value, r.unit, r.digits)
            table.add_row(r.section, r.name, shown, r.target, result, base, ratio, r.note)
        console.print(table)
        for n in self.notes:
            console.print(f"[dim]• {n}[/dim]")
        verdicts = [r.passed for r in self.rows if r.passed is not None]
        if verdicts:
            ok = sum(verdicts)
            colour = "green" if ok == len(verdicts) else "red"
            console.print(f"[{colour}]{ok}/{len(verdicts)} targets met[/{colour}]")

    def finish(self, started: float, json_path: Path | None, extra: str = "") -> int:
        """Close a run: note its duration, print the table, write JSON if asked; the exit code."""
        self.note(f"total run time {time.perf_counter() - started:.0f} s{extra}")
        self.print()
        if json_path:
            self.dump_json(json_path, argv=sys.argv[1:])
        return 0

    def dump_json(self, path: Path, **meta: object) -> None:
        data = {"title": self.title, "meta": meta, "rows": [asdict(r) for r in self.rows], "notes": self.notes}
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        console.print(f"[dim]results written to {path}[/dim]")


@contextmanager
def temp_data_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A fresh data directory outside the repository, removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=f"ragvigil-bench-{prefix}-"))
    try:
        yield path
    finally:
        if keep:
            console.print(f"[dim]kept data dir {path}[/dim]")
        else:
            shutil.rmtree(path, ignore_errors=True)


def empty_config(directory: Path) -> Path:
    """An empty config file: a named config file must exist, and none keeps a ./ragvigil.toml out of the run."""
    path = directory / "no-config.toml"
    path.touch()
    return path


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop servers and remove temp dirs."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    line = f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, load avg {load}"
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        line += " [yellow](machine not idle: numbers include CPU contention)[/yellow]"
    return line


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    return x
