"""``config check`` (and every command that loads settings) lists each problem with its source and exits 2,
never a traceback; ``config show`` masks every secret-typed setting, found by its type."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
from typer.testing import CliRunner

from ragvigil.cli import app
from ragvigil.config import Settings, field_types, masked_dump
from ragvigil.config_check import check_settings

runner = CliRunner()


def _check() -> tuple[int, str, BaseException | None]:
    result = runner.invoke(app, ["config", "check"])
    return result.exit_code, result.output, result.exception


def _no_traceback(exc: BaseException | None, output: str) -> None:
    assert exc is None or isinstance(exc, SystemExit), repr(exc)
    assert "Traceback" not in output


def test_broken_json_in_an_env_var_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_ALERTS__CHANNELS", "[{bad")
    code, out, exc = _check()
    _no_traceback(exc, out)
    assert code == 2 and "RAGVIGIL_ALERTS__CHANNELS" in out and "not valid JSON" in out, out
    assert len(out.splitlines()) < 10


def test_malformed_toml_names_the_file_and_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "ragvigil.toml"
    toml.write_text("port = 8000\nhost = \n", encoding="utf-8")
    monkeypatch.setenv("RAGVIGIL_CONFIG_FILE", str(toml))
    code, out, exc = _check()
    _no_traceback(exc, out)
    assert code == 2 and "ragvigil.toml" in out and "not valid TOML" in out and "line 2" in out, out


def test_a_named_config_file_that_does_not_exist_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAGVIGIL_CONFIG_FILE", str(tmp_path / "nonexistent.toml"))
    code, out, exc = _check()
    _no_traceback(exc, out)
    assert code == 2 and "RAGVIGIL_CONFIG_FILE" in out and "does not exist" in out and "configuration ok" not in out


def test_a_misspelt_variable_is_a_warning_with_the_closest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_PROT", "9000")
    settings, problems = check_settings(_env_file=None)
    assert settings is not None  # a warning does not stop the settings from loading
    assert [(p.level, p.source) for p in problems] == [("warning", "RAGVIGIL_PROT")]
    assert "did you mean RAGVIGIL_PORT?" in problems[0].message
    code, out, exc = _check()
    _no_traceback(exc, out)
    assert code == 2 and "did you mean RAGVIGIL_PORT?" in out


def test_a_misspelt_nested_variable_is_an_error_with_the_closest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_ALERTS__EVAL_INTERVALL", "5")
    settings, problems = check_settings(_env_file=None)
    assert settings is None
    assert [(p.level, p.source) for p in problems] == [("error", "RAGVIGIL_ALERTS__EVAL_INTERVALL")]
    assert "did you mean alerts.eval_interval?" in problems[0].message


def test_valid_nested_and_dict_names_are_not_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_OPENAI__MODEL", "qwen")
    monkeypatch.setenv("RAGVIGIL_ALERTS__ROUTING__GROUP_WAIT", "3")
    monkeypatch.setenv("RAGVIGIL_TEST_PG_BINDIR", "/nowhere")  # the test suite's own knob
    settings, problems = check_settings(_env_file=None)
    assert settings is not None and problems == []


def test_a_typo_inside_a_toml_section_is_an_error_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toml = tmp_path / "ragvigil.toml"
    toml.write_text('[openai]\nmodle = "qwen"\n', encoding="utf-8")
    monkeypatch.setenv("RAGVIGIL_CONFIG_FILE", str(toml))
    settings, problems = check_settings(_env_file=None)
    assert settings is None
    assert [(p.level, p.source) for p in problems] == [("error", str(toml))]
    assert "did you mean openai.model?" in problems[0].message


def test_validation_errors_name_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_PORT", "70000")
    _, problems = check_settings(_env_file=None)
    assert [(p.source, p.message.split(":")[0]) for p in problems] == [("RAGVIGIL_PORT", "port")]


def test_serve_with_a_broken_config_lists_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGVIGIL_ALERTS__CHANNELS", "[{bad")
    result = runner.invoke(app, ["serve", "--port", "1"])
    _no_traceback(result.exception, result.output)
    assert result.exit_code == 2 and "RAGVIGIL_ALERTS__CHANNELS" in result.output


TOKENS = ("T000/B000/XXXXSLACK", "dingtok123", "feishuhook456", "wecomkey789", "hbuuid-42", "otlppass", "hunter2")


def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    channels = [
        {"name": "slack", "type": "slack", "url": "https://hooks.slack.com/services/T000/B000/XXXXSLACK"},
        {"name": "ding", "type": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=dingtok123"},
        {"name": "fs", "type": "feishu", "url": "https://open.feishu.cn/open-apis/bot/v2/hook/feishuhook456"},
        {"name": "wc", "type": "wecom", "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=wecomkey789"},
    ]
    monkeypatch.setenv("RAGVIGIL_ALERTS__CHANNELS", json.dumps(channels))
    monkeypatch.setenv("RAGVIGIL_ALERTS__HEARTBEAT_URL", "https://hc-ping.com/hbuuid-42")
    monkeypatch.setenv("RAGVIGIL_OTLP_ENDPOINT", "http://collector:otlppass@127.0.0.1:4318/v1/traces")
    monkeypatch.setenv("RAGVIGIL_DATABASE_URL", "postgresql+psycopg://app:hunter2@db:5432/rv")


def test_config_show_masks_webhook_heartbeat_otlp_and_database_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _secret_env(monkeypatch)
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    for token in TOKENS:
        assert token not in result.output, token
    shown = json.loads(result.stdout)
    assert shown["database_url"] == "postgresql+psycopg://app:********@db:5432/rv"
    assert shown["otlp_endpoint"] == "http://collector:********@127.0.0.1:4318/v1/traces"
    assert [c["url"] for c in shown["alerts"]["channels"]] == [
        "https://hooks.slack.com/********",
        "https://oapi.dingtalk.com/********",
        "https://open.feishu.cn/********",
        "https://qyapi.weixin.qq.com/********",
    ]
    assert shown["alerts"]["heartbeat_url"] == "https://hc-ping.com/********"


def test_the_values_are_still_there_for_the_code_that_uses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    _secret_env(monkeypatch)
    s = Settings(_env_file=None)
    assert s.db_url == "postgresql+psycopg://app:hunter2@db:5432/rv"
    assert s.alerts.channels[1].url is not None and "dingtok123" in s.alerts.channels[1].url.get_secret_value()
    assert "hunter2" not in repr(s) and "dingtok123" not in repr(s)


def test_a_rejected_secret_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    channels = [{"name": "a", "type": "slack", "url": "https://hooks.slack.com/services/SECRETPATH"}] * 2
    monkeypatch.setenv("RAGVIGIL_ALERTS__CHANNELS", json.dumps(channels))  # duplicate names: the list is rejected
    monkeypatch.setenv("RAGVIGIL_MESSAGE_LOG_KEY", "not-a-fernet-key-but-secret")
    monkeypatch.setenv("RAGVIGIL_LOG_MESSAGE_CONTENTS", "true")
    code, out, _ = _check()
    assert code == 2 and "unique" in out
    assert "SECRETPATH" not in out and "not-a-fernet-key-but-secret" not in out


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for name, field in model.model_fields.items():
        out.append((prefix + name, field.annotation))
        for t in field_types(field.annotation):
            for sub in (t, *typing.get_args(t)):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    out.extend(_fields(sub, f"{prefix}{name}."))
    return out


def test_every_credential_or_url_setting_is_a_secret_type() -> None:
    """A guard for new fields: a URL, endpoint, key, password, secret or token setting must be SecretStr-typed
    (or a masked URL type), so ``config show`` masks it without anyone listing it."""
    # a public URL; a switch, not the key itself; a rate per key, not a key
    public = {"alerts.external_url", "first_start_admin_key", "admission.per_key"}
    hints = ("url", "endpoint", "key", "password", "secret", "token")
    for path, annotation in _fields(Settings):
        leaf = path.rsplit(".", 1)[-1]
        if path in public or not set(leaf.split("_")) & set(hints):
            continue
        types_ = field_types(annotation)
        assert any(isinstance(t, type) and issubclass(t, SecretStr) for t in types_), (path, annotation)


def test_masked_dump_masks_any_secret_field_without_a_list(tmp_path: Path) -> None:
    s = Settings(_env_file=None, data_dir=tmp_path, openai={"api_key": "sk-xyz123456789"})
    dumped = masked_dump(s)
    assert dumped["openai"]["api_key"] == "********" and "sk-xyz" not in json.dumps(dumped)
    assert dumped["openai"]["base_url"] == "http://127.0.0.1:8080/v1"  # no credentials in it: shown whole


def test_the_uvicorn_factory_prints_the_problems_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ragvigil.api.server import app_from_env

    monkeypatch.setenv("RAGVIGIL_ALERTS__CHANNELS", "[{bad")
    with pytest.raises(SystemExit) as exc:
        app_from_env()
    assert exc.value.code == 2
    assert "RAGVIGIL_ALERTS__CHANNELS: not valid JSON" in capsys.readouterr().err
