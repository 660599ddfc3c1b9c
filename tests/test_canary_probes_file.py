"""A canary probe file that does not load is refused before anything runs, every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragvigil.cli import app as cli_app


def test_a_probe_file_that_does_not_load_is_refused_by_config_check_and_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes = tmp_path / "probes.yaml"
    probes.write_text("probes:\n  - {id: a, lang: fr, expect: crisis, text: x}\n  - {id: b, lang: en, expect: yes}\n")
    monkeypatch.setenv("RAGVIGIL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGVIGIL_CANARY__PROBES_FILE", str(probes))
    runner = CliRunner()
    for args in (["config", "check"], ["serve", "--port", "1"]):
        result = runner.invoke(cli_app, args)
        out = " ".join(result.output.split())
        assert result.exit_code == 2 and "canary probes rejected" in out, (args, result.output)
        assert "probes[0]: lang" in out and "probes[1]: expect" in out and "probes[1]: text" in out, out
