"""The JournalEntriesRejected rule, on promtool and the built-in engine alike (see test_alert_export)."""

from __future__ import annotations

from pathlib import Path

from ragvigil.ops.alerts.rules import default_rules
from tests.test_alert_export import test_prometheus_fires_what_the_builtin_engine_fires as fires_alike


def test_a_set_aside_journal_entry_fires_until_it_is_dealt_with(tmp_path: Path) -> None:
    scenario = {
        "name": "a journal entry set aside fires JournalEntriesRejected, and clears when it is handled",
        "series": {"ragvigil_journal_rejected_turns": "0x3 1x8 0x4"},
        "checks": ["30s", "1m", "2m", "4m"],
        "must_fire": {("1m", "JournalEntriesRejected"), ("2m", "JournalEntriesRejected")},
    }
    fires_alike(scenario, tmp_path)


def test_the_rule_points_at_its_runbook() -> None:
    [rule] = [r for r in default_rules().rules if r.name == "JournalEntriesRejected"]
    assert rule.severity == "P2"
    anchor = rule.spec.annotations["runbook_url"].split("#")[1]
    runbooks = (Path(__file__).resolve().parents[1] / "docs" / "runbooks.md").read_text(encoding="utf-8")
    assert f"## {rule.name}" in runbooks and anchor == rule.name.lower()
