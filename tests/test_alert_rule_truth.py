"""Rules that must stay quiet when nothing is wrong, checked on Prometheus itself (``promtool test rules``).

Each case is a situation in which an earlier version of the default pack paged although nothing
was wrong: a Prometheus that has not scraped ragvigil yet, a quiet instance with two unanswered
questions, traffic made only of scrapes and probes. The cases that must fire are in
``test_alert_export.py`` (both engines agree there), so quiet rules cannot pass by never firing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ragvigil.ops.alerts.export import to_prometheus
from ragvigil.ops.alerts.rules import default_rules
from tests.test_alert_export import STEP, tool

INSTANCE = 'instance="127.0.0.1:8000"'

CASES = [
    {
        "name": "start-up: no page before Prometheus has scraped ragvigil once",
        "series": {  # the first scrape lands at 1m: nothing exists before, not even `up`
            f'up{{job="ragvigil",{INSTANCE}}}': "_x3 1x12",
            f'ragvigil_health_status{{component="chat",{INSTANCE}}}': "_x3 0x12",
            f'ragvigil_health_check_up{{check="database",{INSTANCE}}}': "_x3 1x12",
            f"ragvigil_data_disk_used_ratio{{{INSTANCE}}}": "_x3 0.4x12",
            f"ragvigil_alert_last_evaluation_timestamp_seconds{{{INSTANCE}}}": "_x3 60+15x12",
        },
        "quiet": {
            "15s": ["RagvigilUnhealthy", "HealthCheckFailing", "DiskFilling", "AlertEvaluationStalled"],
            "45s": ["RagvigilUnhealthy", "HealthCheckFailing", "DiskFilling", "AlertEvaluationStalled"],
            "2m": ["RagvigilUnhealthy", "HealthCheckFailing", "DiskFilling", "AlertEvaluationStalled"],
        },
    },
    {
        "name": "an instance with the built-in engine off is not a stalled engine",
        "series": {
            f'up{{job="ragvigil",{INSTANCE}}}': "1x20",
            f"ragvigil_alert_last_evaluation_timestamp_seconds{{{INSTANCE}}}": "0x20",  # never evaluated
        },
        "quiet": {"1m": ["AlertEvaluationStalled"], "4m": ["AlertEvaluationStalled"]},
    },
    {
        "name": "quiet instance: two unanswered questions are not '100% no answer'",
        "series": {
            f'ragvigil_chat_answers_total{{kind="no_answer",degraded="false",{INSTANCE}}}': "0x10 1x10 2x70",
            f'ragvigil_chat_answers_total{{kind="answered",degraded="false",{INSTANCE}}}': "0x90",
        },
        "quiet": {"13m": ["HighNoAnswerRate"], "14m": ["HighNoAnswerRate"]},
    },
    {
        "name": "scrape-only traffic: /metrics and failing readiness probes are not failing requests",
        "series": {  # a cold start: Prometheus scrapes, the orchestrator's readiness probe gets 503
            f'ragvigil_http_requests_total{{route="/metrics",method="GET",status="200",{INSTANCE}}}': "0+15x40",
            f'ragvigil_http_requests_total{{route="/health/ready",method="GET",status="503",{INSTANCE}}}': "0+15x40",
        },
        "quiet": {"3m": ["HighErrorRate", "LowSuccessRate"], "9m": ["HighErrorRate", "LowSuccessRate"]},
    },
    {
        "name": "a crisis hand-off claimed within 5 minutes, and complaints waiting, do not page",
        "series": {
            f'ragvigil_handoffs_open{{priority="1",{INSTANCE}}}': "0x4 1x16 0x20",  # claimed after 4 minutes
            f'ragvigil_handoffs_open{{priority="2",{INSTANCE}}}': "3x40",
        },
        "quiet": {
            "4m45s": ["CrisisHandoffUnclaimed"],
            "6m": ["CrisisHandoffUnclaimed"],
            "9m": ["CrisisHandoffUnclaimed"],
        },
    },
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_prometheus_stays_quiet(case: dict, tmp_path: Path) -> None:
    promtool = tool("promtool")
    names = {r.name for r in default_rules().rules}
    assert {n for rules in case["quiet"].values() for n in rules} <= names
    # the exported groups evaluate every 1 or 3 s; promtool steps by evaluation_interval, so align them
    exported = re.sub(r"interval: \d+s", f"interval: {STEP}s", to_prometheus(default_rules()))
    (tmp_path / "ragvigil.rules.yml").write_text(exported)
    test = {
        "rule_files": ["ragvigil.rules.yml"],
        "evaluation_interval": f"{STEP}s",
        "tests": [
            {
                "interval": f"{STEP}s",
                "input_series": [{"series": s, "values": v} for s, v in case["series"].items()],
                "alert_rule_test": [
                    {"eval_time": at, "alertname": name, "exp_alerts": []}
                    for at, rules in case["quiet"].items()
                    for name in rules
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    run = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
