"""process.restart under `ragvigil serve`: the request is answered, the server drains, the process exits non-zero.

A real server process on loopback. The exit status is what systemd (Restart=on-failure) and
Kubernetes read to start it again; nothing else is signalled or killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from ragvigil.ops.admin_key import read_admin_key
from ragvigil.ops.remediation import RESTART_EXIT_CODE
from tests.realservers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]


def test_process_restart_drains_and_exits_non_zero(sample_data_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    port = free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "RAGVIGIL_DATA_DIR": str(data),
        "RAGVIGIL_ALERTS__ENABLED": "false",
        "RAGVIGIL_BACKGROUND_EMBEDDING": "false",
        "RAGVIGIL_SHUTDOWN_GRACE_S": "20",
    }
    cmd = [sys.executable, "-c", "from ragvigil.cli import app; app()", "serve", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    output = lambda: log.read_text(errors="replace")[-4000:]  # noqa: E731
    try:
        wait_until(
            lambda: httpx.get(f"{base}/health/live", timeout=2).status_code == 200,
            120,
            "ragvigil serve to start",
            interval=0.2,
            abort=lambda: None if proc.poll() is None else f"exited with {proc.returncode}: {output()}",
        )
        key = read_admin_key(data)
        assert key, output()
        r = httpx.post(
            f"{base}/api/v1/ops/actions/process.restart",
            json={"params": {"reason": "drill"}},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text  # answered before the drain let the server stop
        assert r.json()["changed"].startswith("restart requested")
        assert proc.wait(60) == RESTART_EXIT_CODE, output()
        assert "restart requested (drill)" in output() and "shutdown_drained" in output()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
