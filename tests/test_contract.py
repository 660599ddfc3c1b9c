"""The API contract, checked by a client we did not write: schemathesis against a real server.

A bounded, seeded run of every operation with every check (status codes and content types that
the spec declares, response bodies that match their schemas, valid inputs accepted and invalid
ones rejected, the ``Allow`` header of 405s, keys that are really checked). Any failure it reports
is a place where the published spec and the server disagree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LiveServer, make_settings
from ragvigil.api.server import create_app
from ragvigil.app import Runtime
from ragvigil.ops.access import Role

ST = Path(sys.executable).with_name("st")
EXAMPLES = 25  # per operation and phase: a few dozen, so the run stays within a few minutes on 2 cores


def _schemathesis(base: str, key: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(ST),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "20261201",
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--max-time",
        "600",
        "--generation-database",
        "none",
        "--no-color",
        "-H",
        f"Authorization: Bearer {key}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)


@pytest.mark.skipif(not ST.exists(), reason="schemathesis is a dev dependency")
def test_schemathesis_finds_no_contract_failure(sample_data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    rt = Runtime(make_settings(data, profile="staging", api_docs=True))
    try:
        _, key = rt.keys.create("contract-test", Role.admin)
        with LiveServer(create_app(runtime=rt)) as base:
            result = _schemathesis(base, key, tmp_path)
    finally:
        rt.close()
    summary = result.stdout[result.stdout.rfind("SUMMARY") :] if "SUMMARY" in result.stdout else result.stdout[-4000:]
    assert result.returncode == 0, f"schemathesis reported failures:\n{result.stdout[-20000:]}\n{result.stderr[-2000:]}"
    assert "Tested:" in summary, summary  # it really ran the operations
