"""Alert states exactly as Prometheus defines them: inactive → pending → firing → resolved.

Each evaluation of a rule yields a vector; every element is one alert (its labels plus the rule's).
A new element is *pending*; it turns *firing* once it has been present for ``for``; when it leaves
the vector a pending alert is dropped and a firing one is *resolved* — after ``keep_firing_for`` if the
rule has one (a flapping signal then does not resolve and re-fire). Resolved alerts are kept 15
minutes so their resolution can be notified. ``no_data`` / ``on_error`` decide what a rule does when
a signal it reads is missing or the expression fails (see ``rules.py``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from ragvigil.ops.alerts.promql import LOOKBACK_S, Evaluator, Labels, PromQLError, SeriesSource
from ragvigil.ops.alerts.rules import Rule, RuleSet

log = logging.getLogger(__name__)

RESOLVED_RETENTION_S = 15 * 60


@dataclass
class Alert:
    """One alert instance of a rule (one label set)."""

    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: str  # pending | firing | resolved
    active_at: float
    value: float
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None
    last_eval: float = 0.0
    reason: str | None = None  # "no_data" / "evaluation_error" when a policy raised it, not the expression

    @property
    def fingerprint(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "P3")

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "fingerprint": self.fingerprint,
            "state": self.state,
            "severity": self.severity,
            "labels": self.labels,
            "annotations": self.annotations,
            "value": None if math.isnan(self.value) else self.value,
            "active_at": self.active_at,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "reason": self.reason,
        }


@dataclass
class Transition:
    """An alert changed state at ``at`` (what notifications and incidents are made of)."""

    alert: Alert
    old: str
    new: str
    at: float


@dataclass
class RuleHealth:
    rule: Rule
    health: str = "unknown"  # ok | no_data | error
    last_error: str | None = None
    last_eval: float | None = None
    eval_seconds: float = 0.0
    alerts: dict[Labels, Alert] = field(default_factory=dict)


class AlertEngine:
    """Evaluates a rule set over a series source and keeps the alert states between evaluations."""

    def __init__(self, rules: RuleSet, source: SeriesSource, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.evaluator = Evaluator(source)
        self.clock = clock
        self._lock = threading.RLock()
        self._rules: dict[str, RuleHealth] = {}
        self.ruleset = rules
        self.replace_rules(rules)
        self.evaluations = 0
        self.last_evaluation: float | None = None

    # --- rules ---------------------------------------------------------------------------------
    def replace_rules(self, rules: RuleSet) -> None:
        """Swap in a validated rule set; a rule whose name and expression are unchanged keeps its alerts."""
        with self._lock:
            kept: dict[str, RuleHealth] = {}
            for rule in rules.rules:
                old = self._rules.get(rule.name)
                if old is not None and old.rule.spec.expr == rule.spec.expr:
                    old.rule = rule
                    kept[rule.name] = old
                else:
                    kept[rule.name] = RuleHealth(rule)
            self._rules = kept
            self.ruleset = rules

    # --- evaluation ----------------------------------------------------------------------------
    def evaluate(self, t: float | None = None, groups: Collection[str] | None = None) -> list[Transition]:
        """Evaluate every rule at ``t`` (now by default), or only those of ``groups``; returns the state changes."""
        t = self.clock() if t is None else t
        changes: list[Transition] = []
        with self._lock:
            for state in self._rules.values():
                if groups is not None and state.rule.group not in groups:
                    continue
                start = time.perf_counter()
                changes += self._evaluate_rule(state, t)
                state.eval_seconds = time.perf_counter() - start
                state.last_eval = t
            self.evaluations += 1
            self.last_evaluation = t
        return changes

    def _evaluate_rule(self, state: RuleHealth, t: float) -> list[Transition]:
        rule = state.rule
        try:
            if self._no_data(rule, t):
                state.health, state.last_error = "no_data", None
                return self._apply_policy(state, rule.spec.no_data, t, "no_data")
            value = self.evaluator.instant(rule.node, t)
        except (PromQLError, ArithmeticError, ValueError, KeyError) as exc:
            state.health, state.last_error = "error", f"{type(exc).__name__}: {exc}"
            log.warning("alert_rule_failed", extra={"rule": rule.name, "error": state.last_error})
            return self._apply_policy(state, rule.spec.on_error, t, "evaluation_error")
        state.health, state.last_error = "ok", None
        if isinstance(value, float):
            vector: list[tuple[Labels, float]] = [] if math.isnan(value) or value == 0 else [((), value)]
        else:
            vector = value  # type: ignore[assignment]
        return self._step(state, vector, t)

    def _no_data(self, rule: Rule, t: float) -> bool:
        """True when a metric the rule reads has no sample within the lookback (a dead signal)."""
        # the same window as an instant selector: (t - 5m, t]
        return any(not self.source.has_data(name, t - LOOKBACK_S + 1e-9, t) for name in rule.metrics)

    def _apply_policy(self, state: RuleHealth, policy: str, t: float, reason: str) -> list[Transition]:
        if policy == "keep_last":
            return []
        if policy == "ok":
            return self._step(state, [], t)
        # like Prometheus' absent(): one alert with the rule's labels and the value 1
        return self._step(state, [((), 1.0)], t, reason)

    def _step(
        self, state: RuleHealth, vector: Iterable[tuple[Labels, float]], t: float, reason: str | None = None
    ) -> list[Transition]:
        """Prometheus' AlertingRule.Eval, from one result vector."""
        rule = state.rule
        spec = rule.spec
        changes: list[Transition] = []
        seen: set[Labels] = set()
        for sample_labels, value in vector:
            labels = {k: v for k, v in sample_labels if k != "__name__"}
            labels.update(spec.labels)
            labels["alertname"] = rule.name
            key = tuple(sorted(labels.items()))
            seen.add(key)
            annotations = {k: render(v, labels, value) for k, v in spec.annotations.items()}
            alert = state.alerts.get(key)
            if alert is None or alert.state == "resolved":
                alert = state.alerts[key] = Alert(rule.name, labels, annotations, "pending", t, value)
                changes.append(Transition(alert, "inactive", "pending", t))
            alert.value, alert.annotations, alert.last_eval, alert.reason = value, annotations, t, reason
            alert.keep_firing_since = None
        for key, alert in list(state.alerts.items()):
            if key in seen:
                continue
            if alert.state == "pending":
                del state.alerts[key]
                changes.append(Transition(alert, "pending", "inactive", t))
            elif alert.state == "firing":
                if spec.keep_firing_for > 0:
                    if alert.keep_firing_since is None:
                        alert.keep_firing_since = t
                    if t - alert.keep_firing_since < spec.keep_firing_for:
                        continue
                alert.state, alert.resolved_at = "resolved", t
                changes.append(Transition(alert, "firing", "resolved", t))
            elif alert.resolved_at is not None and t - alert.resolved_at > RESOLVED_RETENTION_S:
                del state.alerts[key]
        for key in seen:
            alert = state.alerts[key]
            if alert.state == "pending" and t - alert.active_at >= spec.for_:
                alert.state, alert.fired_at = "firing", t
                changes.append(Transition(alert, "pending", "firing", t))
        return changes

    # --- reading -------------------------------------------------------------------------------
    def alerts(self, states: Iterable[str] = ("pending", "firing")) -> list[Alert]:
        wanted = set(states)
        with self._lock:
            return [a for s in self._rules.values() for a in s.alerts.values() if a.state in wanted]

    def rule_health(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "rule": s.rule.name,
                    "group": s.rule.group,
                    "severity": s.rule.severity,
                    "expr": s.rule.spec.expr,
                    "for": s.rule.spec.for_,
                    "health": s.health,
                    "last_error": s.last_error,
                    "last_eval": s.last_eval,
                    "eval_ms": round(s.eval_seconds * 1000, 3),
                    "active": sum(1 for a in s.alerts.values() if a.state != "resolved"),
                }
                for s in self._rules.values()
            ]


