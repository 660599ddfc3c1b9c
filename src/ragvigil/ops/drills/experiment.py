"""One drill, in Chaos Toolkit's shape: steady-state hypothesis → method → rollbacks, with a journal.

1. **Steady state**: the instance is ready and a probe question is answered (its ``degraded`` flag is
   noted, so a drill does not blame itself for what was already degraded).
2. **Method**: inject the fault through the admin fault API, drive bounded traffic on loopback, and
   watch — the first alert that fires after the injection (time to detect), the first remediation
   written on an incident's timeline (time to action), and when users stop being hurt (time to recover).
3. **Rollbacks**: always, whatever happened before: the fault is removed.
4. **Steady state again**, then every acknowledged turn is looked up in its session: one missing is a
   lost turn, one stored twice a duplicate.

Time to recover (``mttr_s``) is measured from the users' side while the fault is still in place: the
time from the injection to the end of the last request that failed or was slow (slower than three
times the steady p95, and at least one second); with healing working, that is the failover time. The
time the instance needs to be steady again after the rollback is reported beside it.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ragvigil.ops.drills.client import DrillError, InstanceClient, TurnOutcome
from ragvigil.ops.drills.traffic import Traffic, Users, closed_loop


@dataclass(frozen=True)
class Fault:
    """What to break: a target and kind of the fault API (``target`` may name ``{provider}``)."""

    target: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    # params measured on the instance at run time (a delay its breaker counts as slow), merged over ``params``
    sized: Callable[[InstanceClient, str], dict[str, Any]] | None = None


@dataclass(frozen=True)
class DrillSpec:
    name: str
    summary: str
    fault: Fault | None  # None: the drill's method is the traffic itself (a burst)
    alerts: tuple[str, ...]  # any of these firing counts as detection
    severity: str = "P1"
    expects_remediation: bool = False  # a policy's action on an incident timeline, verified
    applies: Callable[[InstanceClient], str | None] | None = None  # why it does not apply, or None
    # the instance's own healing, seen from outside (a breaker open, BM25-only retrieval): what it did, or None
    healed: Callable[[InstanceClient, str], str | None] | None = None
    # the run's size measured on the instance (enough calls to trip a breaker), from the options asked for
    traffic: Callable[[InstanceClient, str, DrillOptions], DrillOptions] | None = None
    # a drill whose method is not inject → watch → roll back (safety-filter also watches the way back)
    runner: Callable[[InstanceClient, DrillSpec, DrillOptions], DrillResult] | None = None


@dataclass
class DrillOptions:
    """How big a run is. The defaults are the short form the test suite runs."""

    users: int = 4
    baseline_s: float = 3.0
    fault_s: float = 20.0  # traffic under the fault
    max_requests: int = 400
    detect_timeout_s: float = 20.0
    settle_timeout_s: float = 30.0  # for steady state and stored turns after the rollback
    # traffic under the fault goes on this long after the instance healed itself (bounded by
    # ``fault_s + detect_timeout_s``), so a drill always sees what users get once it has: on a busy
    # machine the healing can come late in ``fault_s``, or after it
    after_heal_s: float = 3.0


@dataclass
class DrillResult:
    drill: str
    requests: int = 0
    answered: int = 0
    failed: int = 0
    shed_503: int = 0
    rate_limited_429: int = 0
    degraded: int = 0
    lost: int = 0
    duplicated: int = 0
    mttd_s: float | None = None
    time_to_action_s: float | None = None
    mttr_s: float | None = None
    steady_again_s: float | None = None
    steady_state_restored: bool = False
    alert: str | None = None
    healing: str | None = None  # what the instance did by itself (breaker opened, BM25-only retrieval)
    remediation: list[dict[str, Any]] = field(default_factory=list)
    p95_ms: dict[str, float | None] = field(default_factory=dict)
    passed: bool = False
    skipped: str | None = None
    problems: list[str] = field(default_factory=list)
    # the speed targets a drill missed (also in ``problems``): judged by the benchmark on a quiet machine,
    # never by the test suite, whose machine is shared
    missed_targets: list[str] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    backup_s: float | None = None  # backup-restore: time to back up, and to verify by restoring to scratch
    verify_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        if self.skipped is not None:
            out["passed"] = None
        return out


class Journal:
    """The run's events with their time since the start (Chaos Toolkit keeps one per experiment)."""

    def __init__(self, result: DrillResult) -> None:
        self.result = result
        self.t0 = time.monotonic()

    def __call__(self, event: str, **detail: Any) -> None:
        self.result.journal.append({"t_s": round(time.monotonic() - self.t0, 3), "event": event, **detail})


