"""The symptoms snapshot: what the instance shows right now, each signal with its value and since when.

Diagnosis observes through small callables (``SymptomSources``) so that ``ops`` never imports the
chat pipeline, the knowledge base or the API: the runtime hands in where each signal is read. Every
source is optional and a failing one becomes a note, never an exception, because diagnosis runs
exactly when things are broken. Sources:

* alerts — the embedded engine's pending/firing alerts (plus the watchdog's own stall), and the
  firing alerts of the incident being diagnosed (they may come from Alertmanager);
* health — the cached check results and the ``DEPENDENCIES`` roll-up; "since" is read from the
  alert engine's signal history of ``ragvigil_health_check_up``, else from when this collector
  first saw the check fail;
* errors — WARNING and above in the tail of ``application.log`` (at most ``max_log_bytes``) over the
  window, counted by event;
* stages — p95 per pipeline stage from the access lines' ``stages_ms`` over the window, else from
  the ``ragvigil_stage_duration_seconds`` histogram since the process started;
* breakers — the provider router's ``status()`` when there is one (absent: no breaker evidence);
* resources — host CPU, memory and data-disk ratios (the gauges of ``ops/system.py``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.registry import Collector

from ragvigil.ops.alerts.history import SignalHistory
from ragvigil.ops.alerts.promql import _bucket_quantile
from ragvigil.ops.health import CheckResult, rollup
from ragvigil.ops.loganalysis import latency_summary, record_time
from ragvigil.ops.logfiles import ERROR_LOG, MAIN_LOG

log = logging.getLogger(__name__)

RESOURCE_METRICS = {
    "cpu": "ragvigil_host_cpu_utilization_ratio",
    "memory": "ragvigil_host_memory_used_ratio",
    "disk": "ragvigil_data_disk_used_ratio",
}
_LEVEL_RANK = {"WARNING": 1, "ERROR": 2, "CRITICAL": 3}
_NOTICE_LEVELS = frozenset(_LEVEL_RANK)
MAX_ERROR_KINDS = 50
MAX_MESSAGES = 20
OTHER_MESSAGES = "(other messages)"


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def epoch(value: Any) -> float | None:
    """A time as epoch seconds, from a number, an aware/naive (UTC) datetime or ISO text."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return None


@dataclass
class AlertSymptom:
    name: str
    state: str  # pending | firing
    severity: str
    labels: dict[str, str]
    since: float | None
    value: float | None = None
    source: str = "engine"  # engine | watchdog | incident


@dataclass
class CheckSymptom:
    name: str
    ok: bool
    critical: bool
    error: str | None
    since: float | None  # failing since (None when passing or unknown)


@dataclass
class ErrorSymptom:
    """One kind of logged trouble: a WARNING+ event, how often, first/last seen, its distinct messages."""

    event: str
    level: str
    count: int
    first_seen: float
    last_seen: float
    example: str  # the latest occurrence's error text (or the event)
    messages: dict[str, int] = field(default_factory=dict)  # at most MAX_MESSAGES distinct texts

    def add(self, level: str, when: float, message: str) -> None:
        self.count += 1
        if _LEVEL_RANK.get(level, 0) > _LEVEL_RANK.get(self.level, 0):
            self.level = level
        self.first_seen = min(self.first_seen, when)
        if when >= self.last_seen:
            self.last_seen, self.example = when, message
        if message in self.messages or len(self.messages) < MAX_MESSAGES:
            self.messages[message] = self.messages.get(message, 0) + 1
        else:
            self.messages[OTHER_MESSAGES] = self.messages.get(OTHER_MESSAGES, 0) + 1


@dataclass
class StageSymptom:
    stage: str
    p95_s: float
    count: int
    window: str  # "logs" (the window) or "since_start" (the process' histogram)


@dataclass
class BreakerSymptom:
    name: str
    state: str
    since: float | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ResourceSymptom:
    name: str
    value: float
    read_at: float | None = None  # when the reading was taken


