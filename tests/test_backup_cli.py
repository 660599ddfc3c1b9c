"""``ragvigil backup create|verify|list`` and ``ragvigil restore``: exit codes and what they print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragvigil.app import Runtime
from ragvigil.cli import app

runner = CliRunner()


def test_create_list_verify_and_restore_from_the_command_line(
    sample_runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample_runtime.close()
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(sample_runtime.settings.data_dir))
    out = tmp_path / "backups"
    r = runner.invoke(app, ["backup", "create", "--to", str(out), "--json"])
    assert r.exit_code == 0, r.output
    made = json.loads(r.output[r.output.index("{") :])
    path = Path(made["path"])
    assert path.parent == out and made["vectors"] > 0 and made["rows"] > 0 and made["encrypted"] is False

    r = runner.invoke(app, ["backup", "list", "--dir", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)[0]["file"] == path.name

    r = runner.invoke(app, ["backup", "verify", str(path)])
    assert r.exit_code == 0, r.output
    assert "integrity_check ok" in r.output and "smoke test" in r.output

    tampered = tmp_path / path.name
    tampered.write_bytes(path.read_bytes()[: path.stat().st_size - 20000])
    r = runner.invoke(app, ["backup", "verify", str(tampered), "--no-smoke"])
    assert r.exit_code == 1 and "FAILED" in r.output and str(tampered) in r.output.replace("\n", "")

    r = runner.invoke(app, ["restore", str(path)])  # into the live data dir: not empty
    assert r.exit_code == 1 and "not empty" in r.output

    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "restored"))
    r = runner.invoke(app, ["restore", str(path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "restored" / "ragvigil.db").exists() and (tmp_path / "restored" / "index").is_dir()
    r = runner.invoke(app, ["restore", str(path), "--force"])
    assert r.exit_code == 0 and "previous data is in" in r.output
