"""Diagnosis: rule-file validation, ranking over hand-built symptom snapshots, the symptom sources, the hook.

The end-to-end path (a real fault, the alert engine, the incident, the API and the CLI) is in
``test_diagnosis_live.py``.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragvigil.cli import app as cli_app
from ragvigil.ops.alerts.history import SignalHistory
from ragvigil.ops.alerts.incidents import AlertNotice, IncidentStore
from ragvigil.ops.alerts.rules import default_rules
from ragvigil.ops.diagnosis import (
    DiagnosisRuleError,
    SymptomCollector,
    Symptoms,
    SymptomSources,
    default_diagnosis_rules,
    load_diagnosis_rules,
    rank,
)
from ragvigil.ops.diagnosis.rules import default_diagnosis_text
from ragvigil.ops.diagnosis.symptoms import (
    AlertSymptom,
    BreakerSymptom,
    CheckSymptom,
    ErrorSymptom,
    ResourceSymptom,
    StageSymptom,
)
from ragvigil.ops.health import CheckResult
from ragvigil.ops.logfiles import file_handlers
from ragvigil.ops.logging import JsonFormatter
from ragvigil.storage.db import Database, migrate

T0 = 1_780_000_000.0
SRC = Path(__file__).resolve().parents[1] / "src" / "ragvigil"
# the checks Runtime registers ("notifications" only when a channel is configured)
# the checks a runtime registers (redis: when `redis.url` is set; test_redis_shared diagnoses it live)
RUNTIME_CHECKS = {"database", "vector_store", "embedding", "generator", "disk", "notifications", "redis"}
STAGES = {"history", "retrieve", "generate", "persist", "record"}


# --- the rule file -------------------------------------------------------------------------------
def problems_of(text: str) -> list[str]:
    with pytest.raises(DiagnosisRuleError) as info:
        load_diagnosis_rules(text, "test.yaml")
    return info.value.problems


def test_every_problem_is_reported_at_once_naming_cause_and_field() -> None:
    problems = problems_of(
        """
causes:
  - name: two_kinds
    summary: "x"
    when: [{alert: A, health_failing: database}]
  - name: stage_without_threshold
    summary: "x"
    when: [{stage: generate}]
  - name: bad_action
    summary: "x"
    when: [{alert: A}]
    actions: [reboot.everything]
  - name: bad_regex
    summary: "x"
    when: [{error: generator_failed, matching: "(unclosed"}]
  - name: Not-Snake
    summary: "x"
    when: [{alert: A}]
  - name: no_when
    summary: "x"
    when: []
  - name: ratio
    summary: "x"
    when: [{resource: disk, gt: 90}]
  - name: two_kinds
    summary: "x"
    when: [{alert: A}]
