"""The remediator: a firing alert (or a diagnosed cause) → its policy's action → verified, or rolled back.

It is handed every evaluation cycle's alert transitions by the alert service (a hook, so the alert
code knows nothing of remediation). For a firing alert with a matching policy it checks the cooldown
and the hourly limit (a skipped action is recorded with why), runs the action (bounded in time),
writes it on the incident timeline and in the audit log, then watches: the run is *verified* once
the alert has resolved and the policy's signal is inside its bounds (its value before and after is
recorded); when the window ends first, the action is rolled back where it can be and a person is
notified through the alert channels. An action that changed nothing is a failure, never a success.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ragvigil.ops import metrics
from ragvigil.ops.alerts.channels import Notification
from ragvigil.ops.alerts.engine import Transition, render
from ragvigil.ops.alerts.incidents import AlertNotice, IncidentStore, fingerprint
from ragvigil.ops.alerts.promql import SeriesSource
from ragvigil.ops.remediation import verify
from ragvigil.ops.remediation.actions import ActionError, ActionRegistry, NothingChanged, UnknownAction
from ragvigil.ops.remediation.policies import Policy, PolicySet

log = logging.getLogger(__name__)

ACTOR = "ragvigil:remediation"
RESULTS = ("verified", "failed", "rolled_back", "skipped", "applied")  # applied: run by hand, not verified


@dataclass(eq=False)  # runs are compared by identity
class Run:
    """One remediation attempt and everything that happened to it."""

    action: str
    params: dict[str, Any]
    trigger: dict[str, Any]
    started_at: float
    policy: str | None = None
    incident_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    stage: str = "pending"  # skipped | applied | verifying | verified | failed | rolled_back | rollback_failed
    result: str | None = None  # the metric's result once final
    changed: str | None = None
    reason: str | None = None
    signal: str | None = None
    signal_before: float | None = None
    signal_after: float | None = None
    deadline: float | None = None
    alert_resolved: bool = False
    finished_at: float | None = None
    rollback: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "policy": self.policy,
            "action": self.action,
            "params": self.params,
            "trigger": self.trigger,
            "incident_id": self.incident_id,
            "stage": self.stage,
            "result": self.result,
            "changed": self.changed,
            "reason": self.reason,
            "signal": self.signal,
            "signal_before": self.signal_before,
            "signal_after": self.signal_after,
            "alert_resolved": self.alert_resolved,
            "started_at": self.started_at,
            "deadline": self.deadline,
            "finished_at": self.finished_at,
            "rollback": self.rollback,
            "history": list(self.history),
        }


class Remediator:
    def __init__(
        self,
        actions: ActionRegistry,
        policies: PolicySet,
        incidents: IncidentStore | None = None,
        audit: Any = None,
        notify: Callable[[Notification], None] | None = None,
        source: SeriesSource | None = None,
        *,
        enabled: bool = True,
        action_timeout_s: float = 30.0,
        recent: int = 200,
        external_url: str = "",
        watch: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.actions = actions
        self.policies = policies
        self.incidents = incidents
        self.audit = audit
        self.notify = notify
        self.source = source  # the alert engine's signal history
        self.enabled = enabled
        self.action_timeout_s = action_timeout_s
        self.external_url = external_url
        self.watch = watch  # keeps the policies' signals in the history (AlertService.watch)
        if watch is not None:
            watch(policies.metric_names())
        self._recent: deque[Run] = deque(maxlen=recent)
        self._verifying: list[Run] = []
        self._applied: dict[str, deque[float]] = {}  # policy -> times it ran (the last hour)
        self._lock = threading.Lock()
        for name in actions.names():  # every series exists at 0, so the first failure is an increase
            for result in RESULTS:
                metrics.REMEDIATION_ACTIONS.labels(name, result)

    # --- configuration -------------------------------------------------------------------------
    def use_policies(self, policies: PolicySet) -> None:
        """Swap in a validated policy set (runs being verified keep their own policy's terms by name)."""
        if self.watch is not None:
            self.watch(policies.metric_names())
        with self._lock:
            self.policies = policies

    # --- the alert hook ------------------------------------------------------------------------
    def observe(self, changes: Iterable[Transition], t: float | None = None) -> list[Run]:
        """One evaluation cycle's transitions: act on new firing alerts, then check what is being verified."""
        t = time.time() if t is None else t
        started: list[Run] = []
        resolved: list[tuple[dict[str, str], float]] = []
        for change in changes:
            labels = dict(change.alert.labels)
            if change.new == "resolved":
                self._mark_resolved(labels, True)
                resolved.append((labels, change.alert.value))
            elif change.new == "firing":
                self._mark_resolved(labels, False)
                if self.enabled:
                    for policy in [p for p in self.policies.policies if p.matches_alert(labels)]:
                        started.append(self._trigger(policy, labels, change.alert.value, t))
        # runs the resolution verifies are settled against the signals of the fault's time, before a
        # policy on that resolution undoes what they did (leaving safe mode once the canary passes again)
        self.check(t)
        if self.enabled:
            for labels, value in resolved:
                for policy in [p for p in self.policies.policies if p.matches_alert(labels, "resolved")]:
                    trigger = {"alert": labels.get("alertname"), "labels": labels, "when": "resolved"}
                    started.append(self._trigger(policy, labels, value, t, trigger))
        return started

    def cause_diagnosed(self, cause: str, incident_id: str | None = None, t: float | None = None) -> list[Run]:
        """A cause the diagnosis found: run its policies (verified by their signal alone)."""
        t = time.time() if t is None else t
        if not self.enabled:
            return []
        trigger = {"cause": cause}
        return [
            self._trigger(p, {}, float("nan"), t, trigger, incident_id)
            for p in self.policies.policies
            if p.matches_cause(cause)
        ]

    def _mark_resolved(self, labels: dict[str, str], resolved: bool) -> None:
        with self._lock:
            for run in self._verifying:
                if run.trigger.get("labels") == labels:
                    run.alert_resolved = resolved

    # --- one attempt ---------------------------------------------------------------------------
    def _trigger(
        self,
        policy: Policy,
        labels: dict[str, str],
        value: float,
        t: float,
        trigger: dict[str, Any] | None = None,
        incident_id: str | None = None,
    ) -> Run:
        spec = policy.spec
        params = {k: render(v, labels, value) if isinstance(v, str) else v for k, v in spec.params.items()}
        trigger = trigger or {"alert": labels.get("alertname"), "labels": labels}
        if incident_id is None and labels and self.incidents is not None:
            store, fp = self.incidents, fingerprint(labels)
            find = store.last_incident_of if trigger.get("when") == "resolved" else store.open_incident_of
            incident_id = self._safe(lambda: find(fp))
        run = Run(spec.action, params, trigger, t, policy=policy.name, incident_id=incident_id)
        run.signal = spec.verify.signal
        why = self._skip_reason(policy, t)
        if why is not None:
            return self._finish(run, "skipped", "skipped", why, t)
        with self._lock:
            self._applied.setdefault(policy.name, deque()).append(t)
        if policy.signal_node is not None and self.source is not None:
            run.signal_before = verify.summary(
                verify.signal_values(policy.signal_node, self.source, t), spec.verify.below
            )
        if not self._apply(run, t):
            return run
        run.deadline = t + spec.verify.window
        run.stage = "verifying"
        # a run on a resolution: its alert is resolved now, and must stay so (firing again marks it)
        run.alert_resolved = trigger.get("when") == "resolved"
        with self._lock:
            self._verifying.append(run)
            self._recent.append(run)
        return run

    def _skip_reason(self, policy: Policy, t: float) -> str | None:
        spec = policy.spec
        if spec.action not in self.actions:
            return f"action {spec.action} is not available in this instance"
        with self._lock:
            times = self._applied.setdefault(policy.name, deque())
            while times and t - times[0] >= 3600:
                times.popleft()
            if times and t - times[-1] < spec.cooldown:
                return f"cooldown: last run {t - times[-1]:.0f}s ago, cooldown {spec.cooldown:.0f}s"
            if len(times) >= spec.max_per_hour:
                return f"hourly limit: {len(times)} run(s) in the last hour, max_per_hour {spec.max_per_hour}"
        return None

    def _apply(self, run: Run, t: float) -> bool:
        try:
            run.changed = self._bounded(lambda: self.actions.apply(run.action, run.params))
        except (ActionError, UnknownAction, Exception) as exc:  # a failing action is a failed remediation
            why = f"changed nothing: {exc}" if isinstance(exc, NothingChanged) else f"{type(exc).__name__}: {exc}"
            self._finish(run, "failed", "failed", why, t)
            self._notify_failure(run)
            return False
        run.stage = "applied"
        self._record(run, "applied", t, {"changed": run.changed, "signal_before": run.signal_before})
        return True

    def _bounded(self, fn: Callable[[], str]) -> str:
        """Run ``fn`` with a time bound: a hung action must not hold the alert evaluator."""
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the caller
                box["error"] = exc

        thread = threading.Thread(target=work, name="remediation-action", daemon=True)
        thread.start()
        thread.join(self.action_timeout_s)
        if thread.is_alive():
            raise ActionError(f"did not finish within {self.action_timeout_s:g}s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    # --- verification --------------------------------------------------------------------------
    def check(self, t: float | None = None) -> None:
        """Settle the runs being verified: verified once fixed, rolled back when the window ends first."""
        t = time.time() if t is None else t
        with self._lock:
            runs = list(self._verifying)
        for run in runs:
            policy = next((p for p in self.policies.policies if p.name == run.policy), None)
            bounds = (policy.spec.verify.below, policy.spec.verify.above) if policy else (None, None)
            values: list[float] = []
            if policy is not None and policy.signal_node is not None and self.source is not None:
                values = verify.signal_values(policy.signal_node, self.source, t)
            signal_ok = run.signal is None or verify.inside(values, *bounds)
            alert_ok = run.alert_resolved or "alert" not in run.trigger
            run.signal_after = verify.summary(values, bounds[0]) if run.signal else None
            if alert_ok and signal_ok:
                self._settle(run)
                self._finish(run, "verified", "verified", None, t, {"signal_after": run.signal_after})
            elif run.deadline is not None and t >= run.deadline:
                self._settle(run)
                self._verification_failed(run, policy, alert_ok, signal_ok, t)

    def _settle(self, run: Run) -> None:
        with self._lock:
            if run in self._verifying:
                self._verifying.remove(run)

    def _verification_failed(self, run: Run, policy: Policy | None, alert_ok: bool, signal_ok: bool, t: float) -> None:
        why = []
        if not alert_ok:
            why.append(f"alert {run.trigger.get('alert')} still firing")
        if not signal_ok:
            why.append(f"signal {run.signal_after if run.signal_after is not None else 'no data'} outside its bounds")
        run.reason = "; ".join(why) + f" after {policy.spec.verify.window:.0f}s" if policy else "; ".join(why)
        self._record(run, "verification_failed", t, {"reason": run.reason, "signal_after": run.signal_after})
        wants = policy is not None and policy.spec.verify.rollback
        action = self._safe(lambda: self.actions.get(run.action))
        if wants and action is not None and action.rollback is not None:
            try:
                run.rollback = self._bounded(lambda: self.actions.rollback(run.action, run.params))
            except Exception as exc:
                run.rollback = f"rollback failed: {type(exc).__name__}: {exc}"
                self._finish(run, "rollback_failed", "failed", run.reason, t, {"rollback": run.rollback})
            else:
                self._finish(run, "rolled_back", "rolled_back", run.reason, t, {"rollback": run.rollback})
        else:
            run.rollback = "not rolled back: " + ("the action has no rollback" if wants else "rollback: false")
            self._finish(run, "failed", "failed", run.reason, t, {"rollback": run.rollback})
        self._notify_failure(run)

    # --- by hand -------------------------------------------------------------------------------
    def run_manual(
        self,
        name: str,
        params: dict[str, Any],
        actor: Any,
        incident_id: str | None = None,
        rollback: bool = False,
        source: str | None = None,
    ) -> Run:
        """An operator runs an action (or its rollback) now; raises what the action raised, after recording it."""
        t = time.time()
        who = getattr(actor, "name", str(actor))
        run = Run(name, dict(params), {"manual": who, "source": source}, t, incident_id=incident_id)
        self.actions.get(name)  # UnknownAction before anything is recorded
        try:
            do = self.actions.rollback if rollback else self.actions.apply
            run.changed = self._bounded(lambda: do(name, params))
        except Exception as exc:
            self._finish(run, "failed", "failed", f"{type(exc).__name__}: {exc}", t, actor=actor)
            raise
        self._finish(run, "rolled_back" if rollback else "applied", "applied", None, t, actor=actor)
        return run

    # --- records -------------------------------------------------------------------------------
    def _finish(
        self,
        run: Run,
        stage: str,
        result: str,
        reason: str | None,
        t: float,
        extra: dict[str, Any] | None = None,
        actor: Any = ACTOR,
    ) -> Run:
        run.stage, run.result, run.finished_at = stage, result, t
        if reason is not None:
            run.reason = reason
        with self._lock:
            if run not in self._recent:
                self._recent.append(run)
        metrics.REMEDIATION_ACTIONS.labels(run.action, result).inc()
        self._record(run, stage, t, {"reason": run.reason, **(extra or {})}, actor)
        log.log(
            logging.INFO if result in ("verified", "applied") else logging.WARNING,
            f"remediation_{stage}",
            extra={"action": run.action, "policy": run.policy, "incident": run.incident_id, "reason": run.reason},
        )
        return run

    def _record(self, run: Run, stage: str, t: float, detail: dict[str, Any], actor: Any = ACTOR) -> None:
        """The incident timeline and the audit log: both must survive a database that is down."""
        entry = {"stage": stage, "at": t, **{k: v for k, v in detail.items() if v is not None}}
        run.history.append(entry)
        body = {
            "run": run.id,
            "policy": run.policy,
            "action": run.action,
            "params": run.params,
            "signal": run.signal,
            "signal_before": run.signal_before,
            **entry,
        }
        if run.incident_id and self.incidents is not None:
            self._safe(lambda: self.incidents.add_event(run.incident_id, "remediation", body, actor=ACTOR))  # type: ignore[union-attr,arg-type]
        if self.audit is not None:
            target = f"{run.policy or 'manual'} ({run.incident_id})" if run.incident_id else (run.policy or "manual")
            self._safe(
                lambda: self.audit.record(
                    actor, f"remediation.{run.action}", stage, target, run.trigger.get("source") or "remediation", body
                )
            )

    def _notify_failure(self, run: Run) -> None:
        """Tell a person, through the alert channels, that the system could not fix this itself."""
        if self.notify is None:
            return
        alertname = str(run.trigger.get("alert") or run.trigger.get("cause") or "manual")
        labels = {"alertname": "RemediationFailed", "severity": "P2", "action": run.action, "trigger": alertname}
        if run.policy:
            labels["policy"] = run.policy
        summary = f"remediation {run.action} did not fix {alertname}: {run.reason}"
        notice = AlertNotice(
            labels,
            {
                "summary": summary[:512],
                "description": (run.rollback or (f"changed: {run.changed}" if run.changed else run.reason or ""))[
                    :1024
                ],
                "runbook_url": "docs/runbooks.md#remediationfailed",
            },
            "firing",
            datetime.fromtimestamp(run.started_at, UTC),
        )
        group = '{}:{alertname="RemediationFailed",policy="' + (run.policy or "") + '"}'
        ids = [run.incident_id] if run.incident_id else []
        try:
            self.notify(Notification(group, labels, [notice], ids, external_url=self.external_url))
        except Exception:
            log.exception("remediation_notification_failed")

    @staticmethod
    def _safe(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            log.warning("remediation_record_failed", extra={"error": str(exc)})
            return None

    # --- reading -------------------------------------------------------------------------------
    def status(self, limit: int = 50) -> dict[str, Any]:
        with self._lock:
            recent = [r.as_dict() for r in list(self._recent)[-limit:]][::-1]
            verifying = [r.id for r in self._verifying]
            applied = {name: list(times) for name, times in self._applied.items()}
            policies = list(self.policies.policies)
            source = self.policies.source
        return {
            "enabled": self.enabled,
            "policies_source": source,
            "policies": [
                {
                    **p.as_dict(),
                    "available": p.spec.action in self.actions,
                    "runs_last_hour": len(applied.get(p.name, [])),
                }
                for p in policies
            ],
            "actions": self.actions.describe(),
            "verifying": verifying,
            "recent": recent,
        }
