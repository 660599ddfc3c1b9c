"""Conversation text is kept only when enabled, encrypted at rest, and readable only with the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ragvigil.app import Runtime
from ragvigil.chat.pipeline import Turn
from ragvigil.cli import app as cli_app
from ragvigil.config import Settings
from ragvigil.ops.message_log import FILE_NAME, new_key
from tests.conftest import CHAT_STAGES, make_settings


def test_off_by_default_nothing_is_written(sample_runtime: Runtime) -> None:
    sample_runtime.pipeline.run(Turn(message="我的手机号是13812345678，怎么退款？", kb="default"))
    assert not (sample_runtime.settings.log_dir / FILE_NAME).exists()
    assert tuple(s.name for s in sample_runtime.pipeline.stages) == CHAT_STAGES


def test_enabled_contents_are_encrypted_and_readable_with_the_key(
    sample_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    d = tmp_path / "data"
    shutil.copytree(sample_data_dir, d)
    rt = Runtime(make_settings(d, log_message_contents=True, message_log_key=key))
    try:
        turn = rt.pipeline.run(Turn(message="专业版年付多少钱？", kb="default", user_id="u1"))
    finally:
        rt.close()
    raw = (d / "logs" / FILE_NAME).read_bytes()
    assert "专业版".encode() not in raw and b"268" not in raw

    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(d))
    monkeypatch.setenv("RAGVIGIL_LOG_MESSAGE_CONTENTS", "true")
    monkeypatch.setenv("RAGVIGIL_MESSAGE_LOG_KEY", key)
    runner = CliRunner()
    out = runner.invoke(cli_app, ["logs", "messages", "--json", "--session", turn.session_id])
    assert out.exit_code == 0, out.output
    records = json.loads(out.stdout)
    assert records[0]["question"] == "专业版年付多少钱？" and "¥268" in records[0]["answer"]

    monkeypatch.setenv("RAGVIGIL_MESSAGE_LOG_KEY", new_key())
    wrong = runner.invoke(cli_app, ["logs", "messages"])
    assert wrong.exit_code == 2 and "does not decrypt" in wrong.output


def test_enabling_without_a_valid_key_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="message_log_key must be a Fernet key"):
        Settings(_env_file=None, log_message_contents=True)
    with pytest.raises(ValidationError, match="message_log_key must be a Fernet key"):
        Settings(_env_file=None, log_message_contents=True, message_log_key="not-a-key")
