"""The ``safety-filter`` drill end to end, in process: ``ragvigil drill safety-filter`` against a live
uvicorn on loopback serving a runtime whose safety check is a rule-based one (``tests.safety_check``).

filter off (fault ``safety``/``off``) → the canary (every second) fails → SafetyCanaryFailing fires →
remediation enters safe mode and users get the safe response → the fault is cleared → the canary
passes → the alert resolves → remediation leaves safe mode. Nothing acknowledged is lost.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app
from ragvigil.ops.faults.hooks import FaultySafetyCheck
from ragvigil.ops.remediation import ACTOR
from tests.conftest import LiveServer, admin_key, make_settings


@pytest.fixture
def drilled(
    sample_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str, Runtime]]:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(d))  # the command's own settings
    rt = Runtime(
        make_settings(
            d,
            faults={"enabled": True},
            canary={"interval_s": 1, "timeout_s": 5},
            admission={"per_key": "off", "per_user": "off"},  # the drill is the load
        )
    )
    assert isinstance(rt.safety, FaultySafetyCheck)  # chat.safety's real checker, under the `safety` fault
    try:
        rt.start_background()
        with LiveServer(create_app(runtime=rt)) as base:
            yield base, admin_key(rt), rt
    finally:
        rt.close()


def test_the_safety_filter_drill_enters_and_leaves_safe_mode_by_itself(drilled: tuple[str, str, Runtime]) -> None:
    base, key, rt = drilled
    args = ["drill", "safety-filter", "--url", base, "--api-key", key, "--anonymous-users", "--json"]
    res = CliRunner().invoke(cli_app, [*args, "--fault-s", "6", "--users", "2", "--detect-s", "20"])
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert lines, res.output[-3000:]
    result = json.loads(lines[-1])
    shown = json.dumps(result, indent=1, default=str)[-6000:]
    assert result["skipped"] is None and result["drill"] == "safety-filter", shown
    assert result["alert"] == "SafetyCanaryFailing" and result["mttd_s"] is not None, shown
    assert result["time_to_action_s"] is not None and result["mttr_s"] == result["time_to_action_s"], shown
    assert result["healing"] == f"safe mode entered by {ACTOR}", shown
    events = [e["event"] for e in result["journal"]]
    order = [
        "fault_injected",
        "canary_failed",
        "alert_fired",
        "safe_mode_entered",
        "fault_cleared",
        "canary_passing",
        "alert_resolved",
        "safe_mode_left",
    ]
    assert [e for e in events if e in order] == order, events
    failed = next(e for e in result["journal"] if e["event"] == "canary_failed")["last_failure"]
    assert {f["reason"] for f in failed["failures"]} == {"missed"}  # filter off: the crisis probes passed unseen
    assert next(e for e in result["journal"] if e["event"] == "safe_mode_answers")["answers"] > 0, shown
    assert result["steady_state_restored"] and result["lost"] == 0 and result["failed"] == 0, shown
    actions = {(a.get("action"), a.get("stage")) for a in result["remediation"]}
    assert {("safe_mode.enter", "applied"), ("safe_mode.enter", "verified")} <= actions, actions
    assert "safe_mode.leave" in {a for a, _ in actions}, actions
    assert not [p for p in result["problems"] if p not in result["missed_targets"]], result["problems"]
    # the instance is itself again: filter on, canary passing, safe mode off (left by remediation)
    assert not rt.safe_mode.active and rt.safety.check("我不想活了").crisis  # type: ignore[union-attr]
    assert [r for r in rt.remediation.status()["recent"] if r["action"] == "safe_mode.leave"]


def test_the_drill_is_skipped_without_a_safety_check(sample_runtime: Runtime) -> None:
    from ragvigil.ops.drills import InstanceClient, run

    sample_runtime.safety = None  # an instance with the safety check switched off (safety.enabled = false)
    with LiveServer(create_app(runtime=sample_runtime)) as base:
        client = InstanceClient(base, admin_key(sample_runtime))
        try:
            result = run("safety-filter", client)
        finally:
            client.close()
    assert result.skipped == "this instance has no safety check for the canary to test"
