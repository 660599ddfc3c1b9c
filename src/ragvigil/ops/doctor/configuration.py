"""The configuration group: what ``config check`` and the start check already know, reused, not redone."""

from __future__ import annotations

from ragvigil.config import Settings
from ragvigil.config_check import Problem, check_settings
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok, warn

FIX_CONFIG = "correct the setting named, then run `ragvigil config check`"


def _row(p: Problem) -> CheckResult:
    if p.level == "error":
        return fail("config", f"{p.source}: {p.message}", FIX_CONFIG)
    return warn("config", f"{p.source}: {p.message}", FIX_CONFIG)


def problem_rows(problems: list[Problem]) -> list[CheckResult]:
    """``config_check``'s problems as doctor rows (errors fail, warnings warn)."""
    return [_row(p) for p in problems]


def check_configuration(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    """The environment's and file's problems (``config_check``) and the reasons to refuse a start
    (``preflight.start_problems``; the admin key is the keys group's)."""
    from ragvigil.preflight import start_problems

    _, problems = check_settings()
    rows = problem_rows(problems)
    rows += [
        fail("config.start", f"{p.source}: {p.message}", "fix it before `ragvigil serve`: the start refuses it")
        for p in start_problems(settings, admin_key=None)
    ]
    return rows or [ok("config", f"valid ({settings.profile.value} profile)")]
