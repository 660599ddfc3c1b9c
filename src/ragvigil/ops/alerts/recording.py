"""The signal recording on disk, and backtesting rules against it.

Every ``interval`` seconds the service appends a snapshot of all its metrics to
``<data dir>/signals/<UTC hour>.jsonl``; the previous hours are gzipped, and files older than the
retention are deleted. A file starts with the names of its series; each line then holds one time
and the values in that order (a new series adds a ``series`` line), so a snapshot costs a number
per series rather than its name and labels.

``backtest`` replays a window of the recording through a rule set — the same engine, the same
states — and reports when each rule would have fired and resolved, before the rules are deployed.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ragvigil.ops.alerts.engine import AlertEngine
from ragvigil.ops.alerts.history import SignalHistory
from ragvigil.ops.alerts.rules import RuleSet

log = logging.getLogger(__name__)


def _key(name: str, labels: dict[str, str]) -> str:
    return json.dumps([name, labels], sort_keys=True, separators=(",", ":"))


class SignalRecorder:
    def __init__(self, directory: Path, retention_s: float = 48 * 3600) -> None:
        self.directory = directory
        self.retention_s = retention_s
        self._hour: str | None = None
        self._columns: dict[str, int] = {}
        self._lock = threading.Lock()

    def write(self, t: float, samples: list[tuple[str, dict[str, str], float]]) -> None:
        hour = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H")
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            if hour != self._hour:
                self._roll(hour)
            path = self.directory / f"{hour}.jsonl"
            values: dict[int, float] = {}
            new = []
            for name, labels, value in samples:
                key = _key(name, labels)
                col = self._columns.get(key)
                if col is None:
                    col = self._columns[key] = len(self._columns)
                    new.append(key)
                values[col] = value
            row = [values.get(i) for i in range(len(self._columns))]
            with path.open("a", encoding="utf-8") as f:
                if new:
                    f.write(json.dumps({"series": new}, separators=(",", ":")) + "\n")
                f.write(json.dumps({"t": round(t, 3), "v": [_num(v) for v in row]}, separators=(",", ":")) + "\n")

    def _roll(self, hour: str) -> None:
        """A new hour: start a file, gzip the finished ones, drop expired ones."""
        self._hour, self._columns = hour, {}
        current = self.directory / f"{hour}.jsonl"
        if current.exists():  # a restart within the hour: learn its columns
            for row in _rows(current):
                for key in row.get("series", []):
                    self._columns.setdefault(key, len(self._columns))
        for path in self.directory.glob("*.jsonl"):
            if path != current:
                with path.open("rb") as src, gzip.open(path.with_suffix(".jsonl.gz"), "wb") as dst:
                    dst.writelines(src)
                path.unlink()
        cutoff = time.time() - self.retention_s
        for path in self.directory.glob("*.jsonl.gz"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)


def _num(v: float | None) -> float | str | None:
    if v is None or math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")


def _rows(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # a torn last line after a crash
    except (OSError, EOFError) as exc:
        log.warning("signal_file_unreadable", extra={"file": str(path), "error": str(exc)})


def load_recording(directory: Path, since: float, until: float, names: set[str] | None = None) -> SignalHistory:
    """The recorded samples in ``[since, until]`` (only metrics in ``names`` when given)."""
    history = SignalHistory(retention_s=until - since + 3600, names=names)
    files = sorted(directory.glob("*.jsonl.gz")) + sorted(directory.glob("*.jsonl"))
    for path in sorted(files, key=lambda p: p.name):
        columns: list[tuple[str, dict[str, str]]] = []
        for row in _rows(path):
            if "series" in row:
                columns += [tuple(json.loads(k)) for k in row["series"]]  # type: ignore[misc]
                continue
            t = row.get("t")
            if not isinstance(t, int | float) or not since <= t <= until:
                continue
            samples = [
                (columns[i][0], columns[i][1], float(v))
                for i, v in enumerate(row.get("v", []))
                if v is not None and i < len(columns)
            ]
            history.add(float(t), samples)
    return history


@dataclass
class Episode:
    rule: str
    severity: str
    labels: dict[str, str]
    pending_at: float
    fired_at: float | None = None
    resolved_at: float | None = None


def backtest(rules: RuleSet, history: SignalHistory, since: float, until: float, step: float) -> list[Episode]:
    """Evaluate ``rules`` every ``step`` seconds over the recording; every pending/firing episode."""
    engine = AlertEngine(rules, history)
    episodes: dict[tuple[str, str, float], Episode] = {}
    t = since
    while t <= until:
        for change in engine.evaluate(t):
            a = change.alert
            key = (a.rule, a.fingerprint, a.active_at)
            ep = episodes.setdefault(key, Episode(a.rule, a.severity, a.labels, a.active_at))
            if change.new == "firing":
                ep.fired_at = change.at
            elif change.new == "resolved":
                ep.resolved_at = change.at
        t += step
    return sorted(episodes.values(), key=lambda e: e.pending_at)
