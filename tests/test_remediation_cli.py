"""A bad policy file is refused before anything runs: `remediation check`, `config check` and `serve` say why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragvigil.cli import app

runner = CliRunner()
BAD = "policies:\n  - name: typo\n    match: {alert: ChatTurnsJournaled}\n    action: journal.replya\n"
GOOD = (
    "policies:\n  - name: replay\n    match: {alert: ChatTurnsJournaled}\n    action: journal.replay\n"
    "    verify: {window: 30s, signal: ragvigil_journal_pending_turns, below: 1}\n"
)


def test_check_names_the_policy_and_field_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    result = runner.invoke(app, ["remediation", "check", str(bad)])
    assert result.exit_code == 2 and "policy typo: action: unknown action 'journal.replya'" in result.output
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    result = runner.invoke(app, ["remediation", "check", str(good)])
    assert result.exit_code == 0 and "1 policies, valid" in result.output


def test_a_bad_configured_policy_file_is_a_config_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGVIGIL_REMEDIATION__POLICIES_FILE", str(bad))
    for args in (["config", "check"], ["serve", "--port", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "RAGVIGIL_REMEDIATION__POLICIES_FILE" in result.output and "journal.replya" in result.output
        assert "Traceback" not in result.output


def test_policies_lists_the_configured_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGVIGIL_REMEDIATION__POLICIES_FILE", str(good))
    result = runner.invoke(app, ["remediation", "policies", "--json"])
    assert result.exit_code == 0 and [p["name"] for p in json.loads(result.stdout)] == ["replay"]
    monkeypatch.delenv("RAGVIGIL_REMEDIATION__POLICIES_FILE")
    result = runner.invoke(app, ["remediation", "policies", "--json"])
    assert result.exit_code == 0 and "replay-journal" in [p["name"] for p in json.loads(result.stdout)]
    table = runner.invoke(app, ["remediation", "policies"], env={"COLUMNS": "300"})
    assert table.exit_code == 0 and "replay-journal" in table.output and "journal.replay" in table.output
