"""``ragvigil doctor``: every problem of this deployment's configuration and dependencies, with its fix.

Exit code: 0 healthy, 1 a check failed (with ``--strict`` a warning too); a configuration that cannot
be loaded is such a failure, reported as the ``config`` rows (also in ``--json``).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ragvigil.cli.common import console

STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "skipped": "dim"}


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of the table")] = False,
    strict: Annotated[bool, typer.Option(help="A warning fails too (exit 1)")] = False,
    probe: Annotated[bool, typer.Option(help="Connect to each alert channel's host (nothing is sent)")] = False,
    deep: Annotated[bool, typer.Option(help="Load the embedder and embed a word (seconds of CPU)")] = False,
    timeout: Annotated[
        float | None,
        typer.Option(min=0.1, max=60, help="Seconds each check may take", show_default="doctor.timeout_s, 5"),
    ] = None,
) -> None:
    """Check the configuration and dependencies (database, Redis, vectors, disk, keys, channels, models, backups)."""
    from ragvigil.config_check import check_settings
    from ragvigil.ops.doctor import healthy, run_checks
    from ragvigil.ops.doctor.configuration import problem_rows

    settings, problems = check_settings()
    if settings is None:  # nothing else can be checked without settings: the problems are the report
        results = problem_rows(problems)
    else:
        results = run_checks(settings, probe=probe, deep=deep, timeout_s=timeout)
    good = healthy(results, strict=strict)
    if as_json:
        typer.echo(json.dumps({"healthy": good, "checks": [r.to_dict() for r in results]}, ensure_ascii=False))
    else:
        table = Table(title="ragvigil doctor", show_lines=False)
        for column in ("check", "status", "found", "fix"):
            table.add_column(column, overflow="fold")
        for r in results:
            colour = STYLE[r.status]
            table.add_row(escape(r.check), f"[{colour}]{r.status}[/{colour}]", escape(r.found), escape(r.fix))
        console.print(table)
        failed = sum(r.status == "fail" for r in results)
        warned = sum(r.status == "warn" for r in results)
        console.print(f"{'healthy' if good else 'unhealthy'}: {failed} failed, {warned} warnings")
    if not good:
        raise typer.Exit(1)