"""
    )
    text = "\n".join(problems)
    assert re.search(r"cause two_kinds: when\.0: exactly one of .* \(found: alert, health_failing\)", text)
    assert re.search(r"cause stage_without_threshold: when\.0: a stage condition needs p95_gt", text)
    assert re.search(r"cause bad_action: actions\.0\.name: unknown action 'reboot\.everything'", text)
    assert re.search(r"cause bad_regex: when\.0: matching is not a regular expression", text)
    assert re.search(r"cause Not-Snake: name: must be lower_snake_case", text)
    assert re.search(r"cause no_when: when: ", text)
    assert re.search(r"cause ratio: when\.0\.gt: ", text)
    assert "cause two_kinds: name: defined twice" in text
    assert len(problems) == 8


def test_malformed_files_are_refused_with_the_reason() -> None:
    assert "not valid YAML" in problems_of("causes: [")[0]
    assert problems_of("- a\n- b") == ["expected a mapping with a 'causes' list"]
    assert "unknown top-level key(s): cause" in problems_of("causes: []\ncause: []")[0]
    assert problems_of("causes:\n  - name: x\n    when: [{alert: A}]")[0].startswith("cause x: summary:")


def test_a_summary_may_be_plain_text_or_zh_and_en() -> None:
    rules = load_diagnosis_rules(
        "causes:\n"
        "  - {name: a, summary: plain, when: [{alert: A}], actions: [cache.clear]}\n"
        "  - {name: b, summary: {zh: 数据库不可用}, when: [{alert: B}]}\n"
    )
    assert rules.causes[0].summary == {"en": "plain"} and rules.causes[1].summary == {"zh": "数据库不可用"}
    assert rules.causes[0].actions[0].name == "cache.clear" and rules.causes[0].actions[0].params == {}


def test_the_default_rules_read_signals_that_exist() -> None:
    """A rule naming an alert, a check, a stage or a log event nobody emits would never match."""
    rules = default_diagnosis_rules()
    names = {c.name for c in rules.causes}
    assert {
        "llm_provider_down",
        "llm_provider_slow",
        "llm_key_rejected",
        "vector_store_down",
        "embedding_engine_stuck",
        "database_down",
        "disk_full",
        "overload",
        "memory_pressure",
        "notification_channel_failing",
        "alert_evaluation_stalled",
        "redis_down",
    } <= names
    alerts = {r.name for r in default_rules().rules}
    source = "\n".join(p.read_text(encoding="utf-8") for p in SRC.rglob("*.py"))
    for cause in rules.causes:
        assert cause.runbook and cause.summary.get("en") and cause.summary.get("zh"), cause.name
        for cond in cause.when:
            if cond.alert:
                assert cond.alert in alerts, (cause.name, cond.alert)
            if cond.health_failing:
                assert cond.health_failing in RUNTIME_CHECKS, (cause.name, cond.health_failing)
            if cond.stage:
                assert cond.stage in STAGES, (cause.name, cond.stage)
            if cond.error:
                # logged by name, or by an error class of the hierarchy (``log_event``, logged by the API)
                pattern = rf'log\.\w+\(\s*"{cond.error}"|log_event\s*=\s*"{cond.error}"'
                assert re.search(pattern, source), (cause.name, cond.error)


def test_the_cli_checks_a_rule_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(default_diagnosis_text(), encoding="utf-8")
    r = CliRunner().invoke(cli_app, ["diagnose", "--check", str(good)])
    assert r.exit_code == 0 and "causes OK" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("causes:\n  - {name: x, summary: s, when: [{resource: gpu, gt: 0.5}]}\n", encoding="utf-8")
    r = CliRunner().invoke(cli_app, ["diagnose", "--check", str(bad)])
    assert r.exit_code == 2 and "cause x: when.0.resource" in r.output


# --- ranking -------------------------------------------------------------------------------------
def snapshot(**parts: object) -> Symptoms:
    return Symptoms(taken_at=T0, window_s=900, **parts)  # type: ignore[arg-type]


def alert(name: str, since: float, state: str = "firing", **labels: str) -> AlertSymptom:
    return AlertSymptom(name, state, "P1", {"alertname": name, **labels}, since)


def failing(name: str, since: float | None, error: str = "boom") -> CheckSymptom:
    return CheckSymptom(name, False, True, error, since)


def test_the_database_outage_ranks_first_with_its_evidence() -> None:
    s = snapshot(
        alerts=[alert("RagvigilUnhealthy", T0 - 20), alert("HighCPU", T0 - 600)],
        checks={"database": failing("database", T0 - 30, "OperationalError: connection refused")},
        errors=[ErrorSymptom("database_error", "ERROR", 5, T0 - 28, T0 - 1, "connection refused")],
        resources={"cpu": ResourceSymptom("cpu", 0.95, T0)},
    )
    ranked = rank(default_diagnosis_rules(), s, min_confidence=0.2)
    top = ranked[0]
    assert top.cause.name == "database_down"
    assert top.confidence == round((4 + 1 + 2) / (4 + 1 + 2 + 2 + 1 + 1), 3)
    signals = {e.signal: e for e in top.evidence}
    assert signals["health check database failing"].since == T0 - 30
    assert signals["health check database failing"].value.startswith("OperationalError")
    assert signals["alert RagvigilUnhealthy"].since == T0 - 20
    assert signals["log event database_error x5 (ERROR)"].since == T0 - 28
    assert top.since == T0 - 30  # the earliest evidence
    out = top.to_dict()
    assert out["actions"] == [{"name": "journal.replay", "params": {}}] and out["runbook"]
    assert "alert ChatTurnsJournaled active" in out["unmatched"]
    assert [m.cause.name for m in ranked][1] == "overload"  # also true, and less likely
    assert ranked[1].confidence < top.confidence


def test_a_required_symptom_that_is_absent_rules_the_cause_out() -> None:
    s = snapshot(
        alerts=[alert("RagvigilUnhealthy", T0)], errors=[ErrorSymptom("database_error", "ERROR", 9, T0, T0, "")]
    )
    assert "database_down" not in [m.cause.name for m in rank(default_diagnosis_rules(), s)]


def test_vector_store_and_llm_causes_are_told_apart() -> None:
    rules = default_diagnosis_rules()
    store = snapshot(
        alerts=[alert("VectorStoreDown", T0 - 5, check="vector_store")],
        checks={
            "vector_store": failing("vector_store", T0 - 9),
            "database": CheckSymptom("database", True, True, None, None),
        },
    )
    assert rank(rules, store)[0].cause.name == "vector_store_down"
    llm = snapshot(
        checks={"generator": failing("generator", T0 - 40, "ConnectError")},
        breakers=[BreakerSymptom("openai", "open", T0 - 35), BreakerSymptom("extractive", "closed", None)],
        errors=[ErrorSymptom("generator_failed", "WARNING", 7, T0 - 41, T0, "ConnectError", {"ConnectError": 7})],
    )
    top = rank(rules, llm)[0]
    assert top.cause.name == "llm_provider_down"
    assert "breaker openai open" in [e.signal for e in top.evidence]
    assert not any("extractive" in e.signal for e in top.evidence)
    key = snapshot(
        breakers=[BreakerSymptom("openai", "open", T0 - 3, {"key_bad": True})],
        errors=[ErrorSymptom("generator_failed", "WARNING", 2, T0, T0, "", {"Error code: 401 - invalid api key": 2})],
    )
    ranked = [m.cause.name for m in rank(rules, key)]
    assert ranked[0] == "llm_key_rejected"
    slow = snapshot(
        stages={"generate": StageSymptom("generate", 12.0, 40, "logs")}, alerts=[alert("HighP95Latency", T0)]
    )
    assert rank(rules, slow)[0].cause.name == "llm_provider_slow"


def test_without_a_provider_router_there_is_no_breaker_evidence() -> None:
    s = snapshot(breakers=None, checks={"generator": failing("generator", T0)})
    top = rank(default_diagnosis_rules(), s)[0]
    assert top.cause.name == "llm_provider_down" and "breaker * open" in top.to_dict()["unmatched"]


def test_confidence_is_matched_weight_over_total_and_ties_go_to_the_earliest() -> None:
    rules = load_diagnosis_rules(
        """
