"""``ragvigil config example``: every setting of the tree, loading back into the defaults, never drifting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values
from typer.testing import CliRunner

from ragvigil.cli import app
from ragvigil.config import Settings
from ragvigil.config_example import entries, render

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "ragvigil.env.example"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No RAGVIGIL_* variable of the caller's, no .env or ragvigil.toml of the working directory."""
    for var in list(os.environ):
        if var.startswith("RAGVIGIL_") and var != "RAGVIGIL_CONFIG_FILE":
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _defaults() -> dict[str, object]:
    return Settings(_env_file=None).model_dump(mode="json")  # type: ignore[call-arg]


def test_committed_example_is_the_generated_one() -> None:
    """Regenerate with `ragvigil config example > deploy/ragvigil.env.example` after adding a setting."""
    assert EXAMPLE.read_text(encoding="utf-8") == render("env")


def test_every_leaf_setting_is_in_the_example() -> None:
    text = render("env")
    names = [e.env_name for e in entries()]
    assert "RAGVIGIL_ALERTS__ROUTING__GROUP_WAIT" in names and "RAGVIGIL_REDIS__URL" in names
    for name in names:
        assert f"{name}=" in text, name
    assert len(names) == len(set(names))


def test_example_env_file_loads_back_into_the_defaults(clean_env: Path) -> None:
    env_file = clean_env / "example.env"
    env_file.write_text(render("env"), encoding="utf-8")
    assert Settings(_env_file=env_file).model_dump(mode="json") == _defaults()  # type: ignore[call-arg]


def test_example_as_environment_variables_loads_back(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The way systemd's EnvironmentFile= or a Kubernetes ConfigMap hands it over: as process variables."""
    env_file = clean_env / "example.env"
    env_file.write_text(render("env"), encoding="utf-8")
    values = dotenv_values(env_file)
    assert len(values) > 100
    for k, v in values.items():
        monkeypatch.setenv(k, v or "")
    assert Settings(_env_file=None).model_dump(mode="json") == _defaults()  # type: ignore[call-arg]


def test_yaml_example_loads_back_into_the_defaults(clean_env: Path) -> None:
    data = yaml.safe_load(render("yaml"))
    assert data["alerts"]["routing"]["group_wait"] == 10.0
    assert Settings(_env_file=None, **data).model_dump(mode="json") == _defaults()  # type: ignore[call-arg]


def test_comments_carry_descriptions_bounds_and_allowed_values() -> None:
    lines = render("env").splitlines()

    def comment_of(name: str) -> str:
        i = next(i for i, line in enumerate(lines) if line.lstrip("# ").startswith(f"{name}="))
        return lines[i - 1]

    assert comment_of("RAGVIGIL_SHUTDOWN_GRACE_S").startswith("# after SIGTERM: seconds in-flight requests")
    assert comment_of("RAGVIGIL_SHUTDOWN_GRACE_S").endswith(">= 0, <= 3600")
    assert "a JSON list of objects with name, type, url" in comment_of("RAGVIGIL_ALERTS__CHANNELS")
    assert "one of: extractive, openai" in comment_of("RAGVIGIL_GENERATOR")
    assert ">= 1, <= 65535" in comment_of("RAGVIGIL_PORT")
    assert "default by profile: development DEBUG" in comment_of("RAGVIGIL_LOG_LEVEL")


def test_secrets_are_empty_even_when_set(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example is of the code's defaults: a secret in the caller's environment never reaches it."""
    monkeypatch.setenv("RAGVIGIL_OPENAI__API_KEY", "sk-very-secret")
    monkeypatch.setenv("RAGVIGIL_REDIS__URL", "redis://:hunter2@redis:6379/0")
    outputs = {}
    for fmt in ("env", "yaml"):
        out = CliRunner().invoke(app, ["config", "example", "--format", fmt])
        assert out.exit_code == 0, out.output
        assert "sk-very-secret" not in out.output and "hunter2" not in out.output
        outputs[fmt] = out.output
    assert "\nRAGVIGIL_OPENAI__API_KEY=\n" in outputs["env"]
    assert "\n# RAGVIGIL_REDIS__URL=\n" in outputs["env"]
    assert yaml.safe_load(outputs["yaml"])["openai"]["api_key"] == ""


def test_each_section_says_what_it_is_for() -> None:
    text = render("env")
    assert "\n# [redis] Redis shared by the replicas of one service (scaled mode):" in text
    assert "\n# [alerts.routing]\n" in text  # a section without a docstring: its name alone
    assert "\n  # Redis shared by the replicas" not in render("yaml")
    assert "\n# Redis shared by the replicas of one service" in render("yaml")


def test_example_needs_no_valid_configuration(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It is of the code, not of this environment: a broken setting (the reason to want an example) is no
    obstacle, and the output is the same as without it."""
    monkeypatch.setenv("RAGVIGIL_PORT", "not-a-port")
    out = CliRunner().invoke(app, ["config", "example"])
    assert out.exit_code == 0, out.output
    assert out.output == render("env") and "\nRAGVIGIL_PORT=8000\n" in out.output
