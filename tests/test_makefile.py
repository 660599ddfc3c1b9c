"""What `make` runs: a cached portable llama.cpp wheel (only one built with the same key), a parallel suite.

Compiling llama.cpp takes ~10 minutes on 2 cores, so the Makefile builds the portable wheel once into
a cache keyed by version, Python ABI and CMake flags. These tests read what make *would* run
(``make -n``, nothing is built or installed) in a throw-away venv and cache directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(tmp_path: Path, *overrides: str, target: str = "install-dev") -> str:
    """The commands ``make TARGET`` would run for a fresh venv under ``tmp_path``."""
    cmd = ["make", "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}"]
    cmd += [f"WHEEL_CACHE={tmp_path / 'cache'}", f"PYTHON={sys.executable}", *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wheel_dir(commands: str) -> Path:
    """The cache directory a dry run builds the wheel into (the ``-w DIR.partial`` of ``pip wheel``)."""
    found = re.search(r"-w '([^']+)\.partial'", commands)
    assert found, f"no `pip wheel -w` in:\n{commands}"
    return Path(found.group(1))


def fill(directory: Path) -> Path:
    """A cache entry as a finished build leaves it."""
    directory.mkdir(parents=True)
    wheel = directory / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"")
    (directory / ".complete").touch()
    return wheel


def builds(commands: str) -> bool:
    return re.search(r"pip wheel .*--no-binary llama-cpp-python", commands) is not None


def test_an_empty_cache_builds_the_portable_wheel_into_it_then_installs_from_it(tmp_path: Path) -> None:
    commands = dry_run(tmp_path)
    assert builds(commands)
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in commands.split("pip wheel")[0].splitlines()[-1]
    assert "--no-cache-dir" in commands  # pip's own wheel cache may hold a native build
    target = wheel_dir(commands)
    assert target.is_relative_to(tmp_path / "cache")
    install = re.search(r"pip install .*--no-index.*", commands)
    assert install and str(target) in install.group(), commands


def test_a_cached_wheel_is_installed_without_compiling(tmp_path: Path) -> None:
    fill(wheel_dir(dry_run(tmp_path)))
    commands = dry_run(tmp_path)
    assert not builds(commands), commands
    assert re.search(r"pip install .*--no-index.*llama_cpp_python-0\.3\.36-\*\.whl", commands), commands


def test_an_unfinished_build_is_not_reused(tmp_path: Path) -> None:
    target = wheel_dir(dry_run(tmp_path))
    fill(target)
    (target / ".complete").unlink()  # e.g. the cache was copied half-way
    assert builds(dry_run(tmp_path))


def test_a_wheel_built_with_other_flags_is_never_reused(tmp_path: Path) -> None:
    native = wheel_dir(dry_run(tmp_path, "LLAMA_CMAKE_ARGS=-DGGML_NATIVE=ON"))
    fill(native)
    commands = dry_run(tmp_path)
    assert builds(commands)
    assert wheel_dir(commands) != native
    assert str(native) not in commands


def test_a_wheel_for_another_python_is_never_reused(tmp_path: Path) -> None:
    other = tmp_path / "python-other"
    other.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'print(\"cpython-399-x86_64-linux-gnu\")'\n")
    other.chmod(0o755)
    foreign = wheel_dir(dry_run(tmp_path, f"PYTHON={other}"))
    fill(foreign)
    commands = dry_run(tmp_path)
    assert builds(commands)
    assert wheel_dir(commands) != foreign


def test_make_test_runs_the_suite_in_xdist_workers_one_file_per_worker(tmp_path: Path) -> None:
    [pytest_line] = [line for line in dry_run(tmp_path, target="test").splitlines() if "-m pytest" in line]
    assert re.search(r"-n 3 --dist loadfile --no-loadscope-reorder tests$", pytest_line), pytest_line
    [serial] = [line for line in dry_run(tmp_path, "TEST_WORKERS=0", target="test").splitlines() if "-m pytest" in line]
    assert "-n 0" in serial, serial  # one process when asked