causes:
  - {name: late, summary: s, when: [{alert: B, weight: 3}, {alert: Z, weight: 1}]}
  - {name: early, summary: s, when: [{alert: A, weight: 3}, {alert: Z, weight: 1}]}
  - {name: weak, summary: s, when: [{alert: A, weight: 1}, {alert: Z, weight: 9}]}
"""
    )
    s = snapshot(alerts=[alert("A", T0 - 100), alert("B", T0 - 10), alert("Z", T0, state="pending")])
    ranked = rank(rules, s)
    assert [(m.cause.name, m.confidence) for m in ranked] == [("early", 0.75), ("late", 0.75), ("weak", 0.1)]
    assert [m.cause.name for m in rank(rules, s, min_confidence=0.2)] == ["early", "late"]


def test_error_conditions_count_only_matching_messages() -> None:
    rules = load_diagnosis_rules(
        "causes:\n  - {name: k, summary: s, when: [{error: generator_failed, matching: '40[13]', min_count: 3}]}\n"
    )
    few = snapshot(errors=[ErrorSymptom("generator_failed", "WARNING", 9, T0, T0, "", {"401": 2, "timeout": 7})])
    assert rank(rules, few) == []
    enough = snapshot(errors=[ErrorSymptom("generator_failed", "WARNING", 9, T0, T0, "", {"401": 2, "403": 1})])
    assert rank(rules, enough)[0].evidence[0].signal == "log event generator_failed x3 (WARNING)"


# --- the symptom sources -------------------------------------------------------------------------
def write_log(log_dir: Path, lines: list[tuple[float, int, str, dict]]) -> None:
    handlers = file_handlers(log_dir, JsonFormatter())
    for created, level, event, extra in lines:
        record = logging.LogRecord("ragvigil.test", level, __file__, 1, event, None, None)
        record.__dict__.update(extra)
        record.created = created
        for h in handlers:
            if level >= h.level:
                h.handle(record)
    for h in handlers:
        h.close()


def test_the_snapshot_reads_error_kinds_and_stage_latency_from_the_log_window(tmp_path: Path) -> None:
    now = time.time()
    lines = [(now - 5000, logging.ERROR, "database_error", {"error": "old, outside the window"})]
    lines += [(now - 60 + i, logging.ERROR, "database_error", {"error": f"refused {i % 2}"}) for i in range(4)]
    lines += [(now - 30, logging.WARNING, "generator_failed", {"error": "timed out"})]
    lines += [(now - 20, logging.INFO, "journal_replayed", {"turns": 3})]
    lines += [
        (now - 50 + i, logging.INFO, "http_request", {"stages_ms": {"generate": 100.0 * (i + 1)}}) for i in range(20)
    ]
    write_log(tmp_path, lines)
    s = SymptomCollector(SymptomSources(log_dir=tmp_path), window_s=900).snapshot(now)
    kinds = {e.event: e for e in s.errors}
    assert set(kinds) == {"database_error", "generator_failed"}  # INFO is not trouble
    db = kinds["database_error"]
    assert db.count == 4 and db.level == "ERROR" and db.messages == {"refused 0": 2, "refused 1": 2}
    assert abs(db.first_seen - (now - 60)) < 0.01 and db.example == "refused 1"
    assert s.stages["generate"].window == "logs" and s.stages["generate"].p95_s == pytest.approx(1.9)
    assert s.stages["generate"].count == 20


def test_a_check_is_failing_since_its_signal_turned_zero(tmp_path: Path) -> None:
    history = SignalHistory(retention_s=900)
    for i, up in enumerate([1, 1, 0, 0, 0]):
        history.add(T0 + 3 * i, [("ragvigil_health_check_up", {"check": "database"}, float(up))])
    results = [CheckResult("database", False, 3.0, "refused"), CheckResult("vector_store", True, 1.0)]
    collector = SymptomCollector(SymptomSources(health=lambda: results, history=lambda: history))
    s = collector.snapshot(T0 + 13)
    assert s.checks["database"].since == T0 + 6 and s.checks["vector_store"].since is None
    assert s.rollup["chat"] == "unhealthy" and s.rollup["generation"] == "healthy"


def test_without_history_a_check_is_failing_since_it_was_first_seen_failing() -> None:
    results = [CheckResult("embedding", False, 3.0, "stuck", critical=False)]
    collector = SymptomCollector(SymptomSources(health=lambda: results))
    collector.snapshot(T0)
    assert collector.snapshot(T0 + 30).checks["embedding"].since == T0


def test_a_broken_source_becomes_a_note_not_an_error() -> None:
    def broken() -> list[CheckResult]:
        raise RuntimeError("the check thread pool is gone")

    s = SymptomCollector(SymptomSources(health=broken, resources=lambda: {"cpu": 0.5, "disk": 0.97})).snapshot(T0)
    assert any(n.startswith("health: could not be read (RuntimeError") for n in s.notes)
    assert s.resources["disk"].value == 0.97 and s.breakers is None
    assert rank(default_diagnosis_rules(), s)[0].cause.name == "disk_full"


# --- the incident hook ---------------------------------------------------------------------------
def test_the_hook_runs_once_per_new_incident_after_it_is_committed(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    migrate(db.engine)
    calls: list[str] = []

    def on_opened(incident_id: str) -> None:
        calls.append(incident_id)
        store.add_event(incident_id, "diagnosis", {"likely_cause": "x"})  # a write of its own: committed first

    store = IncidentStore(db, on_opened=on_opened)
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(T0, UTC)
    a = AlertNotice({"alertname": "A", "severity": "P1"}, {}, "firing", start)
    b = AlertNotice({"alertname": "B", "severity": "P2"}, {}, "firing", start)
    opened = store.record([a], "g1")
    store.record([a], "g1")  # a repeated delivery
    store.record([b], "g1")  # joins the open incident of its group
    assert calls == opened and len(calls) == 1
    assert [e["kind"] for e in store.get(calls[0])["timeline"]] == [
        "opened",
        "alert_firing",
        "diagnosis",
        "alert_firing",
    ]

    def broken(_: str) -> None:
        raise RuntimeError("diagnosis failed")

    store.on_opened = broken
    c = AlertNotice({"alertname": "C", "severity": "P3"}, {}, "firing", start)
    assert len(store.record([c], "g2")) == 1  # still filed
    db.dispose()


def test_a_bad_rules_file_is_a_configuration_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragvigil.config_check import check_settings

    bad = tmp_path / "causes.yaml"
    bad.write_text("causes:\n  - {name: x, summary: s, when: [{alert: A}], actions: [nope]}\n", encoding="utf-8")
    monkeypatch.setenv("RAGVIGIL_DIAGNOSIS__RULES_FILE", str(bad))
    settings, problems = check_settings()
    assert settings is None
    assert any("diagnosis.rules_file" in str(p) and "cause x: actions.0.name" in str(p) for p in problems)


def test_the_log_read_is_bounded_in_bytes(tmp_path: Path) -> None:
    now = time.time()
    lines = [(now - 100 + i * 0.01, logging.WARNING, "generator_failed", {"error": "x" * 200}) for i in range(2000)]
    write_log(tmp_path, lines)
    size = (tmp_path / "application.log").stat().st_size
    s = SymptomCollector(SymptomSources(log_dir=tmp_path), max_log_bytes=size // 4).snapshot(now)
    counted = s.errors[0].count
    assert 400 < counted < 600  # about a quarter of the lines, none half-read
    assert any("only the last" in n for n in s.notes)


def test_incidents_opened_together_share_one_snapshot(tmp_path: Path) -> None:
    from ragvigil.ops.diagnosis import Diagnoser

    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    migrate(db.engine)
    runs: list[int] = []

    def health() -> list[CheckResult]:
        runs.append(1)
        return [CheckResult("disk", False, 1.0, "only 3 MB free")]

    diagnoser = Diagnoser(default_diagnosis_rules(), SymptomCollector(SymptomSources(health=health)))
    store = IncidentStore(db, on_opened=diagnoser.incident_opened)
    diagnoser.incidents = store
    from datetime import UTC, datetime

    start = datetime.now(UTC)
    for name in ("DiskFilling", "HighCPU"):
        store.record([AlertNotice({"alertname": name, "severity": "P2"}, {}, "firing", start)], f"g-{name}")
    assert len(runs) == 1
    for incident in store.list():
        written = [e for e in store.get(incident["id"])["timeline"] if e["kind"] == "diagnosis"]
        assert written[0]["detail"]["likely_cause"] == "disk_full"
    # the incident's own alert is among its evidence, not the other's
    disk = next(i for i in store.list() if i["title"].startswith("DiskFilling"))
    evidence = store.get(disk["id"])["timeline"][2]["detail"]["causes"][0]["evidence"]
    assert "alert DiskFilling" in [e["signal"] for e in evidence]
    assert diagnoser.diagnose()["causes"] and len(runs) == 2  # on demand: always fresh
    db.dispose()


def test_a_stalled_evaluator_is_a_symptom_even_though_its_engine_cannot_say_so() -> None:
    from prometheus_client import CollectorRegistry

    from ragvigil.ops.alerts.service import AlertService
    from ragvigil.ops.diagnosis.symptoms import engine_alerts

    service = AlertService(CollectorRegistry())
    service.tick(T0)
    read = engine_alerts(service)
    assert ("AlertEvaluationStalled", "firing") not in [(a.name, a.state) for a in read()]
    service.stalled = True  # what the watchdog sets when evaluation stops
    stalled = [a for a in read() if a.name == "AlertEvaluationStalled" and a.state == "firing"]
    assert stalled[0].source == "watchdog" and stalled[0].since == T0
    s = SymptomCollector(SymptomSources(alerts=read)).snapshot(T0 + 60)
    assert rank(default_diagnosis_rules(), s)[0].cause.name == "alert_evaluation_stalled"
