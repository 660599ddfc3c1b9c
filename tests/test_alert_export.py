"""The exported rules on the real Prometheus tools: promtool checks them, and agrees with our engine.

Each scenario is fed, as promtool's ``input_series``, both to ``promtool test rules`` and to the
built-in engine (evaluated at the same steps). The alerts our engine reports at each check time are
written into the promtool test as the expected alerts — so promtool passing means Prometheus fires
the same alerts, with the same labels and annotations, at the same times. Each scenario also states by
hand what must fire, so "both fire nothing" cannot pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ragvigil.cli import app as cli_app
from ragvigil.ops.alerts.engine import AlertEngine
from ragvigil.ops.alerts.export import to_alertmanager, to_prometheus
from ragvigil.ops.alerts.history import SignalHistory
from ragvigil.ops.alerts.rules import default_rules

STEP = 15  # seconds between samples and between evaluations, in both engines


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            raise RuntimeError(f"{name} is not installed (CI installs the prometheus packages)")
        pytest.skip(f"{name} not installed (Debian packages prometheus / prometheus-alertmanager)")
    return path


def expand(values: str) -> list[float | None]:
    """promtool's series notation: '1 _ 0+10x3 5x2' -> [1, None, 0, 10, 20, 30, 5, 5, 5]."""
    out: list[float | None] = []
    for token in values.split():
        m = re.fullmatch(r"(_|-?[\d.]+)(?:([+-][\d.]+)?x(\d+))?", token)
        assert m, token
        start, delta, times = m.groups()
        if times is None:
            out.append(None if start == "_" else float(start))
            continue
        for i in range(int(times) + 1):
            out.append(None if start == "_" else float(start) + i * float(delta or 0))
    return out


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition("{")
    labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return name, labels


SCENARIOS = [
    {
        "name": "5% errors for a minute fires HighErrorRate",
        "series": {
            'ragvigil_http_requests_total{route="/api/v1/chat",method="POST",status="200"}': "0+150x20",
            'ragvigil_http_requests_total{route="/api/v1/chat",method="POST",status="500"}': "0x4 15+15x15",
        },
        "checks": ["1m", "2m", "3m", "5m"],
        "must_fire": {("3m", "HighErrorRate"), ("5m", "HighErrorRate")},
    },
    {
        "name": "a failing vector store check fires its P1 and the P2 check alert",
        "series": {
            'ragvigil_health_check_up{check="vector_store"}': "1 1 0x10",
            'ragvigil_health_check_up{check="database"}': "1x12",
            'ragvigil_health_status{component="chat"}': "0x12",
        },
        "checks": ["15s", "45s", "1m", "2m"],
        "must_fire": {("45s", "VectorStoreDown"), ("1m", "HealthCheckFailing"), ("2m", "VectorStoreDown")},
    },
    {
        "name": "no health signal at all reads as unhealthy, not healthy",
        "series": {'ragvigil_http_requests_total{route="/x",method="GET",status="200"}': "0+1x10"},
        "checks": ["30s", "1m"],
        "must_fire": {("30s", "RagvigilUnhealthy"), ("1m", "HealthCheckFailing")},
    },
    {
        "name": "one provider failing pages P2; all failing pages P1",
        "series": {
            'ragvigil_llm_requests_total{provider="openai",model="m",outcome="ok"}': "0x40",
            'ragvigil_llm_requests_total{provider="openai",model="m",outcome="timeout"}': "0+4x40",
            'ragvigil_llm_requests_total{provider="backup",model="b",outcome="ok"}': "0+2x20 40x20",
            'ragvigil_llm_requests_total{provider="backup",model="b",outcome="error"}': "0x20 0+3x20",
        },
        "checks": ["4m", "10m"],
        "must_fire": {("4m", "LLMProviderFailing"), ("10m", "AllLLMProvidersFailing")},
    },
    {
        "name": "a rejected provider key pages P2",
        "series": {
            'ragvigil_provider_key_rejected{provider="primary"}': "0x1 1x10",
            'ragvigil_provider_key_rejected{provider="backup"}': "0x13",
        },
        "checks": ["30s", "1m"],
        "must_fire": {("1m", "ProviderKeyRejected")},
    },
    {
        "name": "disk, journal and no-answer rules",
        "series": {
            "ragvigil_data_disk_used_ratio": "0.5 0.9x40",
            "ragvigil_journal_pending_turns": "0 3x40",
            'ragvigil_chat_answers_total{kind="answered",degraded="false"}': "0+1x80",
            'ragvigil_chat_answers_total{kind="no_answer",degraded="false"}': "0+2x80",
        },
        "checks": ["4m", "7m", "20m"],
        "must_fire": {("7m", "DiskFilling"), ("4m", "ChatTurnsJournaled"), ("20m", "HighNoAnswerRate")},
    },
    {
        "name": "slow chat answers fire the p95 latency rule",
        "series": {
            f'ragvigil_http_request_duration_seconds_bucket{{route="/api/v1/chat",method="POST",le="{le}"}}': vals
            for le, vals in [("1.0", "0+1x40"), ("5.0", "0+2x40"), ("10.0", "0+10x40"), ("+Inf", "0+10x40")]
        },
        "checks": ["5m", "9m"],
        "must_fire": {("9m", "HighP95Latency")},
    },
]


