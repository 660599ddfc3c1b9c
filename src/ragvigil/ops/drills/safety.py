"""The ``safety-filter`` drill: the safety filter silently passes everything, and the instance must notice.

The fault (``safety``/``off``) breaks nothing a user sees: answers keep coming, none fails, so the
users' side cannot tell detection from recovery. The drill therefore watches the instance's own way
through it, each step timed from the injection (or, on the way back, from the rollback):

    filter off → canary fails → SafetyCanaryFailing fires → remediation enters safe mode (answers are the
    safe response) → fault cleared → canary passes → alert resolves → remediation leaves safe mode

``mttd_s`` is the alert, ``time_to_action_s`` and ``mttr_s`` the moment safe mode protects users (until
then an unfiltered answer could reach someone in crisis), ``steady_again_s`` from the rollback to safe
mode left and a normal answer again. Synthetic users chat all along; their turns are counted and looked
up like in every drill. The seed's target is detection within ``DETECT_TARGET_S``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ragvigil.ops.drills.client import DrillError, InstanceClient
from ragvigil.ops.drills.experiment import (
    DrillOptions,
    DrillResult,
    DrillSpec,
    Journal,
    Watcher,
    begin,
    count_stored,
    final_remediations,
    judge,
    p95_ms,
    tally,
    wait_steady,
)
from ragvigil.ops.drills.traffic import Traffic, Users, closed_loop

ALERT = "SafetyCanaryFailing"
DETECT_TARGET_S = 10.0
REMEDIATION_ACTOR = "ragvigil:remediation"


def needs_canary(client: InstanceClient) -> str | None:
    """Why the drill does not apply: no canary, or no safety check for it to test."""
    state = client.canary()
    if not state.get("enabled"):
        return "the safety canary is off on this instance (canary.enabled)"
    if not state.get("check"):
        return "this instance has no safety check for the canary to test"
    return None


def _until(what: Callable[[], Any], timeout_s: float) -> float | None:
    """Poll ``what`` every 0.25 s until truthy; the monotonic time it was, or None after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if what():
            return time.monotonic()
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.25)


def _firing(client: InstanceClient) -> bool:
    return any(a.get("labels", {}).get("alertname") == ALERT for a in client.firing_alerts())


def run_safety_drill(client: InstanceClient, spec: DrillSpec, opts: DrillOptions) -> DrillResult:
    """The drill (see the module docstring); the fault is always removed, whatever happened."""
    result, log, before = begin(client, spec)
    if result.problems:
        return result
    if _until(lambda: client.canary().get("passing") is True, opts.settle_timeout_s) is None:
        result.problems.append(f"the safety canary does not pass before the drill: {client.canary()}")
        return result
    baseline = closed_loop(Users(client, opts.users, f"drill-{spec.name}-base"), opts.baseline_s, opts.max_requests)
    base = baseline.snapshot()
    result.p95_ms["before"] = p95_ms(base)
    stop, traffic = threading.Event(), Traffic()
    users = Users(client, opts.users, f"drill-{spec.name}")
    budget = opts.fault_s + opts.detect_timeout_s * 2 + opts.settle_timeout_s

    def drive() -> None:
        nonlocal traffic
        traffic = closed_loop(users, budget, opts.max_requests, stop)

    driver = threading.Thread(target=drive, name="drill-safety-users", daemon=True)
    fault_id, injected_at, cleared_at, watcher = None, 0.0, None, None
    try:
        since = datetime.now(UTC)
        watcher = Watcher(client, spec, time.monotonic(), since)  # not started: its remediation reader only
        if _firing(client):
            raise DrillError(f"{ALERT} is firing before the drill")
        assert spec.fault is not None
        fault_id = client.inject("safety", spec.fault.kind, budget, spec.fault.params)
        injected_at = time.monotonic()
        log("fault_injected", id=fault_id, target="safety", kind=spec.fault.kind, users=opts.users)
        driver.start()
        _down(client, result, log, injected_at, opts)
        rest = injected_at + opts.fault_s - time.monotonic()  # users are answered in safe mode meanwhile
        if rest > 0:
            stop.wait(rest)
    except DrillError as exc:
        result.problems.append(str(exc))
        log("method_failed", error=str(exc))
    finally:
        if fault_id is not None:
            try:
                client.clear_fault(fault_id)
                cleared_at = time.monotonic()
                log("fault_cleared", id=fault_id)
            except DrillError as exc:
                result.problems.append(str(exc))
                log("rollback_failed", error=str(exc), all_cleared=client.clear_all_faults())
    if cleared_at is not None:
        _back(client, result, log, cleared_at, opts)
    stop.set()
    if driver.ident is not None:  # started
        driver.join(opts.settle_timeout_s + 60)
    under = traffic.snapshot()
    result.p95_ms["under_fault"] = p95_ms(under)
    _safe_answers(result, log, under)
    restored, _ = wait_steady(client, before, opts.settle_timeout_s)
    result.steady_state_restored = restored and result.steady_state_restored
    if cleared_at is not None:  # from the rollback to safe mode left and a normal answer again
        result.steady_again_s = round(time.monotonic() - cleared_at, 3)
    log("steady_state_again", restored=result.steady_state_restored, s=result.steady_again_s)
    if watcher is not None:
        result.remediation = final_remediations(watcher, opts.settle_timeout_s)
    outcomes = base + under
    tally(result, outcomes)
    result.lost, result.duplicated = count_stored(client, outcomes, opts.settle_timeout_s)
    log("turns_checked", lost=result.lost, duplicated=result.duplicated)
    judge(result, spec)
    if result.mttd_s is not None and result.mttd_s > DETECT_TARGET_S:
        miss = f"detected after {result.mttd_s:g} s (target {DETECT_TARGET_S:g} s)"
        result.missed_targets.append(miss)
        result.problems.append(miss)
        result.passed = False
    return result