def p95_ms(outcomes: list[TurnOutcome]) -> float | None:
    lat = sorted(o.latency_s for o in outcomes if o.answered)
    if not lat:
        return None
    return round(lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000, 1)


def steady_state(client: InstanceClient) -> dict[str, Any]:
    """Ready, and a question answered: the hypothesis every drill starts and ends with."""
    ready = client.ready()
    probe = client.chat("How do I export my notes?", user_id="drill-probe") if ready else None
    return {
        "ready": ready,
        "answers": bool(probe and probe.answered),
        "degraded": bool(probe and probe.degraded),
    }


def wait_steady(client: InstanceClient, before: dict[str, Any], timeout_s: float) -> tuple[bool, float]:
    """(restored, seconds taken): ready, answering, and no more degraded than before the drill."""
    start = time.monotonic()
    while True:
        now = steady_state(client)
        if now["ready"] and now["answers"] and (before["degraded"] or not now["degraded"]):
            return True, time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            return False, time.monotonic() - start
        time.sleep(0.5)


class Watcher(threading.Thread):
    """Polls the instance while the fault is on: the first new alert of the drill, the first remediation."""

    def __init__(self, client: InstanceClient, spec: DrillSpec, injected_at: float, since: datetime) -> None:
        super().__init__(name=f"drill-watch-{spec.name}", daemon=True)
        self.client, self.spec, self.injected_at, self.since = client, spec, injected_at, since
        self.firing_before = {a.get("labels", {}).get("alertname") for a in client.firing_alerts()}
        self.detected_at: float | None = None
        self.alert: str | None = None
        self.acted_at: float | None = None
        self.actions: list[dict[str, Any]] = []
        self.healed_at: float | None = None
        self.healing: str | None = None
        self.target = ""
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            if self.healed_at is None and self.spec.healed is not None:
                what = self.spec.healed(self.client, self.target)
                if what:
                    self.healed_at, self.healing = time.monotonic(), what
            if self.detected_at is None:
                for a in self.client.firing_alerts():
                    name = a.get("labels", {}).get("alertname")
                    if name in self.spec.alerts and name not in self.firing_before:
                        self.detected_at, self.alert = time.monotonic(), name
                        break
            if self.detected_at is not None and self.acted_at is None:
                self.actions = self.remediations()
                if self.actions:
                    self.acted_at = time.monotonic()

    def remediations(self) -> list[dict[str, Any]]:
        """Remediation events on the timelines of incidents opened since the injection."""
        found = []
        for inc in self.client.incidents():
            opened = _when(inc.get("opened_at"))
            if opened is None or opened < self.since:
                continue
            full = self.client.incident(str(inc["id"])) or {}
            for ev in full.get("timeline", []):
                if ev.get("kind") == "remediation":
                    found.append({"incident": inc["id"], "at": ev.get("at"), **(ev.get("detail") or {})})
        return found


def fault_traffic(client: InstanceClient, spec: DrillSpec, opts: DrillOptions, watcher: Watcher) -> Traffic:
    """Closed-loop traffic for ``fault_s``, and on until ``after_heal_s`` past the healing (bounded).

    The fault itself is injected for ``fault_s + detect_timeout_s``: the traffic never outlives it.
    """
    if spec.healed is None or opts.after_heal_s <= 0:
        return closed_loop(Users(client, opts.users, f"drill-{spec.name}"), opts.fault_s, opts.max_requests)
    stop = threading.Event()
    earliest = watcher.injected_at + opts.fault_s

    def stop_once_seen() -> None:
        while not stop.wait(0.25):
            healed = watcher.healed_at
            if healed is not None and time.monotonic() >= max(earliest, healed + opts.after_heal_s):
                stop.set()

    threading.Thread(target=stop_once_seen, name=f"drill-stop-{spec.name}", daemon=True).start()
    try:
        users = Users(client, opts.users, f"drill-{spec.name}")
        return closed_loop(users, opts.fault_s + opts.detect_timeout_s, opts.max_requests, stop)
    finally:
        stop.set()


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def time_to_recover(outcomes: list[TurnOutcome], injected_at: float, slow_s: float) -> float:
    """From the injection to the end of the last failed or slow request (0: nobody was hurt)."""
    hurt = [o for o in outcomes if o.sent_at >= injected_at and (o.failed or o.latency_s > slow_s)]
    if not hurt:
        return 0.0
    return round(max(o.sent_at + o.latency_s for o in hurt) - injected_at, 3)


