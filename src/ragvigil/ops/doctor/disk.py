"""The disk group: free space of the data dir (journal, logs, index, database) and that it is writable."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ragvigil.config import Settings
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok, warn

MB = 1024 * 1024


def _existing(path: Path) -> Path:
    """The data dir, or its nearest parent that exists (a fresh dir is made at the first start)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_disk(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    path = _existing(settings.data_dir)
    usage = shutil.disk_usage(path)
    free_mb, percent = usage.free // MB, 100.0 * usage.free / usage.total if usage.total else 0.0
    found = f"{free_mb} MB free ({percent:.1f} %) under {path}"
    d = settings.doctor
    # the running service's own disk check fails below min_free_disk_mb, and readiness with it
    fail_mb = max(d.disk_fail_mb, settings.min_free_disk_mb)
    fix = f"free space under {path} or move data_dir to a larger disk"
    if free_mb < fail_mb:
        rows = [fail("disk", f"{found}; below {fail_mb} MB", fix)]
    elif free_mb < d.disk_warn_mb or percent < d.disk_warn_percent:
        rows = [warn("disk", f"{found}; below {d.disk_warn_mb} MB or {d.disk_warn_percent:g} %", fix)]
    else:
        rows = [ok("disk", found)]
    rows.append(_writable(path))
    return rows


def _writable(path: Path) -> CheckResult:
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return fail(
            "disk.writable", f"cannot write under {path}: {exc}", f"give ragvigil's user write access to {path}"
        )
    return ok("disk.writable", f"{path} writable")
