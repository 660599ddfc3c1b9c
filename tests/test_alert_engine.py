"""Alert rules: validation, Prometheus' state machine, no-data/error policies, reloads, real detection."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from ragvigil.app import Runtime
from ragvigil.ops.alerts.engine import AlertEngine, render
from ragvigil.ops.alerts.history import SignalHistory
from ragvigil.ops.alerts.rules import RuleFileError, default_rules, load_rules, parse_duration
from ragvigil.ops.alerts.service import AlertService
from ragvigil.ops.metrics import REGISTRY

T0 = 1_700_000_000.0


def rules(body: str) -> str:
    return "groups:\n  - name: test\n    rules:\n" + textwrap.indent(textwrap.dedent(body), "      ")


GAUGE_RULE = rules(
    """\
    - alert: QueueHigh
      expr: queue_depth > 10
      for: 10s
      keep_firing_for: 10s
      labels: {severity: P2}
      annotations: {summary: "queue {{ $labels.queue }} at {{ $value }}"}
    """
)


def feed(h: SignalHistory, t: float, value: float | None) -> None:
    if value is not None:
        h.add(t, [("queue_depth", {"queue": "q1"}, value)])


def test_pending_firing_keep_firing_and_resolved_like_prometheus() -> None:
    h = SignalHistory(retention_s=3600)
    engine = AlertEngine(load_rules(GAUGE_RULE), h)
    seen = []
    for step, value in enumerate([5, 20, 20, 20, 5, 20, 5, 5, 5, 5]):
        t = T0 + 5 * step
        feed(h, t, value)
        seen.append((step, [(c.old, c.new) for c in engine.evaluate(t)]))
    assert seen == [
        (0, []),
        (1, [("inactive", "pending")]),
        (2, []),  # 5 s pending, for is 10 s
        (3, [("pending", "firing")]),
        (4, []),  # condition gone, kept firing (keep_firing_for 10 s)
        (5, []),  # back: still the same firing alert
        (6, []),
        (7, []),
        (8, [("firing", "resolved")]),  # 10 s after it last held
        (9, []),
    ]
    resolved = engine.alerts(["resolved"])[0]
    assert resolved.labels == {"queue": "q1", "severity": "P2", "alertname": "QueueHigh"}
    assert resolved.annotations["summary"] == "queue q1 at 20"


def test_a_pending_alert_that_clears_never_fires() -> None:
    h = SignalHistory(retention_s=3600)
    engine = AlertEngine(load_rules(GAUGE_RULE), h)
    changes = []
    for step, value in enumerate([20, 5, 20, 5]):
        feed(h, T0 + 5 * step, value)
        changes += [(c.old, c.new) for c in engine.evaluate(T0 + 5 * step)]
    assert ("pending", "firing") not in changes and not engine.alerts()


@pytest.mark.parametrize(("policy", "expected"), [("ok", []), ("alerting", ["firing"]), ("keep_last", ["firing"])])
def test_no_data_policies(policy: str, expected: list[str]) -> None:
    text = rules(
        f"""\
        - alert: Stale
          expr: queue_depth > 10
          no_data: {policy}
          labels: {{severity: P1}}
        """
    )
    h = SignalHistory(retention_s=3600)
    engine = AlertEngine(load_rules(text), h)
    feed(h, T0, 20)
    engine.evaluate(T0)  # fires at once (for: 0s)
    # the signal stops: 10 minutes later nothing is within the 5-minute lookback
    engine.evaluate(T0 + 600)
    states = [a.state for a in engine.alerts()]
    assert states == expected
    health = engine.rule_health()[0]
    assert health["health"] == "no_data"
    if policy == "alerting":
        assert engine.alerts()[0].reason == "no_data" and engine.alerts()[0].labels == {
            "severity": "P1",
            "alertname": "Stale",
        }


def test_an_expression_that_fails_is_reported_and_follows_on_error() -> None:
    text = rules(
        """\
        - alert: Broken
          expr: a + on() b > 0
          on_error: alerting
          labels: {severity: P3}
        """
    )
    h = SignalHistory(retention_s=3600)
    h.add(T0, [("a", {"x": "1"}, 1.0), ("a", {"x": "2"}, 1.0), ("b", {}, 1.0)])  # two left sides match one right
    engine = AlertEngine(load_rules(text), h)
    engine.evaluate(T0)
    health = engine.rule_health()[0]
    assert health["health"] == "error" and "many-to-one" in health["last_error"]
    assert [a.reason for a in engine.alerts()] == ["evaluation_error"]


def test_invalid_rule_files_name_the_rule_and_the_field() -> None:
    text = rules(
        """\
        - alert: NoSeverity
          expr: up == 0
        - alert: BadFor
          expr: up == 0
          for: 5 minutes
          labels: {severity: P1}
        - alert: BadExpr
          expr: rate(up[5m]
          labels: {severity: P2}
        - alert: BadExpr
          expr: up == 0
          labels: {severity: P2}
        - alert: Extra
          expr: up == 0
          labels: {severity: P3}
          fore: 5m
        """
    )
    with pytest.raises(RuleFileError) as info:
        load_rules(text, "rules.yaml")
    problems = "\n".join(info.value.problems)
    assert "rule NoSeverity (group test): labels: " in problems and "P1, P2, P3" in problems
    assert "rule BadFor (group test): for: '5 minutes' is not a duration" in problems
    assert "rule BadExpr (group test): expr: not valid PromQL" in problems
    assert "rule BadExpr (group test): alert: defined twice" not in problems  # the first one was invalid
    assert "rule Extra (group test): fore: Extra inputs are not permitted" in problems
    with pytest.raises(RuleFileError, match="not valid YAML"):
        load_rules("groups: [", "x")


def test_durations_and_templates() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5 and parse_duration(0) == 0
    assert render("{{ $value | humanizePercentage }} on {{ $labels.check }}", {"check": "db"}, 0.0734) == "7.34% on db"
    assert render("{{ $value | humanize }}s", {}, 2500.0) == "2.5ks"
    assert render("{{ $value | humanize }}s", {}, 0.25) == "250ms"
    assert render("{{ $value }}", {}, 20.0) == "20" and render("{{ $value }}", {}, 0.1) == "0.1"


def test_the_default_pack_loads_and_covers_the_seeds() -> None:
    pack = default_rules()
    by_name = {r.name: r for r in pack.rules}
    for name in ("RagvigilUnhealthy", "HighErrorRate", "HighP95Latency", "AllLLMProvidersFailing", "VectorStoreDown"):
        assert name in by_name
    assert {r.severity for r in pack.rules} == {"P1", "P2", "P3"}
    assert all(r.spec.annotations.get("runbook_url") for r in pack.rules)


def test_an_invalid_rule_file_keeps_the_previous_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GAUGE_RULE)
    service = AlertService(REGISTRY, path)
    assert [r.name for r in service.engine.ruleset.rules] == ["QueueHigh"]
    path.write_text(GAUGE_RULE.replace("for: 10s", "for: soon"))
    error = service.reload()
    assert error is not None and "rule QueueHigh (group test): for:" in error.problems[0]
    assert [r.name for r in service.engine.ruleset.rules] == ["QueueHigh"]
    assert service.status()["rules_error"] == error.problems


def test_a_real_vector_store_failure_fires_its_p1_rule_within_10_seconds(sample_runtime: Runtime) -> None:
    service = sample_runtime.alerts
    assert service is not None
    t = T0
    service.tick(t)
    assert not [a for a in service.engine.alerts() if a.rule == "VectorStoreDown"]
    index_dir = sample_runtime.settings.index_dir
    shutil.rmtree(index_dir)
    index_dir.write_text("not a directory any more")  # the fault starts just after this tick
    sample_runtime.health.cache_s = 0  # every tick sees the current state
    fired_at = None
    for _ in range(6):
        t += service.eval_interval
        for change in service.tick(t):
            if change.alert.rule == "VectorStoreDown" and change.new == "firing":
                fired_at = change.at
    assert fired_at is not None and fired_at - T0 <= 10
    alert = next(a for a in service.engine.alerts() if a.rule == "VectorStoreDown")
    assert alert.severity == "P1" and alert.labels["check"] == "vector_store"


def test_alerts_api_lists_firing_alerts_rules_and_refuses_a_bad_reload(sample_runtime: Runtime, tmp_path: Path) -> None:
    from ragvigil.api.server import create_app
    from tests.conftest import admin_key, local_client

    path = tmp_path / "rules.yaml"
    path.write_text(rules("- alert: AlwaysOn\n  expr: vector(1)\n  labels: {severity: P3}\n"))
    service = sample_runtime.alerts
    assert service is not None
    service.rules_file = path
    assert service.reload() is None
    service.tick()
    with local_client(create_app(runtime=sample_runtime), admin_key(sample_runtime)) as c:
        body = c.get("/api/v1/ops/alerts").json()
        assert [a["rule"] for a in body["alerts"]] == ["AlwaysOn"] and body["alerts"][0]["state"] == "firing"
        assert body["engine"]["rules"] == 1 and body["engine"]["evaluations"] >= 1
        assert c.get("/api/v1/ops/alerts/rules").json()["rules"][0]["health"] == "ok"
        bad = c.get("/api/v1/ops/alerts", params={"state": "burning"})
        assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
        path.write_text(rules("- alert: AlwaysOn\n  expr: vector(1\n  labels: {severity: P3}\n"))
        r = c.post("/api/v1/ops/alerts/reload")
        assert r.status_code == 422 and r.json()["code"] == "invalid_rules"
        assert "rule AlwaysOn (group test): expr:" in r.json()["problems"][0]
        assert c.get("/api/v1/ops/alerts/rules").json()["rules"][0]["rule"] == "AlwaysOn"  # still active
