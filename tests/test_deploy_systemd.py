"""deploy/systemd/ragvigil.service: supervised (Restart=always), hardened, stopping after the drain."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ragvigil.config import Settings
from tests.deploy_tools import DEPLOY

UNIT = DEPLOY / "systemd" / "ragvigil.service"


def parse(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) pairs in order (a key may repeat, as Environment= does)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(m[1], [])
            continue
        assert current is not None, f"a setting outside a section: {line}"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def service() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in parse(UNIT.read_text())["Service"]:
        out.setdefault(key, []).append(value)
    return out


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min|ms)?", value)
    assert m, value
    return float(m[1]) * {"s": 1, None: 1, "min": 60, "ms": 0.001}[m[2]]


def test_restarts_always_as_its_own_user() -> None:
    s = service()
    assert s["Restart"] == ["always"] and seconds(s["RestartSec"][0]) > 0
    assert s["User"][0] not in ("root", "0") and s["Group"][0] not in ("root", "0")
    assert s["EnvironmentFile"][0].startswith("/etc/ragvigil/")
    assert s["ExecStart"][0].endswith("ragvigil serve")
    unit = dict(parse(UNIT.read_text())["Unit"])
    assert unit.get("StartLimitIntervalSec") == "0", "a crash loop must not make systemd give up"


def test_hardened_with_only_the_data_dir_writable() -> None:
    s = service()
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]
    data_dir = next(v.split("=", 1)[1] for v in s["Environment"] if v.startswith("RAGVIGIL_DATA_DIR="))
    assert s["ReadWritePaths"] == [data_dir]


def test_stop_waits_longer_than_the_drain() -> None:
    s = service()
    assert s["KillSignal"] == ["SIGTERM"]
    drain = Settings.model_fields["shutdown_grace_s"].default
    assert seconds(s["TimeoutStopSec"][0]) > drain


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the unit is still parsed and checked above)")
    unit = tmp_path / "ragvigil.service"  # verify wants ExecStart to exist: an executable that does
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={shutil.which('true')}", UNIT.read_text(), flags=re.M))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if "ragvigil.service" in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr
    bad = tmp_path / "bad" / "ragvigil.service"  # and it does report a key systemd does not know
    bad.parent.mkdir()
    bad.write_text(unit.read_text().replace("Restart=always", "Restart=always\nRestartSecs=2"))
    out = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "RestartSecs" in out.stdout + out.stderr
