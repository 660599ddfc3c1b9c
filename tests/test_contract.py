"""The API contract, checked by a client we did not write: schemathesis against a real server.

A bounded, seeded run of every operation with every check (status codes and content types that
the spec declares, response bodies that match their schemas, valid inputs accepted and invalid
ones rejected, the ``Allow`` header of 405s, keys that are really checked). Any failure it reports
is a place where the published spec and the server disagree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import make_settings
from ragvigil.app import Runtime
from ragvigil.ops.access import Role
from realservers import free_port, wait_until

ST = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).with_name("schemathesis.toml")  # the one rule the schema cannot say, and why
EXAMPLES = 20  # per operation and phase: a few dozen, so the run stays within a few minutes on 2 cores


@contextmanager
def _serve(data: Path) -> Iterator[str]:
    """``ragvigil serve`` in staging, in its own process: the run flips process-wide switches."""
    port = free_port()
    env = os.environ | {
        "RAGVIGIL_PROFILE": "staging",
        "RAGVIGIL_DATA_DIR": str(data),
        "RAGVIGIL_PORT": str(port),
        "RAGVIGIL_API_DOCS": "true",
        "RAGVIGIL_LOG_LEVEL": "WARNING",
        "RAGVIGIL_ADMISSION__PER_KEY": "off",  # one key sends hundreds of requests: what a limit refuses (429)
    }
    log = data.parent / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("ragvigil")), "serve"], env=env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"{base}/health/live", timeout=2).status == 200,
            120,
            "ragvigil serve",
            abort=lambda: f"exited with {proc.returncode}" if proc.poll() is not None else None,
        )
        yield base
        assert proc.poll() is None, "the server died during the run"
    except BaseException:
        print(f"--- ragvigil serve log (tail) ---\n{log.read_text(errors='replace')[-6000:]}")
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


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