@dataclass
class Symptoms:
    """One snapshot; ``notes`` say which sources could not be read."""

    taken_at: float
    window_s: float
    alerts: list[AlertSymptom] = field(default_factory=list)
    checks: dict[str, CheckSymptom] = field(default_factory=dict)
    rollup: dict[str, str] = field(default_factory=dict)
    errors: list[ErrorSymptom] = field(default_factory=list)
    stages: dict[str, StageSymptom] = field(default_factory=dict)
    breakers: list[BreakerSymptom] | None = None  # None: no provider router to ask
    resources: dict[str, ResourceSymptom] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form; every time as ISO-8601 UTC."""

        def times(d: dict[str, Any]) -> dict[str, Any]:
            for k in ("since", "first_seen", "last_seen", "read_at"):
                if k in d:
                    d[k] = iso(d[k])
            return d

        return {
            "taken_at": iso(self.taken_at),
            "window_s": self.window_s,
            "alerts": [times(asdict(a)) for a in self.alerts],
            "checks": {k: times(asdict(v)) for k, v in self.checks.items()},
            "rollup": dict(self.rollup),
            "errors": [times(asdict(e)) for e in self.errors],
            "stages": {k: asdict(v) for k, v in self.stages.items()},
            "breakers": None if self.breakers is None else [times(asdict(b)) for b in self.breakers],
            "resources": {k: times(asdict(v)) for k, v in self.resources.items()},
            "notes": list(self.notes),
        }

    def with_alerts(self, extra: Iterable[AlertSymptom]) -> Symptoms:
        """Add alerts not already present (same name and labels), e.g. an incident's own."""
        seen = {(a.name, tuple(sorted(a.labels.items()))) for a in self.alerts}
        for a in extra:
            key = (a.name, tuple(sorted(a.labels.items())))
            if key not in seen:
                seen.add(key)
                self.alerts.append(a)
        return self


@dataclass
class SymptomSources:
    """Where each signal is read; any may be None (that signal is then simply absent)."""

    alerts: Callable[[], list[AlertSymptom]] | None = None
    health: Callable[[], list[CheckResult]] | None = None
    history: Callable[[], SignalHistory | None] | None = None
    log_dir: Path | None = None
    providers_status: Callable[[], list[dict[str, Any]] | None] | None = None
    stage_histogram: Collector | None = None  # ragvigil_stage_duration_seconds, when the logs have no timings
    resources: Callable[[], dict[str, float]] | None = None


def engine_alerts(service: Any) -> Callable[[], list[AlertSymptom]]:
    """Alerts of an ``AlertService``: its engine's pending/firing ones, and its watchdog's stall."""

    def read() -> list[AlertSymptom]:
        out = [
            AlertSymptom(
                a.rule,
                a.state,
                a.severity,
                dict(a.labels),
                a.active_at,
                None if math.isnan(a.value) else a.value,
            )
            for a in service.engine.alerts(("pending", "firing"))
        ]
        if service.stalled and not any(a.name == "AlertEvaluationStalled" and a.state == "firing" for a in out):
            labels = {"alertname": "AlertEvaluationStalled", "severity": "P1"}
            out.append(
                AlertSymptom(
                    "AlertEvaluationStalled", "firing", "P1", labels, service.engine.last_evaluation, None, "watchdog"
                )
            )
        return out

    return read


def incident_alerts(incident: dict[str, Any]) -> list[AlertSymptom]:
    """The firing alerts filed under an incident (``IncidentStore.get``), as symptoms."""
    return [
        AlertSymptom(
            a["alertname"], "firing", a["severity"], dict(a["labels"]), epoch(a["starts_at"]), None, "incident"
        )
        for a in incident.get("alerts", [])
        if a.get("state") == "firing"
    ]


