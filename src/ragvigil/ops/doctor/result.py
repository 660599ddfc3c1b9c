"""What one doctor check found: a status, the finding in words and the fix an operator applies."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """One row of ``ragvigil doctor``: ``check`` names what was looked at (``database.schema``), ``found`` says
    what is there (never a password), ``fix`` what to do about it ("" when nothing is to be done)."""

    check: str
    status: Status
    found: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def ok(check: str, found: str) -> CheckResult:
    return CheckResult(check, "ok", found)


def warn(check: str, found: str, fix: str) -> CheckResult:
    return CheckResult(check, "warn", found, fix)


def fail(check: str, found: str, fix: str) -> CheckResult:
    return CheckResult(check, "fail", found, fix)


def skipped(check: str, found: str) -> CheckResult:
    return CheckResult(check, "skipped", found)


def healthy(results: list[CheckResult], *, strict: bool = False) -> bool:
    """No failure (and, with ``strict``, no warning either): the exit code of ``ragvigil doctor``."""
    bad = {"fail", "warn"} if strict else {"fail"}
    return not any(r.status in bad for r in results)
