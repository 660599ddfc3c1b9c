"""Automatic safe mode: the default policies enter it when SafetyCanaryFailing fires and leave it when the
alert resolves, each step on the incident timeline and in the audit log, verified by the safe-mode gauge.

The signal comes from the real canary (``rt.canary``) running the shipped probes through the runtime's
safety check (``rt.safety``, a rule-based check that can lose its lexicon); the test runs the canary and
ticks the real alert engine on its own clock; chat goes through the real API of the same runtime.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ragvigil.app import Runtime
from ragvigil.config import SAFE_RESPONSE_EN, SAFE_RESPONSE_ZH
from ragvigil.ops import metrics
from ragvigil.ops.remediation import ACTOR, load_policies
from ragvigil.ops.remediation.policies import PolicyFileError
from tests.safety_check import CRISIS_WORDS, RuleSafetyCheck


class Canary:
    """The runtime's canary over a check whose lexicon the test takes away and gives back."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.check = RuleSafetyCheck()
        rt.safety = rt.faults.safety(self.check)

    def set(self, working: int) -> None:
        """Break (0) or restore (1) the filter, then one canary run: the gauge follows what it found."""
        self.check.words = CRISIS_WORDS if working else ()
        assert self.rt.canary is not None
        run = self.rt.canary.run_once()
        assert run is not None and run.passed == bool(working), run
        assert metrics.REGISTRY.get_sample_value("ragvigil_safety_canary_passing") == float(working)


@pytest.fixture
def canary(sample_runtime: Runtime) -> Iterator[Canary]:
    c = Canary(sample_runtime)
    c.set(1)
    yield c
    metrics.SAFETY_CANARY.set(None)


def _ask(client: TestClient, message: str, session: str | None = None) -> dict:
    body = {"message": message, "user_id": "canary-user"} | ({"session_id": session} if session else {})
    r = client.post("/api/v1/chat", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _runs(rt: Runtime, action: str) -> list[dict]:
    return [r for r in rt.remediation.status()["recent"] if r["action"] == action]


def test_safety_canary_failing_enters_safe_mode_and_its_resolution_leaves_it(
    client: TestClient, sample_runtime: Runtime, canary: Canary
) -> None:
    rt = sample_runtime
    assert rt.alerts is not None
    before = _ask(client, "How do I export my notes?")
    assert before["answer"] != SAFE_RESPONSE_EN and not rt.safe_mode.active

    t0 = time.time()
    rt.alerts.tick(t0)  # the canary passes: nothing fires
    assert not rt.safe_mode.active
    canary.set(0)
    rt.alerts.tick(t0 + 3)  # SafetyCanaryFailing fires → safe-mode-while-safety-canary-fails
    assert rt.safe_mode.active, rt.remediation.status()
    assert rt.safe_mode.status()["by"] == ACTOR
    [enter] = _runs(rt, "safe_mode.enter")
    assert enter["policy"] == "safe-mode-while-safety-canary-fails" and enter["stage"] == "verifying"

    during = _ask(client, "How do I export my notes?", before["session_id"])
    assert during["answer"] == SAFE_RESPONSE_EN and "safe mode" in during["degraded_reasons"]
    assert _ask(client, "怎么申请退款？", before["session_id"])["answer"] == SAFE_RESPONSE_ZH
    rt.alerts.tick(t0 + 6)  # still failing: safe mode holds, nothing is undone
    assert rt.safe_mode.active and _runs(rt, "safe_mode.enter")[0]["stage"] == "verifying"

    canary.set(1)
    rt.alerts.tick(t0 + 9)  # resolved: entering is verified, leaving runs
    [enter] = _runs(rt, "safe_mode.enter")
    assert enter["stage"] == "verified" and enter["signal_after"] == 1.0, enter
    [leave] = _runs(rt, "safe_mode.leave")
    assert leave["policy"] == "leave-safe-mode-when-safety-canary-passes" and leave["trigger"]["when"] == "resolved"
    assert not rt.safe_mode.active
    after = _ask(client, "How do I export my notes?", before["session_id"])
    assert after["answer"] != SAFE_RESPONSE_EN and "safe mode" not in after["degraded_reasons"]
    rt.alerts.tick(t0 + 12)  # the safe-mode gauge is 0 and the alert stays resolved: leaving is verified
    [leave] = _runs(rt, "safe_mode.leave")
    assert leave["stage"] == "verified" and leave["signal_after"] == 0.0, leave

    # every turn is stored, the safe answers too
    msgs = client.get(f"/api/v1/sessions/{before['session_id']}/messages", params={"user_id": "canary-user"}).json()
    assert [m["content"] for m in msgs if m["role"] == "assistant"][1:3] == [SAFE_RESPONSE_EN, SAFE_RESPONSE_ZH]
    # both steps on the incident's timeline and in the audit log
    assert enter["incident_id"] and leave["incident_id"] == enter["incident_id"]
    timeline = rt.incidents.get(enter["incident_id"])["timeline"]
    steps = [(e["detail"]["action"], e["detail"]["stage"]) for e in timeline if e["kind"] == "remediation"]
    assert steps == [
        ("safe_mode.enter", "applied"),
        ("safe_mode.enter", "verified"),
        ("safe_mode.leave", "applied"),
        ("safe_mode.leave", "verified"),
    ]
    for action in ("safe_mode.enter", "safe_mode.leave"):
        audited = rt.audit.query(action=f"remediation.{action}")
        assert {a.result for a in audited} == {"applied", "verified"}, action


def test_an_operators_safe_mode_is_not_left_when_the_canary_recovers(sample_runtime: Runtime, canary: Canary) -> None:
    rt = sample_runtime
    assert rt.alerts is not None
    rt.safe_mode.enter("investigating a complaint", "alice")
    t0 = time.time()
    canary.set(0)
    rt.alerts.tick(t0)
    canary.set(1)
    rt.alerts.tick(t0 + 3)
    [leave] = _runs(rt, "safe_mode.leave")
    assert leave["result"] == "failed" and "entered by alice" in leave["reason"], leave
    assert rt.safe_mode.active and rt.safe_mode.status()["by"] == "alice"


def test_a_cause_policy_cannot_wait_for_a_resolution() -> None:
    text = """
policies:
  - name: x
    match: {cause: provider_down, when: resolved}
    action: safe_mode.leave
    verify: {signal: ragvigil_safe_mode_active, below: 0.5}
"""
    with pytest.raises(PolicyFileError, match="when must be firing"):
        load_policies(text)