def count_stored(client: InstanceClient, outcomes: list[TurnOutcome], timeout_s: float) -> tuple[int, int]:
    """(lost, duplicated) among the acknowledged turns, waiting up to ``timeout_s`` for replays."""
    wanted: dict[str, set[str]] = {}
    for o in outcomes:
        if o.answered and o.session_id:
            wanted.setdefault(o.session_id, set()).add(str(o.message_id))
    deadline = time.monotonic() + timeout_s
    while True:
        lost = dup = 0
        for sid, ids in wanted.items():
            stored = client.message_ids(sid)
            if stored is None:
                lost += len(ids)
                continue
            lost += len(ids - set(stored))
            dup += len(stored) - len(set(stored))
        if lost == 0 or time.monotonic() > deadline:
            return lost, dup
        time.sleep(1.0)


def tally(result: DrillResult, outcomes: list[TurnOutcome]) -> None:
    result.requests += len(outcomes)
    result.answered += sum(o.answered for o in outcomes)
    result.failed += sum(o.failed for o in outcomes)
    result.shed_503 += sum(o.shed and o.status == 503 for o in outcomes)
    result.rate_limited_429 += sum(o.shed and o.status == 429 for o in outcomes)
    result.degraded += sum(o.answered and o.degraded for o in outcomes)


def begin(client: InstanceClient, spec: DrillSpec) -> tuple[DrillResult, Journal, dict[str, Any]]:
    """A drill's result, its journal and the steady state before it (``problems`` says if it is not steady)."""
    result = DrillResult(spec.name)
    log = Journal(result)
    before = steady_state(client)
    log("steady_state", **before)
    if not (before["ready"] and before["answers"]):
        result.problems.append(f"not steady before the drill: {before}")
    return result, log, before


