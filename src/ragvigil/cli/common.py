"""What every command group shares: the consoles, the settings with readable errors, the stored admin key,
the knowledge-base option and the runtime a command works with."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ragvigil.config import Settings
from ragvigil.config_check import Problem, check_settings

console = Console()
err = Console(stderr=True, soft_wrap=True)  # a message stays on one line (paths, grep), whatever the width


def print_problems(problems: list[Problem]) -> None:
    """Each problem on its own line of stderr: errors red, warnings yellow."""
    for p in problems:
        colour = "red" if p.level == "error" else "yellow"
        err.print(
            f"[{colour}]{p.level}[/{colour}] {escape(p.source)}: {escape(p.message)}", highlight=False, soft_wrap=True
        )


def load_settings_or_exit() -> Settings:
    """The settings, with warnings printed; every error printed and exit 2 instead of a traceback."""
    settings, problems = check_settings()
    if settings is None:
        err.print("[red]invalid configuration:[/red]")
    print_problems(problems)
    if settings is None:
        raise typer.Exit(2)
    return settings


def api_key_or_stored(given: str | None, settings: Settings) -> str:
    """``given``, else the admin key the first start stored in the data dir; exit 2 when there is neither."""
    from ragvigil.ops.admin_key import admin_key_path, read_admin_key

    if given:
        return given
    stored = read_admin_key(settings.data_dir)
    if stored is None:
        err.print(
            f"[red]no API key:[/red] pass --api-key, or start the service once so it stores its admin key in "
            f"{admin_key_path(settings.data_dir)}"
        )
        raise typer.Exit(2)
    err.print(f"using the admin key from {admin_key_path(settings.data_dir)} (an operator key is enough here)")
    return stored


_KB_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # the same rule as the API's path and the default_kb setting


def _kb_name(value: str | None) -> str | None:
    if value is not None and not _KB_NAME.fullmatch(value):
        raise typer.BadParameter("1-64 characters: letters, digits, '_', '.' or '-'")
    return value


KbOpt = Annotated[
    str | None,
    typer.Option(
        help="Knowledge base name", show_default="the default_kb setting, 'default' unless set", callback=_kb_name
    ),
]


def check_length(name: str, text: str, limit: int) -> None:
    """A blank or over-long text argument is a usage error (exit 2), like the API's 422."""
    if not text.strip():
        raise typer.BadParameter("must not be blank", param_hint=name)
    if len(text) > limit:
        raise typer.BadParameter(f"{len(text)} characters; at most {limit}", param_hint=name)


def cli_actor() -> str:
    """Who the audit trail names for a command run by hand."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def refuse_if_served(settings: Settings, doing: str, instead: str, *, any_backend: bool = False) -> None:
    """Exit 1 when a server holds this data dir and this command would write its files: the embedded
    faiss index (with a vector server every process writes through it) or, ``any_backend``, the whole dir."""
    from ragvigil.storage.serving_lock import DataDirServed
    from ragvigil.storage.serving_lock import refuse_if_served as refuse

    if settings.vector_store.backend != "faiss" and not any_backend:
        return
    try:
        refuse(settings.data_dir, doing, instead)
    except DataDirServed as exc:
        err.print(f"[red]refused:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None


def runtime(settings: Settings, apply_migrations: bool = True):  # type: ignore[no-untyped-def]
    """A whole instance for a command; logs at WARNING on stderr so the output stays readable."""
    from ragvigil.app import Runtime
    from ragvigil.ops.logging import configure_logging

    configure_logging("WARNING", settings.log_dir, settings.log_json, stream=sys.stderr)
    return Runtime(settings, apply_migrations=apply_migrations)
