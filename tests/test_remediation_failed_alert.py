"""The RemediationFailed rule, on promtool and the built-in engine alike (see test_alert_export)."""

from __future__ import annotations

from pathlib import Path

from ragvigil.ops.alerts.rules import default_rules
from tests.test_alert_export import our_alerts
from tests.test_alert_export import test_prometheus_fires_what_the_builtin_engine_fires as fires_alike


def test_a_rolled_back_remediation_fires_and_a_verified_one_does_not(tmp_path: Path) -> None:
    scenario = {
        "name": "a rolled-back remediation fires RemediationFailed; verified ones never do",
        "series": {
            'ragvigil_remediation_actions_total{action="journal.replay",result="verified"}': "0 1x3 2x20",
            'ragvigil_remediation_actions_total{action="test.pause",result="rolled_back"}': "0x5 1x20",
        },
        "checks": ["30s", "2m", "3m"],
        "must_fire": {("2m", "RemediationFailed"), ("3m", "RemediationFailed")},
    }
    fires_alike(scenario, tmp_path)
    quiet = our_alerts(scenario, {"RemediationFailed"})["30s"]["RemediationFailed"]
    assert quiet == []  # only verified runs so far


def test_the_rule_points_at_its_runbook() -> None:
    [rule] = [r for r in default_rules().rules if r.name == "RemediationFailed"]
    anchor = rule.spec.annotations["runbook_url"].split("#")[1]
    runbooks = (Path(__file__).resolve().parents[1] / "docs" / "runbooks.md").read_text(encoding="utf-8")
    assert f"## {rule.name}" in runbooks and anchor == rule.name.lower()
