"""``ragvigil config show/check`` and ``migrate``: the configuration and the schema."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from ragvigil.cli.common import console, err, load_settings_or_exit, print_problems
from ragvigil.config import masked_dump
from ragvigil.config_check import check_settings

config_app = typer.Typer(help="Show or check the configuration.", no_args_is_help=True)
_settings = load_settings_or_exit


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (secrets masked)."""
    console.print_json(json.dumps(masked_dump(_settings())))


@config_app.command("check")
def config_check() -> None:
    """Validate the configuration and the start check: every problem with its source; exits 2 if any."""
    from ragvigil.preflight import admin_key_expected, start_problems

    s, problems = check_settings()
    if s is not None:  # what `serve` would refuse to start with, from the same function
        problems += start_problems(s, admin_key=admin_key_expected(s))
    print_problems(problems)
    if problems:
        errors = sum(p.level == "error" for p in problems)
        err.print(f"[red]{errors} error(s), {len(problems) - errors} warning(s)[/red]")
        raise typer.Exit(2)
    assert s is not None
    console.print(f"[green]configuration ok[/green] (profile {s.profile.value}, database {s.db_url.split('://')[0]})")


class ExampleFormat(StrEnum):
    env = "env"
    yaml = "yaml"


@config_app.command("example")
def config_example(
    fmt: Annotated[
        ExampleFormat, typer.Option("--format", help="env: RAGVIGIL_SECTION__FIELD=default lines; yaml: the tree")
    ] = ExampleFormat.env,
) -> None:
    """Print every setting with its default and a comment (secrets empty), generated from the settings tree."""
    from ragvigil.config_example import render

    print(render(fmt.value), end="")


def migrate() -> None:
    """Apply database migrations."""
    from ragvigil.storage.db import Database
    from ragvigil.storage.db import migrate as do_migrate
    from ragvigil.storage.schema import engine_state

    s = _settings()
    db = Database(s.db_url)
    if (state := engine_state(db.engine)).newer:  # alembic would fail with a traceback; say what to do
        err.print(f"[red]not migrating:[/red] {state.describe()}")
        raise typer.Exit(2)
    do_migrate(db.engine)
    console.print("[green]database is at the newest schema[/green]")
