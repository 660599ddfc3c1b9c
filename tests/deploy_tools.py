"""The validators the deploy-file tests run (hadolint, docker compose, nginx, promtool, systemd-analyze...)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def tool(*names: str, why: str = "") -> str:
    """The first of ``names`` on PATH or next to this Python (the venv's console scripts); skipped when none
    is there, a failure under CI (``.ci/run`` installs them)."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if found:
            return found
    message = f"none of {', '.join(names)} is installed{why}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
