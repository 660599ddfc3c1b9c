"""The DocumentsQuarantined rule, on promtool and the built-in engine alike (see test_alert_export)."""

from __future__ import annotations

from pathlib import Path

from ragvigil.ops.alerts.rules import default_rules
from tests.test_alert_export import test_prometheus_fires_what_the_builtin_engine_fires as fires_alike


def test_a_quarantined_document_fires_until_it_is_released_or_replaced(tmp_path: Path) -> None:
    scenario = {
        "name": "a document quarantined for 5 minutes fires DocumentsQuarantined, and clears when it is dealt with",
        "series": {
            'ragvigil_documents_quarantined{kb="help"}': "0x3 1x40 0x10",
            'ragvigil_documents_quarantined{kb="other"}': "0x54",
        },
        "checks": ["2m", "5m", "8m", "10m", "13m"],
        "must_fire": {("8m", "DocumentsQuarantined"), ("10m", "DocumentsQuarantined")},
    }
    fires_alike(scenario, tmp_path)


def test_the_rule_is_p3_per_kb_and_points_at_its_runbook() -> None:
    [rule] = [r for r in default_rules().rules if r.name == "DocumentsQuarantined"]
    assert rule.severity == "P3"
    assert "by (kb)" in rule.spec.expr
    anchor = rule.spec.annotations["runbook_url"].split("#")[1]
    runbooks = (Path(__file__).resolve().parents[1] / "docs" / "runbooks.md").read_text(encoding="utf-8")
    assert f"## {rule.name}" in runbooks and anchor == rule.name.lower()
    entry = runbooks.split(f"## {rule.name}", 1)[1].split("\n## ", 1)[0]
    assert "release" in entry and "clean copy" in entry
