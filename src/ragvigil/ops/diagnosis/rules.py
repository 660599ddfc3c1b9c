"""Diagnosis rules: a YAML file of likely causes, each a weighted list of symptoms, validated before use.

A cause is a hypothesis ("the database is down") with the symptoms that point to it. The file is
read the way the alert rules are (``ops/alerts/rules.py``): every problem is reported at once as
``cause NAME: field: reason`` and nothing is half-loaded, so an operator's edit can never leave
diagnosis running on a rule set nobody wrote. The format::

    causes:
      - name: database_down
        summary: {en: "The database is down", zh: "数据库不可用"}
        when:                                   # any of, each with a weight (default 1)
          - {health_failing: database, weight: 3, required: true}
          - {alert: RagvigilUnhealthy, weight: 1}
          - {error: database_error, min_count: 1, weight: 2}
        runbook: ["Check the database server", "..."]
        actions: [journal.replay]               # names from the remediation registry

Condition kinds (exactly one per condition): ``alert`` (firing, or ``state: active`` for pending
too; ``labels`` must match), ``health_failing`` (a check by name), ``error`` (a WARNING+ log event
seen ``min_count`` times in the window; with ``matching``, only messages matching that regex),
``stage`` with ``p95_gt`` seconds, ``breaker_open`` and ``provider_key_bad`` (a provider name, or
``"*"`` for any; read from the provider router's status), ``resource`` (cpu, memory, disk) with
``gt`` as a 0-1 ratio. A ``required`` condition that does not match rules the cause out.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragvigil.ops.remediation.actions import ACTION_NAMES

# The remediation registry's action names: a diagnosis may only suggest these.
KNOWN_ACTIONS = frozenset(ACTION_NAMES)
RESOURCES = ("cpu", "memory", "disk")
KINDS = ("alert", "health_failing", "error", "stage", "breaker_open", "provider_key_bad", "resource")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_CAUSES = 200
MAX_FILE_BYTES = 1_000_000


class Condition(BaseModel):
    """One symptom that points to a cause; exactly one of the kinds in ``KINDS`` is set."""

    model_config = ConfigDict(extra="forbid")

    alert: str | None = Field(None, max_length=200)
    state: Literal["firing", "active"] = "firing"
    labels: dict[str, str] = Field(default_factory=dict, max_length=20)
    health_failing: str | None = Field(None, max_length=100)
    error: str | None = Field(None, max_length=200)
    min_count: int = Field(1, ge=1, le=1_000_000)
    matching: str | None = Field(None, max_length=200, description="regex an error's message must contain")
    stage: str | None = Field(None, max_length=100)
    p95_gt: float | None = Field(None, gt=0, le=3600)
    breaker_open: str | None = Field(None, max_length=100)
    provider_key_bad: str | None = Field(None, max_length=100)
    resource: Literal["cpu", "memory", "disk"] | None = None
    gt: float | None = Field(None, ge=0, le=1)
    weight: float = Field(1.0, gt=0, le=100)
    required: bool = False

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        present = [k for k in KINDS if getattr(self, k) is not None]
        if len(present) != 1:
            raise ValueError(f"exactly one of {', '.join(KINDS)} must be given (found: {', '.join(present) or 'none'})")
        kind = present[0]
        if kind == "stage" and self.p95_gt is None:
            raise ValueError("a stage condition needs p95_gt (seconds)")
        if kind == "resource" and self.gt is None:
            raise ValueError("a resource condition needs gt (a 0-1 ratio)")
        if self.p95_gt is not None and kind != "stage":
            raise ValueError("p95_gt belongs to a stage condition")
        if self.gt is not None and kind != "resource":
            raise ValueError("gt belongs to a resource condition")
        if self.labels and kind != "alert":
            raise ValueError("labels belong to an alert condition")
        if self.matching is not None:
            if kind != "error":
                raise ValueError("matching belongs to an error condition")
            try:
                re.compile(self.matching)
            except re.error as exc:
                raise ValueError(f"matching is not a regular expression: {exc}") from None
        return self


class ActionRef(BaseModel):
    """A suggested remediation action and its parameters (the registry applies it, not diagnosis)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    params: dict[str, Any] = Field(default_factory=dict, max_length=20)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in KNOWN_ACTIONS:
            raise ValueError(f"unknown action {v!r}; known: {', '.join(sorted(KNOWN_ACTIONS))}")
        return v


