"""Named actions that change the running system, each with an optional way back.

Why a registry: policies, the operator route and (later) drills name an action by a stable string
and never import the subsystem it acts on. ``apply(params) -> str`` returns what it changed; an
action that changed nothing raises ``NothingChanged`` (or returns an empty text), and the caller
counts that as a failed remediation: a remediation tool that reports "success" because its code ran
is the defect this module exists to avoid.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Params = Mapping[str, Any]
Apply = Callable[[Params], str]

# the names every instance may know (the adapters register only those whose subsystem exists)
ACTION_NAMES = (
    "breaker.open",
    "breaker.close",
    "provider.failover",
    "provider.restore",
    "retrieval.lexical_only",
    "retrieval.hybrid",
    "safe_mode.enter",
    "safe_mode.leave",
    "features.shed",
    "features.restore",
    "cache.clear",
    "journal.replay",
    "vectors.requeue",
    "process.restart",
)
MAX_PARAMS = 16
MAX_PARAM_CHARS = 256


class ActionError(Exception):
    """An action could not do its job; the message says why (for the timeline and the operator)."""


class NothingChanged(ActionError):
    """The action ran and found nothing to change: not a success."""


class ActionParamsError(ActionError, ValueError):
    """The parameters do not fit the action (a caller's mistake: a 422, not a failure of the system)."""


class UnknownAction(LookupError):
    pass


@dataclass(frozen=True)
class Action:
    name: str
    apply: Apply
    rollback: Apply | None = None
    describe: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "describe": self.describe, "rollback": self.rollback is not None}


def check_params(params: Params) -> dict[str, Any]:
    """Params are a small flat mapping of scalars: every input has a bound."""
    if not isinstance(params, Mapping):
        raise ActionParamsError("params must be a mapping")
    if len(params) > MAX_PARAMS:
        raise ActionParamsError(f"at most {MAX_PARAMS} params")
    out: dict[str, Any] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not key or len(key) > 64:
            raise ActionParamsError(f"param name {key!r} must be text of 1-64 characters")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ActionParamsError(f"param {key}: must be text, a number or a boolean")
        if isinstance(value, str) and len(value) > MAX_PARAM_CHARS:
            raise ActionParamsError(f"param {key}: at most {MAX_PARAM_CHARS} characters")
        out[key] = value
    return out


def required(params: Params, name: str) -> str:
    """A text param the action cannot work without."""
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ActionParamsError(f"param {name!r} is required (text)")
    return value.strip()


class ActionRegistry:
    """Actions by name; thread-safe, since the alert evaluator and API requests both run them."""

    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}
        self._lock = threading.Lock()

    def register(self, name: str, apply: Apply, rollback: Apply | None = None, describe: str = "") -> Action:
        action = Action(name, apply, rollback, describe)
        with self._lock:
            if name in self._actions:
                raise ValueError(f"action {name!r} is already registered")
            self._actions[name] = action
        return action

    def get(self, name: str) -> Action:
        with self._lock:
            action = self._actions.get(name)
        if action is None:
            raise UnknownAction(name)
        return action

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._actions

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._actions)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a.as_dict() for _, a in sorted(self._actions.items())]

    def apply(self, name: str, params: Params | None = None) -> str:
        """Run the action; returns what changed, raises ``NothingChanged`` when that is nothing."""
        return _changed(self.get(name).apply(check_params(params or {})), name)

    def rollback(self, name: str, params: Params | None = None) -> str:
        action = self.get(name)
        if action.rollback is None:
            raise NothingChanged(f"{name} has no rollback")
        return _changed(action.rollback(check_params(params or {})), f"{name} rollback")


def _changed(result: str | None, what: str) -> str:
    if not isinstance(result, str) or not result.strip():
        raise NothingChanged(f"{what} reported no change")
    return result
