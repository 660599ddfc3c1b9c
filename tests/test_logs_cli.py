"""`ragvigil logs …` on the files a real instance wrote."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.cli import app as cli_app
from ragvigil.ops.logging import configure_logging, reset_logging
from tests.conftest import local_client


def test_logs_commands_read_what_the_service_wrote(sample_runtime: Runtime, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    configure_logging("INFO", log_dir, stream=open(tmp_path / "stdout.log", "w"), flush_interval=0.05)  # noqa: SIM115
    try:
        with local_client(create_app(runtime=sample_runtime)) as c:
            first = c.post("/api/v1/chat", json={"message": "How do I export my notes?", "user_id": "u-7"}).json()
            follow = {"session_id": first["session_id"], "user_id": "u-7"}
            c.post("/api/v1/chat", json={"message": "Is there a page limit?", **follow})
            c.post("/api/v1/chat", json={"message": "专业版年付多少钱？"})
            logging.getLogger("ragvigil.test").error("vector_fill_failed", extra={"error": "disk full"})
    finally:
        reset_logging()
    runner = CliRunner()

    def run(*args: str) -> dict:
        res = runner.invoke(cli_app, ["logs", *args, "--json", "--log-dir", str(log_dir)])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    stages = {row["name"]: row for row in run("latency", "--by", "stage")["result"]}
    assert {"history", "retrieve", "generate", "persist"} <= stages.keys()
    assert stages["persist"]["count"] == 3
    routes = {row["name"]: row["count"] for row in run("latency")["result"]}
    assert routes["POST /api/v1/chat"] == 3

    session = run("session", first["session_id"])["result"]
    events = [r["event"] for r in session]
    assert events.count("http_request") == 2 and all(r["session_id"] == first["session_id"] for r in session)

    user = run("user", "u-7")["result"]
    assert user and all(r["user_id"] == "u-7" for r in user)

    errors = run("errors")["result"]
    assert errors[0]["event"] == "vector_fill_failed" and errors[0]["count"] == 1
    assert run("levels")["result"]["ERROR"] == 1

    bad = runner.invoke(cli_app, ["logs", "levels", "--since", "yesterday-ish", "--log-dir", str(log_dir)])
    assert bad.exit_code == 2