SCENARIOS += [
    {
        "name": "chat failing under a steady scrape fires HighErrorRate: /metrics does not dilute it",
        "series": {
            'ragvigil_http_requests_total{route="/metrics",method="GET",status="200"}': "0+15x40",
            'ragvigil_http_requests_total{route="/api/v1/chat",method="POST",status="500"}': "0+0.75x40",
        },
        "checks": ["3m", "7m"],
        "must_fire": {("3m", "HighErrorRate"), ("7m", "LowSuccessRate")},
    },
    {
        "name": "an alert engine that stops evaluating fires AlertEvaluationStalled after its for",
        "series": {"ragvigil_alert_last_evaluation_timestamp_seconds": "0+15x4 60x16"},
        "checks": ["1m45s", "2m", "3m"],
        "must_fire": {("2m", "AlertEvaluationStalled"), ("3m", "AlertEvaluationStalled")},
    },
    {
        "name": "requests shed for a while fire LoadShedding; a counter that stopped rising does not",
        "series": {
            'ragvigil_admission_shed_total{priority="normal",reason="queue_full"}': "0+3x12 36x12",
        },
        "checks": ["2m", "6m"],
        "must_fire": {("2m", "LoadShedding")},
    },
    {
        "name": "a crisis hand-off unclaimed for 5 minutes fires CrisisHandoffUnclaimed; claimed, it resolves",
        "series": {
            'ragvigil_handoffs_open{priority="1"}': "0x4 1x28 0x12",  # waiting from 1m, claimed at 8m
            'ragvigil_handoffs_open{priority="2"}': "1x44",  # a complaint waiting is not a crisis
        },
        "checks": ["5m", "6m30s", "9m"],
        "must_fire": {("6m30s", "CrisisHandoffUnclaimed")},
    },
]
# Prometheus has `up` for every target it scrapes; the export's "signal missing" branch needs it
UP = {'up{job="ragvigil",instance="127.0.0.1:8000"}': "1x240"}


def seconds(d: str) -> int:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", d)
    assert m and d, d
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def our_alerts(scenario: dict, names: set[str]) -> dict[str, dict[str, list[dict]]]:
    """Run the built-in engine over the scenario; the firing alerts at each check time, by rule."""
    history = SignalHistory(retention_s=7200)
    engine = AlertEngine(default_rules(), history)
    series = [(*parse_series(s), expand(v)) for s, v in (scenario["series"] | UP).items()]
    last = max(seconds(c) for c in scenario["checks"])
    out: dict[str, dict[str, list[dict]]] = {}
    for step in range(last // STEP + 1):
        t = float(step * STEP)
        history.add(t, [(n, lb, vals[step]) for n, lb, vals in series if step < len(vals) and vals[step] is not None])
        engine.evaluate(t)
        for check in scenario["checks"]:
            if seconds(check) == t:
                firing = [a for a in engine.alerts(["firing"]) if a.rule in names]
                out[check] = {
                    name: [
                        {
                            "exp_labels": {k: v for k, v in a.labels.items() if k != "alertname"},
                            "exp_annotations": a.annotations,
                        }
                        for a in firing
                        if a.rule == name
                    ]
                    for name in names
                }
    return out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s["name"])
def test_prometheus_fires_what_the_builtin_engine_fires(scenario: dict, tmp_path: Path) -> None:
    promtool = tool("promtool")
    rules_file = tmp_path / "ragvigil.rules.yml"
    rules_file.write_text(to_prometheus(default_rules()))
    names = {r.name for r in default_rules().rules}
    ours = our_alerts(scenario, names)
    fired = {(check, name) for check, by_rule in ours.items() for name, alerts in by_rule.items() if alerts}
    assert scenario["must_fire"] <= fired, f"built-in engine: {sorted(fired)}"
    test = {
        "rule_files": [rules_file.name],
        "evaluation_interval": f"{STEP}s",
        "tests": [
            {
                "interval": f"{STEP}s",
                "input_series": [{"series": s, "values": v} for s, v in (scenario["series"] | UP).items()],
                "alert_rule_test": [
                    {"eval_time": check, "alertname": name, "exp_alerts": alerts}
                    for check, by_rule in ours.items()
                    for name, alerts in sorted(by_rule.items())
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False, allow_unicode=True))
    # the exported groups evaluate every 1 or 3 s; promtool steps by evaluation_interval, so align them
    rules_file.write_text(re.sub(r"interval: \d+s", f"interval: {STEP}s", rules_file.read_text()))
    run = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_exported_files_pass_promtool_and_amtool(tmp_path: Path) -> None:
    promtool, amtool = tool("promtool"), tool("amtool")
    out = CliRunner().invoke(cli_app, ["alerts", "export", "--format", "prometheus", "-o", str(tmp_path / "r.yml")])
    assert out.exit_code == 0, out.output
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "r.yml")], capture_output=True, text=True)
    assert check.returncode == 0 and f"SUCCESS: {len(default_rules().rules)} rules found" in check.stdout
    (tmp_path / "am.yml").write_text(to_alertmanager("http://127.0.0.1:8000/api/v1/ops/alerts/webhook", "rv_key"))
    am = subprocess.run([amtool, "check-config", str(tmp_path / "am.yml")], capture_output=True, text=True)
    assert am.returncode == 0, am.stdout + am.stderr
    assert "1 inhibit rules" in am.stdout


def test_the_cli_check_reports_bad_rules_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up ==\n        labels: {severity: P1}\n"
    )
    out = CliRunner().invoke(cli_app, ["alerts", "check", str(bad)])
    assert out.exit_code == 2 and "rule X (group g): expr: not valid PromQL" in out.output
