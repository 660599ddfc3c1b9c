"""The signal recording, backtests over it, and monitoring the monitor (stall watchdog, heartbeat)."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

from typer.testing import CliRunner

from ragvigil.cli import app as cli_app
from ragvigil.ops.alerts.recording import SignalRecorder, backtest, load_recording
from ragvigil.ops.alerts.rules import load_rules
from ragvigil.ops.alerts.service import AlertService
from ragvigil.ops.metrics import REGISTRY
from tests.receivers import http_receiver

RULE = "groups:\n  - name: b\n    rules:\n" + textwrap.indent(
    textwrap.dedent(
        """\
        - alert: Errors
          expr: sum(rate(errors_total[1m])) > 0.5
          for: 30s
          labels: {severity: P2}
        """
    ),
    "      ",
)
HOUR = 3600.0


def record_errors(recorder: SignalRecorder, start: float, seconds: int, burst: tuple[int, int]) -> None:
    """errors_total grows by 15 per 15 s during ``burst`` (1/s), otherwise stays; one route appears late."""
    total = 0.0
    for i in range(0, seconds, 15):
        if burst[0] <= i < burst[1]:
            total += 15
        samples = [("errors_total", {"route": "/a"}, total)]
        if i >= 600:
            samples.append(("errors_total", {"route": "/late"}, 0.0))
        recorder.write(start + i, samples)


def test_recording_rolls_hours_into_gzip_and_reads_back(tmp_path: Path) -> None:
    start = 1_700_000_000 - (1_700_000_000 % HOUR) + HOUR - 300  # five minutes before an hour ends
    recorder = SignalRecorder(tmp_path, retention_s=10 * 365 * 86400)
    record_errors(recorder, start, 1200, (0, 0))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].endswith(".jsonl.gz") and names[1].endswith(".jsonl")
    history = load_recording(tmp_path, start, start + 1200)
    routes = {dict(lb)["route"] for lb, _, _ in history.select("errors_total", start, start + 1200)}
    assert routes == {"/a", "/late"}
    assert len(next(iter(history.select("errors_total", start, start + 1200)))[1]) == 80


def test_backtest_shows_when_a_rule_would_have_fired_and_resolved(tmp_path: Path) -> None:
    start = 1_700_000_000.0
    recorder = SignalRecorder(tmp_path, retention_s=10 * 365 * 86400)
    record_errors(recorder, start, 1800, (600, 900))  # errors from minute 10 to minute 15
    rules = load_rules(RULE)
    history = load_recording(tmp_path, start, start + 1800, rules.metric_names())
    episodes = backtest(rules, history, start, start + 1800, 15)
    assert len(episodes) == 1
    e = episodes[0]
    assert 600 <= e.pending_at - start <= 660 and e.fired_at - e.pending_at >= 30  # type: ignore[operator]
    assert 900 <= e.resolved_at - start <= 990  # type: ignore[operator]


def test_the_backtest_command_reads_the_service_recording(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(data))
    record_errors(SignalRecorder(data / "signals"), time.time() - 1800, 1800, (600, 900))
    (tmp_path / "rules.yml").write_text(RULE)
    out = CliRunner().invoke(cli_app, ["alerts", "backtest", str(tmp_path / "rules.yml"), "--since", "1h", "--json"])
    assert out.exit_code == 0, out.output
    episodes = json.loads(out.stdout)
    assert [e["rule"] for e in episodes] == ["Errors"] and episodes[0]["fired_at"] and episodes[0]["resolved_at"]
    empty = CliRunner().invoke(cli_app, ["alerts", "backtest", str(tmp_path / "rules.yml"), "--since", "1h"])
    assert empty.exit_code == 0
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "nothing"))
    none = CliRunner().invoke(cli_app, ["alerts", "backtest", str(tmp_path / "rules.yml"), "--since", "1h"])
    assert none.exit_code == 1 and "no recorded signals" in none.output


def test_heartbeat_flows_while_evaluating_and_stops_when_evaluation_stalls(tmp_path: Path) -> None:
    rules = tmp_path / "r.yml"
    rules.write_text(RULE)
    with http_receiver() as dms:
        stalls: list[tuple[bool, float]] = []
        service = AlertService(
            REGISTRY,
            rules,
            eval_interval=0.1,
            stall_after=0.5,
            heartbeat_url=dms.url,
            heartbeat_interval=0.1,
            on_stall=lambda stalled, since: stalls.append((stalled, since)),
        )
        service.start()
        try:
            assert len(dms.wait_for(2, timeout=10)) >= 2 and dms.requests[0].body["service"] == "ragvigil"
            service._stop.set()  # the evaluator and the watchdog stop
            for t in service._threads:
                t.join(5)
            service._stop.clear()
            service._threads = []
            # only the watchdog again: evaluation has now stalled
            import threading

            watchdog = threading.Thread(target=service._watchdog, daemon=True)
            watchdog.start()
            deadline = time.monotonic() + 5
            while not service.stalled and time.monotonic() < deadline:
                time.sleep(0.05)
            assert service.stalled and service.status()["stalled"] is True
            assert [s for s, _ in stalls] == [True]  # the watchdog raised the stall alert itself
            count = len(dms.requests)
            time.sleep(0.5)
            assert len(dms.requests) == count  # no heartbeat while stalled
        finally:
            service.stop()
