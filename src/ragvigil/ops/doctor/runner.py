"""Runs every check group, each on its own daemon thread under a deadline, so one hung dependency
(a firewalled database host, a Redis that accepts and never answers) costs its row, not the run."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ragvigil.config import Settings
from ragvigil.ops.doctor.backups import check_backups
from ragvigil.ops.doctor.channels import check_channels
from ragvigil.ops.doctor.configuration import check_configuration
from ragvigil.ops.doctor.database import check_database
from ragvigil.ops.doctor.disk import check_disk
from ragvigil.ops.doctor.keys import check_keys
from ragvigil.ops.doctor.models import check_models
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.originals import check_originals
from ragvigil.ops.doctor.redis_check import check_redis
from ragvigil.ops.doctor.result import CheckResult, fail
from ragvigil.ops.doctor.vectors import check_vectors

Group = Callable[[Settings, DoctorOptions], list[CheckResult]]
GROUPS: dict[str, Group] = {
    "config": check_configuration,
    "database": check_database,
    "redis": check_redis,
    "vector_store": check_vectors,
    "originals": check_originals,
    "disk": check_disk,
    "keys": check_keys,
    "channels": check_channels,
    "models": check_models,
    "backup": check_backups,
}
DEEP_LOAD_S = 60.0  # loading the embedder takes seconds of CPU on a busy machine


def run_checks(
    settings: Settings, *, probe: bool = False, deep: bool = False, timeout_s: float | None = None
) -> list[CheckResult]:
    """Every check's rows, in group order. Each group has ``timeout_s`` (default ``doctor.timeout_s``);
    one still running then is a failure row and is left behind on its daemon thread."""
    options = DoctorOptions(probe=probe, deep=deep, timeout_s=timeout_s or settings.doctor.timeout_s)
    runs = {name: _start(group, settings, options) for name, group in GROUPS.items()}
    results: list[CheckResult] = []
    for name, (thread, box) in runs.items():
        bound = max(options.timeout_s, DEEP_LOAD_S) if name == "models" and deep else options.timeout_s
        thread.join(bound + 1.0)  # a group's own network timeouts are timeout_s; the join allows them to fire
        if thread.is_alive():
            results.append(fail(name, f"no answer within {bound:g} s", f"find what {name} waits for"))
        elif isinstance(box.get("error"), BaseException):
            exc = box["error"]
            results.append(fail(name, f"the check itself failed: {type(exc).__name__}: {exc}", "report this"))
        else:
            results.extend(box["rows"])
    return results


def _start(group: Group, settings: Settings, options: DoctorOptions) -> tuple[threading.Thread, dict]:
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["rows"] = group(settings, options)
        except Exception as exc:  # a row, not a traceback: the rest of the report still prints
            box["error"] = exc

    thread = threading.Thread(target=run, name="doctor-check", daemon=True)
    thread.start()
    return thread, box
