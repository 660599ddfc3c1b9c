"""The CLI at its edges: usage errors exit 2, nothing-to-do exits 1 with the fix, every option is described."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ragvigil.cli import app as cli_app

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    res = runner.invoke(cli_app, list(args))
    return res.exit_code, " ".join(res.output.split())  # rich wraps at 80 columns


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(d))
    return d


def test_an_unknown_search_mode_is_a_usage_error(data_dir: Path) -> None:
    code, out = _run("search", "refund", "--mode", "foo")
    assert code == 2 and "'foo' is not one of" in out and "hybrid" in out


@pytest.mark.parametrize("command", [["ask", "How do I export my notes?"], ["search", "export"]])
def test_reading_a_data_dir_without_a_database_says_to_migrate(data_dir: Path, command: list[str]) -> None:
    code, out = _run(*command)
    assert code == 1, out
    assert "there is no database" in out and "`ragvigil migrate`" in out and "`ragvigil ingest PATH`" in out
    assert not (data_dir / "ragvigil.db").exists()  # a read-only command does not create one


def test_ask_on_an_empty_knowledge_base_says_how_to_fill_it(data_dir: Path, tmp_path: Path) -> None:
    assert _run("migrate")[0] == 0
    code, out = _run("ask", "How do I export my notes?")
    assert code == 1 and "no knowledge base named 'default'" in out  # nothing was ever ingested into it
    assert "`ragvigil ingest PATH --kb default`" in out

    doc = tmp_path / "export.md"
    doc.write_text("# Export notes\nUse File > Export to save notes as Markdown.", encoding="utf-8")
    assert _run("ingest", str(doc), "--kb", "help", "--defer-vectors")[0] == 0
    code, out = _run("ask", "How do I export my notes?")
    assert code == 1 and "(known: help)" in out
    code, out = _run("search", "export notes", "--kb", "help", "--mode", "bm25", "--json")
    assert code == 0 and "export.md" in out


def test_ingest_of_an_empty_directory_fails_and_says_so(data_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / ".hidden").mkdir(parents=True)
    (empty / ".hidden" / "notes.md").write_text("# Hidden\nskipped", encoding="utf-8")
    code, out = _run("ingest", str(empty))
    assert code == 1 and "nothing to ingest" in out and ".md" in out


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", ".", "--kb", "no spaces"],
        ["ask", "hi", "--kb", "x" * 65],
        ["search", "hi", "--kb", "a/b"],
        ["ask", "hi", "--session", "../etc"],
        ["search", "   "],
        ["ask", "x" * 5000],
    ],
)
def test_bad_arguments_are_usage_errors(data_dir: Path, args: list[str]) -> None:
    code, out = _run(*args)
    assert code == 2, out
    assert not data_dir.exists()  # refused before anything was opened


def test_alertmanager_export_takes_the_url_and_never_guesses_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGVIGIL_PORT", "8123")
    code, out = _run("alerts", "export", "--format", "alertmanager")
    assert code == 2 and "--url" in out and "8123" not in out and "8000" not in out

    key = ("--api-key", "rv_alertmanager_test_key")
    code, out = _run("alerts", "export", "--format", "alertmanager", "--url", "http://ragvigil.internal:9000/", *key)
    assert code == 0 and "url: http://ragvigil.internal:9000/api/v1/ops/alerts/webhook" in out

    monkeypatch.setenv("RAGVIGIL_ALERTS__EXTERNAL_URL", "https://rv.example.com")
    code, out = _run("alerts", "export", "--format", "alertmanager", *key)
    assert code == 0 and "https://rv.example.com/api/v1/ops/alerts/webhook" in out

    assert _run("alerts", "export", "--format", "alertmanager", "--url", "ragvigil:9000")[0] == 2
    assert _run("alerts", "export", "--format", "grafana")[0] == 2


_OWNED_ELSEWHERE: set[str] = set()


def _commands(cmd: object, path: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        if name not in _OWNED_ELSEWHERE:
            yield from _commands(sub, (*path, name))


def test_every_option_and_argument_says_what_it_is_without_internal_names() -> None:
    missing, internal = [], []
    for path, cmd in _commands(typer.main.get_command(cli_app)):
        if path and not (cmd.help or "").strip():
            missing.append(" ".join(path))
        for p in cmd.params:
            where = f"{' '.join(path)} {p.name}"
            text = f"{getattr(p, 'help', None) or ''} {getattr(p, 'show_default', '')}"
            if p.name != "help" and not (getattr(p, "help", None) or "").strip():
                missing.append(where)
            if "settings." in text:
                internal.append(where)
    assert missing == [] and internal == []


def test_help_shows_real_defaults() -> None:
    root = typer.main.get_command(cli_app)
    kb = {p.name: p for p in root.commands["ingest"].params}["kb"]
    assert kb.show_default == "the default_kb setting, 'default' unless set"
    code, out = _run("search", "--help")
    assert code == 0 and "hybrid|bm25|vector" in out
