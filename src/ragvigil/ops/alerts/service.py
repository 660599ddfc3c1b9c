"""The embedded alerting loop: sample the signals, evaluate the rules, hand the changes on.

One thread samples ragvigil's Prometheus registry and evaluates the rules, each group at its own
``interval`` (a rule file's group field, as Prometheus reads it) or else every ``eval_interval``
seconds (3 s by default); the default pack evaluates its availability and provider groups every
second, so a P1 rule with ``for: 3s`` fires within about 4 s of its signal. Then it hands the
alerts to the router (incidents, silences, inhibition, grouping, notifications). The rule file is
re-read when it changes; an invalid file is refused, logged with every problem, and the previous rules
stay active. A second thread watches the first (monitoring the monitor): when evaluation stalls it
logs CRITICAL, raises the AlertEvaluationStalled alert itself (``on_stall``: an incident and a
notification that do not depend on the stalled loop) and stops the dead man's switch heartbeat, so
the external receiver raises the alarm too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.registry import CollectorRegistry

from ragvigil.ops import metrics
from ragvigil.ops.alerts.cadence import Cadence
from ragvigil.ops.alerts.engine import AlertEngine, Transition
from ragvigil.ops.alerts.history import SignalHistory, registry_samples
from ragvigil.ops.alerts.promql import LOOKBACK_S
from ragvigil.ops.alerts.recording import SignalRecorder
from ragvigil.ops.alerts.router import Router
from ragvigil.ops.alerts.rules import RuleFileError, RuleSet, default_rules, load_rule_file

log = logging.getLogger(__name__)


def load_configured_rules(path: Path | None) -> RuleSet:
    """The rule file named in the settings, or the default pack."""
    return default_rules() if path is None else load_rule_file(path)


class AlertService:
    def __init__(
        self,
        registry: CollectorRegistry,
        rules_file: Path | None = None,
        eval_interval: float = 3.0,
        history_s: float = 900.0,
        stall_after: float = 30.0,
        heartbeat_url: str | None = None,
        heartbeat_interval: float = 60.0,
        router: Router | None = None,
        recorder: SignalRecorder | None = None,
        record_interval: float = 15.0,
        on_stall: Callable[[bool, float], None] | None = None,
        on_evaluated: Callable[[list[Transition], float], None] | None = None,
    ) -> None:
        self.registry = registry
        self.rules_file = rules_file
        self.eval_interval = eval_interval
        self.stall_after = stall_after
        self.heartbeat_url = heartbeat_url
        self.heartbeat_interval = heartbeat_interval
        self.router = router
        self.recorder = recorder
        self.on_stall = on_stall
        self.on_evaluated = on_evaluated  # after routing, every cycle: e.g. remediation acts and verifies
        self.watched: set[str] = set()  # metric names kept for others besides the rules (see ``watch``)
        self.record_interval = record_interval
        self._last_record = 0.0
        rules = load_configured_rules(rules_file)
        self.history = SignalHistory(retention_s=history_s, names=rules.metric_names())
        self.engine = AlertEngine(rules, self.history)
        self.cadence = Cadence(rules.intervals, eval_interval)
        self.rules_error: RuleFileError | None = None
        self._rules_mtime = self._mtime()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stalled = False
        self._stalled_since: float | None = None
        self.last_heartbeat: float | None = None

    # --- one cycle -----------------------------------------------------------------------------
    def run_due(self, t: float | None = None) -> list[Transition]:
        """The loop body: sample the signals and evaluate the groups due at ``t`` (see ``Cadence``)."""
        t = time.time() if t is None else t
        return self.tick(t, self.cadence.due(t))

    def tick(self, t: float | None = None, groups: set[str] | None = None) -> list[Transition]:
        """Sample the signals and evaluate every rule once, or only those of ``groups`` (tests call it directly)."""
        start = time.perf_counter()
        t = time.time() if t is None else t
        self._reload_if_changed()
        metrics.ALERT_LAST_EVALUATION.set(t)  # the cycle's time, before sampling: the rules see this cycle
        samples = list(registry_samples(self.registry))  # one collection feeds the history and the recording
        self.history.add(t, samples)
        if self.recorder is not None and self.record_interval and t - self._last_record >= self.record_interval:
            self._last_record = t
            try:
                self.recorder.write(t, samples)
            except OSError as exc:  # a full disk must not stop alerting (DiskFilling will say why)
                log.warning("signal_recording_failed", extra={"error": str(exc)})
        changes = self.engine.evaluate(t, groups)
        for state in self.engine.rule_health():
            if state["health"] == "error":
                metrics.ALERT_RULE_FAILURES.labels(state["rule"]).inc()
        counts: dict[tuple[str, str], int] = {(s, p): 0 for s in ("pending", "firing") for p in ("P1", "P2", "P3")}
        for alert in self.engine.alerts():
            key = (alert.state, alert.severity)
            counts[key] = counts.get(key, 0) + 1
        for (state, severity), n in counts.items():
            metrics.ALERTS_ACTIVE.labels(state, severity).set(n)
        metrics.ALERT_SIGNAL_SERIES.set(self.history.series_count)
        metrics.ALERT_EVALUATIONS.inc()
        metrics.ALERT_EVALUATION_DURATION.observe(time.perf_counter() - start)
        for change in changes:
            if change.new in ("firing", "resolved"):
                log.log(
                    logging.ERROR if change.new == "firing" and change.alert.severity == "P1" else logging.WARNING,
                    f"alert_{change.new}",
                    extra={
                        "alert": change.alert.rule,
                        "severity": change.alert.severity,
                        "labels": change.alert.labels,
                    },
                )
        if self.router is not None:
            try:
                self.router.process(self.engine.alerts(["firing", "resolved"]), t)
            except Exception:  # routing trouble (e.g. the database) must never stop evaluation
                log.exception("alert_routing_failed")
        if self.on_evaluated is not None:
            try:
                self.on_evaluated(changes, t)
            except Exception:  # a failing subscriber must never stop evaluation
                log.exception("alert_subscriber_failed")
        return changes

    def watch(self, names: set[str]) -> None:
        """Keep these metrics in the signal history too (e.g. the signals remediation verifies with)."""
        self.watched |= names
        if self.history.names is not None:
            self.history.names = self.history.names | names

    # --- rules ---------------------------------------------------------------------------------
    def _mtime(self) -> float | None:
        try:
            return self.rules_file.stat().st_mtime if self.rules_file is not None else None
        except OSError:
            return None

    def _reload_if_changed(self) -> None:
        mtime = self._mtime()
        if mtime != self._rules_mtime:
            self._rules_mtime = mtime
            self.reload()

    def reload(self) -> RuleFileError | None:
        """Re-read the rule file; on any problem keep the previous rules and return the error."""
        try:
            rules = load_configured_rules(self.rules_file)
        except RuleFileError as exc:
            self.rules_error = exc
            log.error("alert_rules_rejected", extra={"problems": exc.problems, "file": str(self.rules_file)})
            return exc
        self.history.names = rules.metric_names() | self.watched  # only what the rules (and watchers) read
        self.engine.replace_rules(rules)
        self.cadence.replace(rules.intervals)
        self.rules_error = None
        log.info("alert_rules_loaded", extra={"rules": len(rules.rules), "file": str(self.rules_file)})
        return None

    # --- background ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        for name, target in (("alert-evaluator", self._loop), ("alert-watchdog", self._watchdog)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_due()
            except Exception:
                log.exception("alert_evaluation_failed")
            self._stop.wait(max(0.0, self.cadence.step - (time.monotonic() - started)))

    def _watchdog(self) -> None:
        """Notice a stalled evaluator, and send the heartbeat only while evaluation is healthy."""
        while not self._stop.wait(min(self.eval_interval, 5.0)):
            last = self.engine.last_evaluation
            stalled = last is not None and time.time() - last > self.stall_after
            if stalled and not self.stalled:
                log.critical("alert_evaluation_stalled", extra={"seconds_since": round(time.time() - last, 1)})
            if stalled and not self.stalled:
                self._stalled_since = last
            if stalled != self.stalled and self.on_stall is not None:
                try:
                    # page people directly, around the stalled evaluator; the same episode resolves
                    self.on_stall(stalled, self._stalled_since or last)
                except Exception:
                    log.exception("alert_stall_notification_failed")
            self.stalled = stalled
            due = self.last_heartbeat is None or time.time() - self.last_heartbeat >= self.heartbeat_interval
            if self.heartbeat_url and not stalled and last is not None and due:
                self.send_heartbeat()

    def send_heartbeat(self) -> bool:
        """POST to the dead man's switch URL; its owner alerts when these stop arriving."""
        assert self.heartbeat_url is not None
        try:
            httpx.post(
                self.heartbeat_url, json={"service": "ragvigil", "at": time.time()}, timeout=5
            ).raise_for_status()
        except httpx.HTTPError as exc:
            metrics.ALERT_HEARTBEAT_FAILURES.inc()
            log.warning("alert_heartbeat_failed", extra={"error": str(exc)})
            return False
        self.last_heartbeat = time.time()
        return True

    def status(self) -> dict[str, object]:
        last = self.engine.last_evaluation
        return {
            "rules": len(self.engine.ruleset.rules),
            "rules_source": self.engine.ruleset.source,
            "rules_error": self.rules_error.problems if self.rules_error else None,
            "evaluations": self.engine.evaluations,
            "last_evaluation": last,
            "stalled": self.stalled,
            "eval_interval_s": self.eval_interval,
            "group_intervals_s": dict(self.cadence.intervals),
            "signal_series": self.history.series_count,
            "lookback_s": LOOKBACK_S,
        }
