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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ragvigil.app import Runtime
from ragvigil.ops.access import Role
from tests.conftest import make_settings
from tests.realservers import ragvigil_server

ST = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")  # the one rule the schema cannot say, and why
EXAMPLES = 20  # per operation and phase: a few dozen, so the run stays within a few minutes on 2 cores


@contextmanager
def _serve(data: Path) -> Iterator[str]:
    """``ragvigil serve`` in staging, in its own process: the run flips process-wide switches."""
    env = {
        "RAGVIGIL_PROFILE": "staging",
        "RAGVIGIL_API_DOCS": "true",
        "RAGVIGIL_LOG_LEVEL": "WARNING",
        "RAGVIGIL_ADMISSION__PER_KEY": "off",  # one key sends hundreds of requests: what a limit refuses (429)
    }
    with ragvigil_server(data, env=env, ready_path="/health/live") as base:  # dying during the run fails it
        yield base


def _schemathesis(base: str, key: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(ST),
        "--config-file",
        str(CONFIG),
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
        "300",
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
    rt = Runtime(make_settings(data))
    try:
        _, key = rt.keys.create("contract-test", Role.admin)
    finally:
        rt.close()
    with _serve(data) as base:
        result = _schemathesis(base, key, tmp_path)
    summary = result.stdout[result.stdout.rfind("SUMMARY") :] if "SUMMARY" in result.stdout else result.stdout[-4000:]
    assert result.returncode == 0, f"schemathesis reported failures:\n{result.stdout[-20000:]}\n{result.stderr[-2000:]}"
    assert "Tested:" in summary, summary  # it really ran the operations
