"""The alert rules of the degraded modes fire on their signals (built-in engine; promtool agrees in CI)."""

from __future__ import annotations

from ragvigil.ops.alerts.rules import default_rules
from tests.test_alert_export import our_alerts

NAMES = {r.name for r in default_rules().rules}


def _fired(scenario: dict) -> set[tuple[str, str]]:
    out = our_alerts(scenario, NAMES)
    return {(check, name) for check, by_rule in out.items() for name, alerts in by_rule.items() if alerts}


def test_lexical_only_retrieval_fires_retrieval_degraded_and_hybrid_clears_it() -> None:
    fired = _fired(
        {
            "series": {
                'ragvigil_retrieval_mode{mode="lexical_only"}': "0 0 1x6 0x4",
                'ragvigil_retrieval_mode{mode="hybrid"}': "1 1 0x6 1x4",
            },
            "checks": ["15s", "45s", "3m"],
        }
    )
    assert ("45s", "RetrievalDegraded") in fired
    assert ("15s", "RetrievalDegraded") not in fired and ("3m", "RetrievalDegraded") not in fired


def test_a_journal_that_keeps_growing_or_nears_its_bound_fires_journal_backlog() -> None:
    # the gauges exist from the start (0): a rule whose signal is missing stays quiet (no_data: ok)
    ratio = {"ragvigil_journal_fill_ratio": "0x41"}
    growing = _fired({"series": {"ragvigil_journal_pending_turns": "0 1+1x40"} | ratio, "checks": ["2m", "6m"]})
    assert ("6m", "JournalBacklog") in growing and ("2m", "JournalBacklog") not in growing
    steady = _fired({"series": {"ragvigil_journal_pending_turns": "0 3x40"} | ratio, "checks": ["6m", "9m"]})
    assert not {n for _, n in steady} & {"JournalBacklog"}  # a backlog that does not grow is ChatTurnsJournaled
    nearly_full = _fired(
        {
            "series": {"ragvigil_journal_fill_ratio": "0.5 0.9x30", "ragvigil_journal_pending_turns": "9x31"},
            "checks": ["4m"],
        }
    )
    assert ("4m", "JournalBacklog") in nearly_full