class SymptomCollector:
    """Takes snapshots; remembers when it first saw each check fail (the fallback "since")."""

    def __init__(self, sources: SymptomSources, window_s: float = 900.0, max_log_bytes: int = 8_000_000) -> None:
        self.sources = sources
        self.window_s = window_s
        self.max_log_bytes = max_log_bytes
        self._failing_since: dict[str, float] = {}
        self._lock = threading.Lock()

    def snapshot(self, now: float | None = None) -> Symptoms:
        now = time.time() if now is None else now
        s = Symptoms(taken_at=now, window_s=self.window_s)
        history = self._history(s)
        for what, read in (
            ("alerts", lambda: self._alerts(s)),
            ("health", lambda: self._health(s, history, now)),
            ("logs", lambda: self._logs(s, now)),
            ("breakers", lambda: self._breakers(s)),
            ("resources", lambda: self._resources(s, history, now)),
        ):
            try:
                read()
            except Exception as exc:  # diagnosis runs when things are broken: a source may be one of them
                log.warning("diagnosis_source_failed", extra={"source": what, "error": str(exc)[:300]})
                s.notes.append(f"{what}: could not be read ({type(exc).__name__}: {_first_line(exc)})")
        if not s.stages:
            try:
                self._stage_histogram(s)
            except Exception as exc:
                s.notes.append(f"stages: could not be read ({type(exc).__name__})")
        return s

    # --- sources --------------------------------------------------------------------------------
    def _history(self, s: Symptoms) -> SignalHistory | None:
        try:
            return self.sources.history() if self.sources.history else None
        except Exception as exc:
            s.notes.append(f"signal history: could not be read ({type(exc).__name__})")
            return None

    def _alerts(self, s: Symptoms) -> None:
        if self.sources.alerts is None:
            s.notes.append("alerts: no embedded alert engine (an incident's own alerts still count)")
            return
        s.alerts.extend(self.sources.alerts())

    def _health(self, s: Symptoms, history: SignalHistory | None, now: float) -> None:
        if self.sources.health is None:
            return
        results = self.sources.health()
        with self._lock:
            for r in results:
                if r.ok:
                    self._failing_since.pop(r.name, None)
                else:
                    self._failing_since.setdefault(r.name, now)
            seen = dict(self._failing_since)
        for r in results:
            since = None if r.ok else (_zero_since(history, r.name, now) or seen.get(r.name))
            s.checks[r.name] = CheckSymptom(r.name, r.ok, r.critical, r.error, since)
        s.rollup = {node: info["status"] for node, info in rollup(results).items()}

    def _logs(self, s: Symptoms, now: float) -> None:
        log_dir = self.sources.log_dir
        if log_dir is None or not log_dir.is_dir():
            s.notes.append("logs: no log directory (error kinds and stage latency from logs unavailable)")
            return
        path = next((log_dir / n for n in (MAIN_LOG, ERROR_LOG) if (log_dir / n).is_file()), None)
        if path is None:
            s.notes.append(f"logs: no {MAIN_LOG} yet")
            return
        records, cut = tail_records(path, now - self.window_s, now + 1, self.max_log_bytes)
        if cut:
            s.notes.append(f"logs: only the last {self.max_log_bytes} bytes of {path.name} were read")
        groups: dict[str, ErrorSymptom] = {}
        timed: list[dict[str, Any]] = []
        for record in records:
            if isinstance(record.get("stages_ms"), dict):
                timed.append(record)
            level = str(record.get("level", "")).upper()
            if level not in _NOTICE_LEVELS:
                continue
            event = str(record.get("event", ""))[:200]
            when = record_time(record).timestamp()
            error = record.get("error")
            example = (error if isinstance(error, str) and error else event)[:300]
            g = groups.get(event)
            if g is None:
                g = groups[event] = ErrorSymptom(event, level, 0, when, when, example)
            g.add(level, when, example)
        s.errors = sorted(groups.values(), key=lambda e: (-e.count, e.event))[:MAX_ERROR_KINDS]
        for row in latency_summary(timed, by="stage"):
            s.stages[row.name] = StageSymptom(row.name, row.p95_ms / 1000, row.count, "logs")

    def _stage_histogram(self, s: Symptoms) -> None:
        histogram = self.sources.stage_histogram
        if histogram is None:
            return
        buckets: dict[str, list[tuple[float, float]]] = {}
        counts: dict[str, int] = {}
        for family in histogram.collect():
            if family.name != "ragvigil_stage_duration_seconds":
                continue
            for sample in family.samples:
                stage = sample.labels.get("stage", "")
                if sample.name.endswith("_bucket"):
                    buckets.setdefault(stage, []).append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_count"):
                    counts[stage] = int(sample.value)
        for stage, bs in buckets.items():
            if counts.get(stage):
                p95 = _bucket_quantile(0.95, bs)
                if not math.isnan(p95):
                    s.stages[stage] = StageSymptom(stage, p95, counts[stage], "since_start")

    def _breakers(self, s: Symptoms) -> None:
        if self.sources.providers_status is None:
            return
        rows = self.sources.providers_status()
        if rows is None:
            return
        s.breakers = [
            BreakerSymptom(
                str(r.get("name", "?")),
                str(r.get("state", "unknown")),
                epoch(r.get("opened_at")) if str(r.get("state")) != "closed" else None,
                {k: v for k, v in r.items() if k not in ("name", "state", "opened_at")},
            )
            for r in rows
        ]

    def _resources(self, s: Symptoms, history: SignalHistory | None, now: float) -> None:
        for name, metric in RESOURCE_METRICS.items():
            latest = _latest(history, metric, now) if history is not None else None
            if latest is not None:
                s.resources[name] = ResourceSymptom(name, latest[1], latest[0])
        missing = [n for n in RESOURCE_METRICS if n not in s.resources]
        if missing and self.sources.resources is not None:
            figures = self.sources.resources()
            for name in missing:
                if name in figures:
                    s.resources[name] = ResourceSymptom(name, figures[name], now)


