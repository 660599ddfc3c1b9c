"""Remediation policies: which alert or diagnosed cause runs which action, how often, and how it is checked.

A YAML file validated like the alert rules: every problem is reported at once (``policy NAME:
field: reason``) and nothing is half-loaded. A policy matches an alert by ``alert`` (its alertname)
and ``labels`` (exact values), when it fires or (``when: resolved``) when it resolves, or a diagnosed
cause by ``cause``; ``params`` may use the alert's
labels (``{{ $labels.provider }}``). ``verify`` says what "fixed" means: within ``window`` the alert
resolves and ``signal`` (PromQL over the in-process signal history) is back ``below``/``above`` its
bound; otherwise the action is rolled back when ``rollback`` is true, and a person is told.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragvigil.ops.alerts import promql
from ragvigil.ops.alerts.rules import parse_duration
from ragvigil.ops.remediation.actions import ACTION_NAMES, MAX_PARAMS

_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
MAX_POLICIES = 200
MAX_WINDOW_S = 3600.0
MAX_FILE_BYTES = 1024 * 1024


class VerifySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: float = Field(60.0, description="seconds the action has to make the alert resolve")
    signal: str | None = None
    below: float | None = None
    above: float | None = None
    rollback: bool = True

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, v: Any) -> float:
        seconds = parse_duration(v)
        if not 0 < seconds <= MAX_WINDOW_S:
            raise ValueError(f"must be more than 0s and at most {int(MAX_WINDOW_S)}s")
        return seconds

    @field_validator("signal")
    @classmethod
    def _signal(cls, v: str | None) -> str | None:
        if v is not None:
            if len(v) > 2000:
                raise ValueError("at most 2000 characters")
            promql.parse(v)  # PromQLError (a ValueError) says why
        return v

    @model_validator(mode="after")
    def _bounds(self) -> VerifySpec:
        if self.signal is not None and self.below is None and self.above is None:
            raise ValueError("a signal needs a bound: below and/or above")
        if self.signal is None and (self.below is not None or self.above is not None):
            raise ValueError("below/above need a signal")
        if self.below is not None and self.above is not None and self.above >= self.below:
            raise ValueError("above must be less than below (the healthy band lies between them)")
        return self


class MatchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert: str | None = Field(None, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=128)
    labels: dict[str, str] = Field(default_factory=dict, max_length=20)
    cause: str | None = Field(None, pattern=r"^[a-zA-Z0-9_.-]{1,64}$")
    # when the alert starts firing (act on the fault), or when it resolves (undo what firing did)
    # (not ``on``: YAML 1.1 reads that key as true)
    when: Literal["firing", "resolved"] = "firing"

    @model_validator(mode="after")
    def _something(self) -> MatchSpec:
        if self.alert is None and self.cause is None:
            raise ValueError("match needs an alert (alertname) or a cause")
        if self.cause is not None and (self.alert is not None or self.labels):
            raise ValueError("match either an alert (with labels) or a cause, not both")
        if self.cause is not None and self.when != "firing":
            raise ValueError("a cause is diagnosed, never resolved: when must be firing")
        return self


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    match: MatchSpec
    action: str
    params: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=MAX_PARAMS)
    cooldown: float = 300.0
    max_per_hour: int = Field(4, ge=1, le=60)
    verify: VerifySpec = VerifySpec()
    enabled: bool = True

    @model_validator(mode="after")
    def _cause_needs_a_signal(self) -> PolicySpec:
        if self.match.cause is not None and self.verify.signal is None:
            raise ValueError("a cause has no alert to resolve: verify needs a signal")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("1-64 letters, digits, '_', '.', '-'")
        return v

    @field_validator("cooldown", mode="before")
    @classmethod
    def _cooldown(cls, v: Any) -> float:
        seconds = parse_duration(v)
        if seconds > 24 * 3600:
            raise ValueError("at most 24h")
        return seconds


@dataclass
class Policy:
    spec: PolicySpec
    signal_node: Any = field(default=None, repr=False)
    signal_metrics: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.spec.name

    def matches_alert(self, labels: dict[str, str], when: str = "firing") -> bool:
        """The policy acts on this alert's transition ``when`` (``firing`` or ``resolved``)."""
        m = self.spec.match
        if not self.spec.enabled or m.alert is None or m.when != when or labels.get("alertname") != m.alert:
            return False
        return all(labels.get(k) == v for k, v in m.labels.items())

    def matches_cause(self, cause: str) -> bool:
        return self.spec.enabled and self.spec.match.cause == cause

    def as_dict(self) -> dict[str, Any]:
        return self.spec.model_dump(exclude_none=True)


@dataclass
class PolicySet:
    policies: list[Policy]
    source: str = ""

    def metric_names(self) -> set[str]:
        return set().union(*(p.signal_metrics for p in self.policies)) if self.policies else set()


class PolicyFileError(ValueError):
    """The policy file is invalid; ``problems`` lists every fault as 'policy NAME: field: reason'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))


def load_policies(text: str, source: str = "<policies>", known_actions: Iterable[str] = ()) -> PolicySet:
    """Parse and validate; an action must be one of the known names (``ACTION_NAMES`` plus ``known_actions``)."""
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise PolicyFileError(source, [f"larger than {MAX_FILE_BYTES} bytes"])
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyFileError(source, [f"not valid YAML: {exc}"]) from None
    if doc is None:
        doc = {"policies": []}
    if not isinstance(doc, dict) or not isinstance(doc.get("policies"), list) or set(doc) - {"policies"}:
        raise PolicyFileError(source, ["expected a mapping with only a 'policies' list"])
    raw_list = doc["policies"]
    if len(raw_list) > MAX_POLICIES:
        raise PolicyFileError(source, [f"at most {MAX_POLICIES} policies"])
    known = set(ACTION_NAMES) | set(known_actions)
    problems: list[str] = []
    policies: list[Policy] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_list):
        pname = raw.get("name", f"#{i + 1}") if isinstance(raw, dict) else f"#{i + 1}"
        try:
            spec = PolicySpec.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "policy"
                problems.append(
                    f"policy {pname}: {where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}"
                )
            continue
        if spec.action not in known:
            problems.append(
                f"policy {pname}: action: unknown action {spec.action!r} (known: {', '.join(sorted(known))})"
            )
            continue
        if spec.name in seen:
            problems.append(f"policy {pname}: name: defined twice")
            continue
        seen.add(spec.name)
        node = promql.parse(spec.verify.signal) if spec.verify.signal else None
        policies.append(Policy(spec, node, promql.metric_names(node) if node is not None else set()))
    if problems:
        raise PolicyFileError(source, problems)
    return PolicySet(policies, source)


def load_policy_file(path: Path, known_actions: Iterable[str] = ()) -> PolicySet:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    return load_policies(text, str(path), known_actions)


def default_policies_text() -> str:
    return resources.files("ragvigil.ops.remediation").joinpath("default_policies.yaml").read_text(encoding="utf-8")


def default_policies() -> PolicySet:
    return load_policies(default_policies_text(), "default remediation policies")
