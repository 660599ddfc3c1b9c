"""Verified remediation: named actions (``ActionRegistry``), policies, the remediator and its checks.

``build_remediation(rt)`` is the one builder: it registers the actions the runtime's subsystems
allow, loads the policies and hooks the remediator to the alert service's signal history.
"""

from __future__ import annotations

from typing import Any

from ragvigil.ops.remediation.actions import (
    ACTION_NAMES,
    Action,
    ActionError,
    ActionParamsError,
    ActionRegistry,
    NothingChanged,
    UnknownAction,
)
from ragvigil.ops.remediation.adapters import register_adapters
from ragvigil.ops.remediation.builtin import RESTART_EXIT_CODE, register_builtin
from ragvigil.ops.remediation.policies import (
    Policy,
    PolicyFileError,
    PolicySet,
    default_policies,
    load_policies,
    load_policy_file,
)
from ragvigil.ops.remediation.remediator import ACTOR, Remediator, Run

__all__ = [
    "ACTION_NAMES",
    "ACTOR",
    "RESTART_EXIT_CODE",
    "Action",
    "ActionError",
    "ActionParamsError",
    "ActionRegistry",
    "NothingChanged",
    "Policy",
    "PolicyFileError",
    "PolicySet",
    "Remediator",
    "Run",
    "UnknownAction",
    "build_remediation",
    "default_policies",
    "load_policies",
    "load_policy_file",
]


def build_remediation(rt: Any) -> Remediator:
    """The runtime's actions and remediator (build it last: the adapters look for the other subsystems)."""
    s = rt.settings.remediation
    actions = ActionRegistry()
    register_builtin(actions, rt)
    register_adapters(actions, rt)
    policies = default_policies() if s.policies_file is None else load_policy_file(s.policies_file, actions.names())
    alerts = getattr(rt, "alerts", None)
    return Remediator(
        actions,
        policies,
        rt.incidents,
        rt.audit,
        rt.notifier.submit,
        alerts.history if alerts is not None else None,
        enabled=s.enabled and alerts is not None,
        action_timeout_s=s.action_timeout_s,
        recent=s.recent,
        external_url=rt.settings.alerts.external_url,
        watch=alerts.watch if alerts is not None else None,
    )
