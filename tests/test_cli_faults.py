"""``ragvigil safe-mode`` and ``ragvigil faults`` against a real server on loopback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragvigil.api.server import create_app
from ragvigil.cli import app as cli_app
from tests.conftest import LiveServer, make_settings

runner = CliRunner()


def test_the_commands_switch_safe_mode_and_faults_on_a_running_instance(
    sample_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(d))  # where the commands find the stored admin key
    with LiveServer(create_app(make_settings(d, faults={"enabled": True}))) as base:

        def run(*args: str) -> tuple[int, str]:
            res = runner.invoke(cli_app, [*args, "--url", base])
            return res.exit_code, res.stdout

        code, out = run("safe-mode", "on", "safety filter down")
        assert code == 0 and "ON" in out and "safety filter down" in out
        code, out = run("safe-mode", "status", "--json")
        assert code == 0 and json.loads(out)["active"] is True
        code, out = run("safe-mode", "off")
        assert code == 0 and "off" in out

        code, out = run("faults", "inject", "vector_store", "error", "--duration", "30", "--json")
        assert code == 0, out
        fault = json.loads(out)
        assert fault["target"] == "vector_store" and fault["duration_s"] == 30
        code, out = run("faults", "list")
        assert code == 0 and fault["id"] in out
        code, out = run("faults", "clear", fault["id"])
        assert code == 0 and f"cleared {fault['id']}" in out
        code, out = run("faults", "list", "--json")
        assert json.loads(out) == {"faults": []}

        code, out = run("faults", "inject", "safety", "off", "--duration", "30", "--json")
        assert code == 0, out
        assert json.loads(out)["target"] == "safety" and json.loads(out)["kind"] == "off"
        code, out = run("faults", "clear")
        assert code == 0 and "cleared 1 fault(s)" in out

        res = runner.invoke(cli_app, ["faults", "inject", "database", "malformed", "--url", base])
        assert res.exit_code == 1 and "422 validation_error" in " ".join(res.output.split())
        code, out = run("faults", "clear")
        assert code == 0 and "cleared 0 fault(s)" in out