class Cause(BaseModel):
    """A likely cause: when it is suspected, what to do by hand, what can be done automatically."""

    model_config = ConfigDict(extra="forbid")

    name: str
    summary: dict[Literal["en", "zh"], str]
    when: list[Condition] = Field(min_length=1, max_length=20)
    runbook: list[str] = Field(default_factory=list, max_length=30)
    actions: list[ActionRef] = Field(default_factory=list, max_length=10)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("must be lower_snake_case: a-z, 0-9 and _, starting with a letter, at most 64")
        return v

    @field_validator("summary", mode="before")
    @classmethod
    def _summary(cls, v: Any) -> Any:
        return {"en": v} if isinstance(v, str) else v

    @field_validator("summary")
    @classmethod
    def _has_en(cls, v: dict[str, str]) -> dict[str, str]:
        if not v.get("en") and not v.get("zh"):
            raise ValueError("give a summary text (en and/or zh)")
        if any(len(text) > 500 for text in v.values()):
            raise ValueError("a summary is at most 500 characters")
        return v

    @field_validator("runbook")
    @classmethod
    def _steps(cls, v: list[str]) -> list[str]:
        if any(not step.strip() or len(step) > 500 for step in v):
            raise ValueError("each runbook step is 1-500 characters")
        return v

    @field_validator("actions", mode="before")
    @classmethod
    def _action_names(cls, v: Any) -> Any:
        return [{"name": a} if isinstance(a, str) else a for a in v] if isinstance(v, list) else v

    @property
    def total_weight(self) -> float:
        return sum(c.weight for c in self.when)


class DiagnosisRuleError(ValueError):
    """The rule file is invalid; ``problems`` lists every fault as 'cause NAME: field: reason'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))


class DiagnosisRules(BaseModel):
    causes: list[Cause]
    source: str = ""


def load_diagnosis_rules(text: str, source: str = "<diagnosis rules>") -> DiagnosisRules:
    """Parse and validate a diagnosis rule file; every problem is reported at once."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise DiagnosisRuleError(source, [f"larger than {MAX_FILE_BYTES} bytes"])
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DiagnosisRuleError(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("causes"), list):
        raise DiagnosisRuleError(source, ["expected a mapping with a 'causes' list"])
    if extra := sorted(set(doc) - {"causes"}):
        raise DiagnosisRuleError(source, [f"unknown top-level key(s): {', '.join(map(str, extra))}"])
    raw_causes = doc["causes"]
    if len(raw_causes) > MAX_CAUSES:
        raise DiagnosisRuleError(source, [f"more than {MAX_CAUSES} causes"])
    problems: list[str] = []
    causes: list[Cause] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_causes):
        name = str(raw.get("name", f"#{i + 1}")) if isinstance(raw, dict) else f"#{i + 1}"
        if name in seen:
            problems.append(f"cause {name}: name: defined twice")
            continue
        seen.add(name)
        try:
            causes.append(Cause.model_validate(raw))
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "cause"
                problems.append(
                    f"cause {name}: {where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}"
                )
    if problems:
        raise DiagnosisRuleError(source, problems)
    return DiagnosisRules(causes=causes, source=source)


def load_diagnosis_file(path: Path) -> DiagnosisRules:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DiagnosisRuleError(str(path), [f"cannot read: {getattr(exc, 'strerror', None) or exc}"]) from None
    return load_diagnosis_rules(text, str(path))


def default_diagnosis_text() -> str:
    return resources.files("ragvigil.ops.diagnosis").joinpath("default_diagnosis.yaml").read_text(encoding="utf-8")


def default_diagnosis_rules() -> DiagnosisRules:
    return load_diagnosis_rules(default_diagnosis_text(), "default diagnosis rules")