def tail_records(path: Path, start: float, end: float, max_bytes: int) -> tuple[list[dict[str, Any]], bool]:
    """JSON log records with ``start <= ts < end`` from the last ``max_bytes`` of ``path``; and whether it was cut.

    Only the tail of the live file: the window is minutes, the live file holds the newest lines, and a
    diagnosis must cost the same however large the rotated history has grown.
    """
    with path.open("rb") as f:
        size = f.seek(0, 2)
        cut = size > max_bytes
        f.seek(max(0, size - max_bytes))
        data = f.read(max_bytes)
    lines = data.split(b"\n")
    if cut:
        lines = lines[1:]  # the first line was cut in the middle
    out = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8", errors="replace"))
            when = record_time(record).timestamp()
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            continue  # a corrupt or partial line is skipped, never fatal
        if isinstance(record, dict) and start <= when < end:
            out.append(record)
    return out, cut


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _latest(history: SignalHistory, metric: str, now: float) -> tuple[float, float] | None:
    """(time, value) of the newest sample of ``metric`` within the last 5 minutes."""
    best: tuple[float, float] | None = None
    for _, times, values in history.select(metric, now - 300, now):
        if times and (best is None or times[-1] > best[0]):
            best = (times[-1], values[-1])
    return best


def _zero_since(history: SignalHistory | None, check: str, now: float) -> float | None:
    """When ``ragvigil_health_check_up{check}`` last turned 0 and stayed there, from the signal history."""
    if history is None:
        return None
    series = history.select(
        "ragvigil_health_check_up", now - history.retention_s, now, lambda labels: dict(labels).get("check") == check
    )
    for _, times, values in series:
        if not values or values[-1] != 0:
            return None
        since = times[-1]
        for t, v in zip(reversed(times), reversed(values), strict=True):
            if v != 0:
                break
            since = t
        return since
    return None


def host_figures(data_dir: Path) -> Callable[[], dict[str, float]]:
    """Host memory and data-disk ratios read directly (when no signal history has them)."""
    import psutil

    def read() -> dict[str, float]:
        mem = psutil.virtual_memory()
        disk = psutil.disk_usage(str(data_dir if data_dir.exists() else data_dir.parent))
        return {"memory": (mem.total - mem.available) / mem.total, "disk": disk.percent / 100}

    return read
