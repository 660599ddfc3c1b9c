"""The ``safety`` fault target: ``off`` makes the runtime's safety check pass everything, ``error`` makes it
raise; the canary on that same check fails while the fault is on and passes once it is cleared, and the
fault API and ``GET /api/v1/ops/canary`` show it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.understanding import SAFE
from ragvigil.ops.faults.hooks import FaultySafetyCheck, SafetyCheckFailed
from tests.conftest import admin_key, local_client, make_settings
from tests.safety_check import RuleSafetyCheck

CRISIS = "我不想活了"


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path / "data", faults={"enabled": True}))
    runtime.safety = runtime.faults.safety(RuleSafetyCheck())  # how a safety check is installed
    yield runtime
    runtime.close()


@pytest.fixture
def admin(rt: Runtime) -> Iterator[TestClient]:
    with local_client(create_app(runtime=rt), admin_key(rt)) as c:
        yield c


def _inject(c: TestClient, kind: str) -> str:
    r = c.post("/api/v1/ops/faults", json={"target": "safety", "kind": kind, "duration_s": 60})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_off_makes_the_check_pass_everything_and_clearing_restores_it(rt: Runtime, admin: TestClient) -> None:
    assert isinstance(rt.safety, FaultySafetyCheck)
    assert rt.safety.check(CRISIS).crisis
    fault = _inject(admin, "off")
    assert rt.safety.check(CRISIS) is SAFE and rt.safety.check_output("I want to kill myself") is SAFE
    assert rt.safety.response(rt.safety.check(CRISIS), "zh")  # the texts are not what is broken
    run = rt.canary.run_once()  # type: ignore[union-attr]
    # the four crisis messages and the two unsafe answers all go through
    assert run is not None and run.outcome == "missed" and len(run.failures) == 6
    state = admin.get("/api/v1/ops/canary").json()
    assert state["passing"] is False and state["last_failure"]["failures"][0]["reason"] == "missed"
    assert admin.delete(f"/api/v1/ops/faults/{fault}").status_code == 200
    assert rt.safety.check(CRISIS).crisis
    assert rt.canary.run_once().passed  # type: ignore[union-attr]
    assert admin.get("/api/v1/ops/canary").json()["passing"] is True


def test_error_makes_the_check_raise_and_the_canary_fail(rt: Runtime, admin: TestClient) -> None:
    _inject(admin, "error")
    with pytest.raises(SafetyCheckFailed):
        rt.safety.check("hello")  # type: ignore[union-attr]
    run = rt.canary.run_once()  # type: ignore[union-attr]
    assert run is not None and run.outcome == "error"
    assert {f["detail"] for f in run.failures} == {"SafetyCheckFailed"}
    assert admin.delete("/api/v1/ops/faults").status_code == 200
    assert rt.canary.run_once().passed  # type: ignore[union-attr]


@pytest.mark.parametrize("body", [{"kind": "slow"}, {"kind": "timeout"}, {"target": "safety:lexicon"}])
def test_the_safety_target_takes_its_own_kinds_only(admin: TestClient, body: dict) -> None:
    r = admin.post("/api/v1/ops/faults", json={"target": "safety", "kind": "off", "duration_s": 10} | body)
    assert r.status_code == 422, r.text
    assert admin.get("/api/v1/ops/faults").json()["faults"] == []


def test_without_fault_injection_the_check_is_not_wrapped(tmp_path: Path) -> None:
    runtime = Runtime(make_settings(tmp_path / "plain"))
    try:
        check = RuleSafetyCheck()
        assert runtime.faults.safety(check) is check
        assert type(runtime.safety).__name__ == "SafetyChecker"  # the real check, not the fault wrapper
    finally:
        runtime.close()


def test_the_canary_route_is_for_viewers(rt: Runtime, admin: TestClient) -> None:
    from ragvigil.ops.access import Role

    client_key = rt.keys.create("c", Role.client)[1]
    r = admin.get("/api/v1/ops/canary", headers={"Authorization": f"Bearer {client_key}"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    viewer = rt.keys.create("v", Role.viewer)[1]
    body = admin.get("/api/v1/ops/canary", headers={"Authorization": f"Bearer {viewer}"}).json()
    assert body["enabled"] is True and body["check"] == "RuleSafetyCheck" and body["passing"] is None