def run_fault_drill(client: InstanceClient, spec: DrillSpec, opts: DrillOptions, target: str) -> DrillResult:
    """The shape shared by every fault drill (see the module docstring)."""
    result, log, before = begin(client, spec)
    if result.problems:
        return result
    baseline = closed_loop(Users(client, opts.users, f"drill-{spec.name}-base"), opts.baseline_s, opts.max_requests)
    base = baseline.snapshot()
    result.p95_ms["before"] = p95_ms(base)
    lat = [o.latency_s for o in base if o.answered]
    slow_s = max(1.0, 3 * (statistics.quantiles(lat, n=20)[-1] if len(lat) >= 2 else (lat[0] if lat else 1.0)))
    assert spec.fault is not None
    fault_id = None
    traffic = Traffic()
    watcher: Watcher | None = None
    try:
        since = datetime.now(UTC)
        fault_id = client.inject(target, spec.fault.kind, opts.fault_s + opts.detect_timeout_s, spec.fault.params)
        injected_at = time.monotonic()
        log(
            "fault_injected",
            id=fault_id,
            target=target,
            kind=spec.fault.kind,
            params=spec.fault.params,
            users=opts.users,
        )
        watcher = Watcher(client, spec, injected_at, since)
        watcher.target = target
        watcher.start()
        traffic = fault_traffic(client, spec, opts, watcher)
        # detection may come after the traffic (a `for:` of some seconds): wait for it, bounded
        deadline = injected_at + opts.detect_timeout_s
        while watcher.detected_at is None and time.monotonic() < deadline:
            time.sleep(0.25)
        if spec.expects_remediation:
            deadline = time.monotonic() + opts.detect_timeout_s
            while watcher.detected_at is not None and watcher.acted_at is None and time.monotonic() < deadline:
                time.sleep(0.25)
        under = traffic.snapshot()
        result.p95_ms["under_fault"] = p95_ms(under)
        result.mttr_s = time_to_recover(under, injected_at, slow_s)
        if watcher.detected_at is not None:
            result.mttd_s = round(watcher.detected_at - injected_at, 3)
            result.alert = watcher.alert
            log("alert_fired", alert=watcher.alert, mttd_s=result.mttd_s)
        acted = [t for t in (watcher.acted_at, watcher.healed_at) if t is not None]
        if acted:  # the first of: the instance healing itself, a remediation policy acting
            result.time_to_action_s = round(min(acted) - injected_at, 3)
            # what users got once the instance had acted (no turn should wait for the broken part)
            after = [o for o in under if o.sent_at >= min(acted)]
            result.p95_ms["after_action"] = p95_ms(after)
            log("after_action", answered=sum(o.answered for o in after), requests=len(after))
        if watcher.healing is not None:
            result.healing = watcher.healing
            log("healing_seen", what=watcher.healing, after_s=round(watcher.healed_at - injected_at, 3))  # type: ignore[operator]
        if watcher.acted_at is not None:
            result.remediation = watcher.actions
            log("remediation_seen", actions=len(watcher.actions))
    except DrillError as exc:
        result.problems.append(str(exc))
        log("method_failed", error=str(exc))
    finally:
        if watcher is not None:
            watcher.stop.set()
        if fault_id is not None:
            try:
                client.clear_fault(fault_id)
                log("fault_cleared", id=fault_id)
            except DrillError as exc:
                result.problems.append(str(exc))
                log("rollback_failed", error=str(exc), all_cleared=client.clear_all_faults())
    result.steady_state_restored, took = wait_steady(client, before, opts.settle_timeout_s)
    result.steady_again_s = round(took, 3)
    log("steady_state_again", restored=result.steady_state_restored, s=result.steady_again_s)
    if watcher is not None and spec.expects_remediation:
        result.remediation = final_remediations(watcher, opts.settle_timeout_s)
    outcomes = base + traffic.snapshot()
    tally(result, outcomes)
    result.lost, result.duplicated = count_stored(client, outcomes, opts.settle_timeout_s)
    log("turns_checked", lost=result.lost, duplicated=result.duplicated)
    judge(result, spec)
    return result


def final_remediations(watcher: Watcher, timeout_s: float) -> list[dict[str, Any]]:
    """The remediation events once one says how its verification ended (waiting up to ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        actions = watcher.remediations()
        if any(_verified(a) or _ended(a) for a in actions):
            return actions
        if time.monotonic() > deadline:
            return actions
        time.sleep(1.0)


def judge(result: DrillResult, spec: DrillSpec) -> None:
    """Passed: nothing lost or failed, the alert fired, remediation seen and verified if expected, steady again."""
    if result.lost:
        result.problems.append(f"{result.lost} acknowledged turn(s) lost")
    if result.duplicated:
        result.problems.append(f"{result.duplicated} turn(s) stored twice")
    if result.failed:
        result.problems.append(f"{result.failed} request(s) neither answered nor shed with Retry-After")
    if result.mttd_s is None:
        result.problems.append(f"none of {', '.join(spec.alerts)} fired")
    if spec.healed is not None and result.healing is None:
        result.problems.append("the instance did not heal itself (no failover seen)")
    if spec.expects_remediation:
        if not result.remediation:
            result.problems.append("no remediation was recorded")
        elif not any(_verified(a) for a in result.remediation):
            result.problems.append("no remediation was verified")
    if not result.steady_state_restored:
        result.problems.append("the steady state did not come back")
    result.passed = not result.problems


def _verified(action: dict[str, Any]) -> bool:
    """A timeline event of a verified run (the remediator writes each step's ``stage``)."""
    return "verified" in (action.get("result"), action.get("stage")) or action.get("verified") is True


def _ended(action: dict[str, Any]) -> bool:
    """A timeline event of a run that will not be verified any more."""
    return bool({action.get("result"), action.get("stage")} & {"failed", "rolled_back", "rollback_failed"})
