"""The CI workflow and the post-deploy smoke check (deploy/smoke.py) against a real ``ragvigil serve``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.deploy_tools import DEPLOY, ROOT
from tests.realservers import HOST, free_port

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
SMOKE = DEPLOY / "smoke.py"


def workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the bare key `on` as true
    return data


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) + " " + str(s.get("uses", "")) for s in job["steps"])


def test_the_workflow_has_every_stage_in_order() -> None:
    wf = workflow()
    jobs = wf["jobs"]
    assert {"lint", "test", "audit", "image", "deploy"} <= set(jobs)
    assert "ruff check" in runs(jobs["lint"]) and "ruff format --check" in runs(jobs["lint"])
    assert ".ci/run" in runs(jobs["test"]) or "make test" in runs(jobs["test"])
    assert "pip-audit" in runs(jobs["audit"])
    assert "docker/setup-buildx-action" in runs(jobs["image"]) and "docker/build-push-action" in runs(jobs["image"])
    assert set(jobs["image"]["needs"]) == {"test", "audit"} and jobs["deploy"]["needs"] == "image"
    assert "refs/heads/main" in jobs["deploy"]["if"]
    assert {"push", "pull_request"} <= set(wf["on"])


def test_the_deploy_job_smoke_checks_and_rolls_back_on_failure() -> None:
    steps = workflow()["jobs"]["deploy"]["steps"]
    names = [s.get("name", "") for s in steps]
    smoke = next(i for i, s in enumerate(steps) if "deploy/smoke.py" in str(s.get("run", "")))
    rollout = next(i for i, s in enumerate(steps) if "kubectl rollout status" in str(s.get("run", "")))
    rollback = next(i for i, s in enumerate(steps) if "rollout undo" in str(s.get("run", "")))
    assert rollout < smoke < rollback, names
    assert steps[rollback]["if"] == "failure()"
    assert "if" not in steps[smoke], "the smoke check must run on every deploy"


def _smoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SMOKE), *args], capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )


def test_smoke_check_against_a_real_server(serve_instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve_instance()
    doc = b"# Passwords\n\nTo reset your password, open Settings, choose Security and press Reset password.\n"
    up = httpx.post(f"{server}/api/v1/kb/default/documents", files={"file": ("passwords.md", doc)}, timeout=60)
    assert up.status_code < 300, up.text
    ok = _smoke(server, "--ready-timeout", "30", "--timeout", "60")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "smoke check ok" in ok.stdout and "stored message" in ok.stdout
    # a chat that fails (an unknown knowledge base: 404) fails the check, and names the step
    failed = _smoke(server, "--kb", "no-such-kb", "--ready-timeout", "30")
    assert failed.returncode == 1 and "POST /api/v1/chat answered 404" in failed.stderr, failed.stderr
    # no server at all fails within the ready timeout
    gone = _smoke(f"http://{HOST}:{free_port()}", "--ready-timeout", "2")
    assert gone.returncode == 1 and "not ready after 2s" in gone.stderr, gone.stderr
