"""Alert rules: a Prometheus rule file with two ragvigil fields, validated before anything runs.

The file is what Prometheus reads (``groups: [{name, interval, rules: [{alert, expr, for,
keep_firing_for, labels, annotations}]}]``), so one file serves both modes. ragvigil adds, per rule,
``no_data`` and ``on_error`` — what to do when a signal the rule reads has no sample, or the
expression cannot be evaluated: ``ok`` (treat as not alerting), ``alerting`` (treat as alerting, so a
dead signal never reads as healthy) or ``keep_last`` (leave the alert as it was). Both are dropped from
the Prometheus export; ``no_data: alerting`` becomes ``or absent(...)`` there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ragvigil.ops.alerts import promql

SEVERITIES = ("P1", "P2", "P3")
Policy = Literal["ok", "alerting", "keep_last"]
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def parse_duration(text: str | int | float) -> float:
    """Seconds in a Prometheus duration ("1m", "1h30m", "500ms", "0s"); plain numbers are seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("must not be negative")
        return float(text)
    m = _DURATION.fullmatch(str(text).strip())
    if not m or not str(text).strip():
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h30m")
    d, h, mi, s, ms = (int(g) if g else 0 for g in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s + ms / 1000


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for ``seconds`` (exported rule files must round-trip)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out += f"{n}{unit}"
    return out


class RuleSpec(BaseModel):
    """One alerting rule as written in the file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    alert: str
    expr: str
    for_: float = Field(0.0, alias="for")
    keep_firing_for: float = 0.0
    labels: dict[str, str] = Field(default_factory=dict, validate_default=True)
    annotations: dict[str, str] = Field(default_factory=dict)
    no_data: Policy = "ok"
    on_error: Policy = "keep_last"

    @field_validator("alert")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("must be a metric-style name: letters, digits and _, not starting with a digit")
        return v

    @field_validator("for_", "keep_firing_for", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("expr")
    @classmethod
    def _expr(cls, v: str) -> str:
        promql.parse(v)  # raises PromQLError (a ValueError) with the reason
        return v

    @field_validator("labels")
    @classmethod
    def _severity(cls, v: dict[str, str]) -> dict[str, str]:
        if v.get("severity") not in SEVERITIES:
            raise ValueError(f"labels.severity must be one of {', '.join(SEVERITIES)}")
        for key in v:
            if not _NAME.fullmatch(key) or key.startswith("__"):
                raise ValueError(f"label name {key!r} is not valid")
        return v


class GroupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    interval: float | None = None
    rules: list[RuleSpec]

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)


class RuleFileError(ValueError):
    """The rule file is invalid; ``problems`` lists every fault as 'rule NAME: field: reason'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))


@dataclass
class Rule:
    """A validated rule, ready to evaluate."""

    group: str
    spec: RuleSpec
    node: Any = field(repr=False)  # the parsed expression
    metrics: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.spec.alert

    @property
    def severity(self) -> str:
        return self.spec.labels["severity"]


@dataclass
class RuleSet:
    rules: list[Rule]
    intervals: dict[str, float | None]  # group -> its own evaluation interval
    source: str = ""

    def metric_names(self) -> set[str]:
        return set().union(*(r.metrics for r in self.rules)) if self.rules else set()


def load_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Parse and validate a rule file; every problem is reported at once, nothing is half-loaded."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleFileError(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise RuleFileError(source, ["expected a mapping with a 'groups' list"])
    problems: list[str] = []
    rules: list[Rule] = []
    intervals: dict[str, float | None] = {}
    seen: set[str] = set()
    for gi, raw_group in enumerate(doc["groups"]):
        gname = raw_group.get("name", f"#{gi + 1}") if isinstance(raw_group, dict) else f"#{gi + 1}"
        raw_rules = raw_group.get("rules") if isinstance(raw_group, dict) else None
        if not isinstance(raw_rules, list):
            problems.append(f"group {gname}: rules: expected a list")
            continue
        for ri, raw in enumerate(raw_rules):
            rname = raw.get("alert", f"#{ri + 1}") if isinstance(raw, dict) else f"#{ri + 1}"
            try:
                spec = RuleSpec.model_validate(raw)
            except ValidationError as exc:
                for err in exc.errors():
                    where = ".".join(str(p) for p in err["loc"]) or "rule"
                    where = "for" if where == "for_" else where
                    problems.append(f"rule {rname} (group {gname}): {where}: {_reason(err)}")
                continue
            if spec.alert in seen:
                problems.append(f"rule {spec.alert} (group {gname}): alert: defined twice")
                continue
            seen.add(spec.alert)
            node = promql.parse(spec.expr)
            rules.append(Rule(gname, spec, node, promql.metric_names(node)))
        try:
            intervals[gname] = GroupSpec.model_validate({**raw_group, "rules": []}).interval
        except ValidationError as exc:
            problems += [f"group {gname}: {'.'.join(map(str, e['loc']))}: {_reason(e)}" for e in exc.errors()]
    if problems:
        raise RuleFileError(source, problems)
    return RuleSet(rules, intervals, source)


def _reason(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def load_rule_file(path: Path) -> RuleSet:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleFileError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    return load_rules(text, str(path))


def default_rules_text() -> str:
    return resources.files("ragvigil.ops.alerts").joinpath("default_rules.yaml").read_text(encoding="utf-8")


def default_rules() -> RuleSet:
    return load_rules(default_rules_text(), "default rule pack")
