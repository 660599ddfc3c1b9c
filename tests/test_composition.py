"""The composition root: process-wide state per runtime, the health graph's trap, one start check, real servers."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.chat.sessions import StoredMessage
from ragvigil.cli import app as cli_app
from ragvigil.ops import instrumentation, semconv
from ragvigil.ops.health import DEPENDENCIES, HEALTH_COLLECTOR, CheckOutsideGraph, HealthChecks
from tests.conftest import local_client, make_settings
from tests.realservers import ServerStartError, ragvigil_server, wait_until


def _in_force() -> tuple[object, bool, bool]:
    return HEALTH_COLLECTOR.checks, instrumentation.enabled, semconv.contents_captured()


def test_two_runtimes_leave_each_other_their_process_settings_whatever_order_they_close(tmp_path: Path) -> None:
    key = "yxSkL3IXOZbqjyoaCPf1fTmUqUAN5OFKzvKbD9xTf0I="  # a Fernet key: kept contents need one
    before = _in_force()
    a = Runtime(make_settings(tmp_path / "a", instrumentation=False, log_message_contents=True, message_log_key=key))
    try:
        b = Runtime(make_settings(tmp_path / "b"))
        assert _in_force() == (b.health, True, False)
        b.close()
        assert _in_force() == (a.health, False, True)  # A is still serving: its choices are back
        b = Runtime(make_settings(tmp_path / "b2"))
        a.close()  # the older one closes first: the newer one keeps its own
        assert _in_force() == (b.health, True, False)
        b.close()
        assert _in_force() == before
    finally:
        a.close()


def test_a_critical_check_outside_the_dependency_graph_is_refused() -> None:
    checks = HealthChecks(graph=DEPENDENCIES)  # as the runtime builds it
    with pytest.raises(CheckOutsideGraph, match="could never fail readiness"):
        checks.add("cache", lambda: None)


def test_an_optional_check_outside_the_graph_is_said_out_loud(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ragvigil.ops.health"):
        HealthChecks(graph=DEPENDENCIES).add("cache", lambda: None, critical=False)
    assert [r.message for r in caplog.records] == ["health_check_outside_graph"]


def test_a_check_placed_with_needed_by_moves_readiness(empty_runtime: Runtime) -> None:
    def broken() -> None:
        raise OSError("cache server refused the connection")

    empty_runtime.health.add("cache", broken, needed_by="retrieval")
    with local_client(create_app(runtime=empty_runtime)) as c:
        ready = c.get("/health/ready")
        deep = c.get("/health").json()
    assert ready.status_code == 503 and ready.json()["status"] == "unready"
    assert {"name": "cache", "required": True} in deep["graph"]["retrieval"]["depends_on"]
    assert HealthChecks(graph=DEPENDENCIES).graph["retrieval"] == [  # placed on that instance's graph only
        ("database", True),
        ("vector_store", False),
        ("embedding", False),
    ]


def test_a_dead_notification_channel_shows_in_the_graph_without_making_the_service_unready(
    empty_runtime: Runtime,
) -> None:
    def down() -> None:
        raise RuntimeError("notification channel(s) down: ops: connection refused")

    empty_runtime.health.add("notifications", down, critical=False)  # what build_alerting adds, failing
    with local_client(create_app(runtime=empty_runtime)) as c:
        deep = c.get("/health").json()
        ready = c.get("/health/ready")
    assert deep["graph"]["alerting"]["status"] == "degraded"
    assert deep["graph"]["chat"]["status"] == "healthy" and ready.status_code == 200


def test_config_check_refuses_what_serve_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGVIGIL_PROFILE", "production")
    runner = CliRunner()
    served = runner.invoke(cli_app, ["serve", "--port", "1"])
    checked = runner.invoke(cli_app, ["config", "check"])
    assert served.exit_code == 2 and "no active admin API key" in served.output
    assert checked.exit_code == 2 and "no active admin API key" in checked.output
    assert "configuration ok" not in checked.output
    assert runner.invoke(cli_app, ["keys", "create", "ops-lead", "--role", "admin"]).exit_code == 0
    assert runner.invoke(cli_app, ["config", "check"]).exit_code == 0


def test_a_rule_file_that_does_not_load_is_refused_by_config_check_and_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text("groups: [{name: g, rules: [{alert: X, expr: 'rate(', labels: {severity: P1}}]}]\n")
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGVIGIL_ALERTS__RULES_FILE", str(rules))
    runner = CliRunner()
    for args in (["config", "check"], ["serve", "--port", "1"]):
        result = runner.invoke(cli_app, args)
        assert result.exit_code == 2 and "alert rules rejected" in result.output, args


def test_the_journal_replayer_moves_turns_on_its_own(tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path / "data"))
    try:
        rt.replayer._job.interval_s = 0.05  # the loop under test, not its five-second pace
        rt.journal.write("s-loop", "default", None, [StoredMessage("m1", "user", "hello", datetime.now(UTC))])
        rt.replayer.start()
        wait_until(lambda: rt.journal.pending() == [], 30, "the replayer to empty the journal")
        assert [m.content for m in rt.sessions.messages("s-loop")] == ["hello"]
    finally:
        rt.close()
    assert not rt.replayer._job.running


def test_serve_instance_answers_on_loopback_and_is_stopped(serve_instance) -> None:  # type: ignore[no-untyped-def]
    server = serve_instance(env={"RAGVIGIL_ALERTS__ENABLED": "false", "RAGVIGIL_BACKGROUND_EMBEDDING": "false"})
    assert server.startswith("http://127.0.0.1:")
    assert httpx.get(f"{server}/health/ready", timeout=10).json()["status"] in ("ready", "degraded")
    # a request uvicorn's parser rejects never reaches the app: it still gets the API's JSON error body
    status, headers, body = raw_request(server, b"GET /health HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n")
    assert status == 400 and headers.get("content-type") == "application/json", (status, headers, body)
    assert json.loads(body)["code"] == "bad_http_request"
    assert server.death() is None


def raw_request(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP client would and read the whole answer (the server closes after a 400)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, body


def test_a_server_that_refuses_to_start_says_why(tmp_path: Path) -> None:
    with (
        pytest.raises(ServerStartError, match="not loopback"),
        ragvigil_server(tmp_path / "data", args=["--host", "0.0.0.0"], startup_timeout=60),
    ):
        pass