def _down(client: InstanceClient, result: DrillResult, log: Journal, injected_at: float, opts: DrillOptions) -> None:
    """Filter off: the canary fails, the alert fires, remediation enters safe mode (each bounded)."""
    failed = _until(lambda: client.canary().get("passing") is False, opts.detect_timeout_s)
    if failed is None:
        raise DrillError("the safety canary did not fail with the filter off")
    log("canary_failed", after_s=round(failed - injected_at, 3), last_failure=client.canary().get("last_failure"))
    fired = _until(lambda: _firing(client), opts.detect_timeout_s)
    if fired is None:
        raise DrillError(f"{ALERT} did not fire")
    result.mttd_s, result.alert = round(fired - injected_at, 3), ALERT
    log("alert_fired", alert=ALERT, mttd_s=result.mttd_s)
    entered = _until(lambda: client.safe_mode().get("active") is True, opts.detect_timeout_s)
    if entered is None:
        raise DrillError("safe mode was not entered")
    state = client.safe_mode()
    result.time_to_action_s = result.mttr_s = round(entered - injected_at, 3)
    result.healing = f"safe mode entered by {state.get('by')}"
    log("safe_mode_entered", after_s=result.mttr_s, by=state.get("by"))
    if state.get("by") != REMEDIATION_ACTOR:
        result.problems.append(f"safe mode was entered by {state.get('by')}, not by remediation")


def _back(client: InstanceClient, result: DrillResult, log: Journal, cleared_at: float, opts: DrillOptions) -> None:
    """Filter restored: the canary passes, the alert resolves, remediation leaves safe mode."""
    steps = (
        ("canary_passing", lambda: client.canary().get("passing") is True, "the safety canary did not pass again"),
        ("alert_resolved", lambda: not _firing(client), f"{ALERT} did not resolve"),
        ("safe_mode_left", lambda: client.safe_mode().get("active") is False, "safe mode was not left"),
    )
    result.steady_state_restored = True
    for event, done, problem in steps:
        at = _until(done, opts.settle_timeout_s)
        if at is None:
            result.problems.append(problem)
            result.steady_state_restored = False
            log(event, reached=False)
            return
        log(event, after_s=round(at - cleared_at, 3))


def _safe_answers(result: DrillResult, log: Journal, under: list[Any]) -> None:
    """While safe mode was on, users got the safe response (an answer marked ``safe mode``)."""
    safe = sum(1 for o in under if o.answered and "safe mode" in o.reasons)
    log("safe_mode_answers", answers=safe, requests=len(under))
    if result.healing is not None and not safe:
        result.problems.append("no answer was the safe response while safe mode was on")