_TEMPLATE = re.compile(r"\{\{\s*(\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)|\$value)\s*(?:\|\s*(\w+)\s*)?\}\}")


def render(template: str, labels: dict[str, str], value: float) -> str:
    """The part of Prometheus' Go templates that rules use: ``$labels.x``, ``$value``, ``humanize*``.

    Numbers are printed the way Go prints them, so annotations read the same from either engine.
    """

    def sub(m: re.Match[str]) -> str:
        if m.group(2):
            return labels.get(m.group(2), "")
        fn = m.group(3)
        if fn == "humanizePercentage":
            return _go_g(value * 100) + "%"
        if fn == "humanize":
            return humanize(value)
        return _go_float(value)

    return _TEMPLATE.sub(sub, template)


def _go_float(v: float) -> str:
    """Go's %v of a float64 (shortest representation): 20, 0.1, 1e-05, NaN, +Inf."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    return repr(v)


def _go_g(v: float) -> str:
    """Go's %.4g."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:.4g}"


def humanize(v: float) -> str:
    """Prometheus' ``humanize``: 4 significant digits with an SI prefix (k, M… or m, u…)."""
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _go_g(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
    else:
        for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
            if abs(v) >= 1:
                break
            prefix, v = p, v * 1000
    return f"{_go_g(v)}{prefix}"
