"""Rank the causes of a rule set against one symptoms snapshot, with the evidence for each.

Confidence of a cause (0-1)::

    confidence = sum(weight of the conditions that match) / sum(weight of all its conditions)

and 0 when a ``required`` condition does not match. So a cause whose every symptom is present is
1.0 however many it lists, and one strong sign (a failing database check, weight 3 of 6) says more
than one weak one. Causes are ranked by confidence, then by matched weight (more evidence first),
then by the earliest "since" among their evidence (the first thing that went wrong is nearer the
root), then by name, so the order is stable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ragvigil.ops.diagnosis.rules import Cause, Condition, DiagnosisRules
from ragvigil.ops.diagnosis.symptoms import Symptoms, iso

CONFIDENCE_FORMULA = (
    "sum(weight of matched conditions) / sum(weight of all conditions); 0 when a required condition is unmatched"
)
_OPEN_STATES = frozenset({"open", "half_open", "forced_open"})


@dataclass
class Evidence:
    """One signal that matched a condition: what it is, its value, since when."""

    signal: str
    kind: str
    value: Any
    since: float | None
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "kind": self.kind,
            "value": self.value,
            "since": iso(self.since),
            "weight": self.weight,
        }


@dataclass
class CauseMatch:
    cause: Cause
    confidence: float
    matched_weight: float
    evidence: list[Evidence] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    @property
    def since(self) -> float | None:
        times = [e.since for e in self.evidence if e.since is not None]
        return min(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        c = self.cause
        return {
            "cause": c.name,
            "summary": dict(c.summary),
            "confidence": self.confidence,
            "matched_weight": self.matched_weight,
            "total_weight": c.total_weight,
            "since": iso(self.since),
            "evidence": [e.to_dict() for e in self.evidence],
            "unmatched": self.unmatched,
            "runbook": list(c.runbook),
            "actions": [a.model_dump() for a in c.actions],
        }


def rank(rules: DiagnosisRules, symptoms: Symptoms, min_confidence: float = 0.0) -> list[CauseMatch]:
    """Every cause with confidence above 0 and at least ``min_confidence``, most likely first."""
    out = []
    for cause in rules.causes:
        match = score(cause, symptoms)
        if match.confidence > 0 and match.confidence >= min_confidence:
            out.append(match)
    out.sort(
        key=lambda m: (-m.confidence, -m.matched_weight, m.since if m.since is not None else float("inf"), m.cause.name)
    )
    return out


def score(cause: Cause, symptoms: Symptoms) -> CauseMatch:
    matched = 0.0
    evidence: list[Evidence] = []
    unmatched: list[str] = []
    missing_required = False
    for cond in cause.when:
        found = match(cond, symptoms)
        if found:
            matched += cond.weight
            evidence.extend(found)
        else:
            unmatched.append(describe(cond))
            missing_required |= cond.required
    confidence = 0.0 if missing_required else round(matched / cause.total_weight, 3)
    return CauseMatch(cause, confidence, matched, evidence, unmatched)


def describe(cond: Condition) -> str:
    """A condition in words, for the list of what was looked for and not seen."""
    kind = cond.kind
    if kind == "alert":
        labels = ",".join(f'{k}="{v}"' for k, v in cond.labels.items())
        return f"alert {cond.alert}{{{labels}}} {cond.state}" if labels else f"alert {cond.alert} {cond.state}"
    if kind == "health_failing":
        return f"health check {cond.health_failing} failing"
    if kind == "error":
        also = f" matching /{cond.matching}/" if cond.matching else ""
        return f"log event {cond.error}{also} at least {cond.min_count}x"
    if kind == "stage":
        return f"stage {cond.stage} p95 > {cond.p95_gt:g}s"
    if kind == "breaker_open":
        return f"breaker {cond.breaker_open} open"
    if kind == "provider_key_bad":
        return f"provider {cond.provider_key_bad} key rejected"
    return f"{cond.resource} > {cond.gt:.0%}"


def match(cond: Condition, s: Symptoms) -> list[Evidence]:
    """The evidence for one condition (empty: it does not match)."""
    kind, w = cond.kind, cond.weight
    if kind == "alert":
        states = ("firing",) if cond.state == "firing" else ("pending", "firing")
        return [
            Evidence(_alert_signal(a.name, a.labels), kind, a.value if a.value is not None else a.state, a.since, w)
            for a in s.alerts
            if a.name == cond.alert and a.state in states and all(a.labels.get(k) == v for k, v in cond.labels.items())
        ]
    if kind == "health_failing":
        check = s.checks.get(cond.health_failing or "")
        if check is None or check.ok:
            return []
        return [Evidence(f"health check {check.name} failing", kind, check.error, check.since, w)]
    if kind == "error":
        for e in s.errors:
            if e.event != cond.error:
                continue
            count = e.count if cond.matching is None else _matching(e.messages, cond.matching)
            if count >= cond.min_count:
                return [Evidence(f"log event {e.event} x{count} ({e.level})", kind, e.example, e.first_seen, w)]
        return []
    if kind == "stage":
        st = s.stages.get(cond.stage or "")
        if st is None or cond.p95_gt is None or st.p95_s <= cond.p95_gt:
            return []
        window = f"last {s.window_s:g}s" if st.window == "logs" else "since start"
        return [
            Evidence(f"stage {st.stage} p95 {st.p95_s:.3g}s > {cond.p95_gt:g}s ({window})", kind, st.p95_s, None, w)
        ]
    if kind in ("breaker_open", "provider_key_bad"):
        wanted = cond.breaker_open if kind == "breaker_open" else cond.provider_key_bad
        out = []
        for b in s.breakers or []:
            if wanted not in ("*", b.name):
                continue
            if kind == "breaker_open" and b.state in _OPEN_STATES:
                out.append(Evidence(f"breaker {b.name} {b.state}", kind, b.state, b.since, w))
            elif kind == "provider_key_bad" and b.detail.get("key_bad"):
                out.append(Evidence(f"provider {b.name} key rejected", kind, True, b.since, w))
        return out
    r = s.resources.get(cond.resource or "")
    if r is None or cond.gt is None or r.value <= cond.gt:
        return []
    return [Evidence(f"{r.name} at {r.value:.0%} > {cond.gt:.0%}", kind, round(r.value, 4), None, w)]


def _alert_signal(name: str, labels: dict[str, str]) -> str:
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
    return f"alert {name}{{{shown}}}" if shown else f"alert {name}"


def _matching(messages: dict[str, int], pattern: str) -> int:
    rx = re.compile(pattern)
    return sum(n for text, n in messages.items() if rx.search(text))
