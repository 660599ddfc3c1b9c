from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ragvigil.cli import app
from ragvigil.config import Settings, describe_errors, masked_dump


def test_profiles_change_defaults(tmp_path: Path) -> None:
    dev = Settings(_env_file=None, data_dir=tmp_path)
    prod = Settings(_env_file=None, data_dir=tmp_path, profile="production")
    assert dev.log_level == "DEBUG" and dev.api_docs
    assert prod.log_level == "INFO" and not prod.api_docs and not prod.expose_errors
    # an explicit value wins over the profile default
    assert Settings(_env_file=None, profile="production", log_level="WARNING").log_level == "WARNING"


def test_env_vars_nested_and_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "ragvigil.toml"
    toml.write_text('port = 9001\ngenerator = "openai"\n[openai]\nmodel = "qwen-plus"\n', encoding="utf-8")
    monkeypatch.setenv("RAGVIGIL_CONFIG_FILE", str(toml))
    monkeypatch.setenv("RAGVIGIL_OPENAI__BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("RAGVIGIL_PORT", "9002")
    s = Settings(_env_file=None)
    assert s.port == 9002  # env beats the TOML file
    assert s.generator == "openai" and s.openai.model == "qwen-plus"
    assert s.openai.base_url.get_secret_value() == "http://127.0.0.1:1/v1"


def test_every_invalid_field_is_reported_with_its_path() -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None, port=0, retrieval={"chunk_chars": 10, "top_k": 0}, generator="gpt")
    lines = describe_errors(exc.value)
    joined = "\n".join(lines)
    for path in ("port", "retrieval.chunk_chars", "retrieval.top_k", "generator"):
        assert any(line.startswith(path + ":") for line in lines), joined


def test_config_check_cli_exit_codes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner = CliRunner()
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path))
    ok = runner.invoke(app, ["config", "check"])
    assert ok.exit_code == 0, ok.output
    monkeypatch.setenv("RAGVIGIL_PORT", "70000")
    monkeypatch.setenv("RAGVIGIL_RETRIEVAL__CHUNK_OVERLAP", "-1")
    bad = runner.invoke(app, ["config", "check"])
    assert bad.exit_code == 2
    assert "port" in bad.output and "retrieval.chunk_overlap" in bad.output


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAGVIGIL_OPENAI__API_KEY", "sk-very-secret")
    monkeypatch.setenv("RAGVIGIL_DATABASE_URL", "postgresql+psycopg://app:hunter2@db:5432/rv")
    s = Settings(_env_file=None, data_dir=tmp_path)
    dumped = str(masked_dump(s))
    assert "sk-very-secret" not in dumped and "hunter2" not in dumped
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0
    assert "sk-very-secret" not in result.output and "hunter2" not in result.output
    assert "********" in result.output
