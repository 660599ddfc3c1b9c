"""What every command group shares: the consoles, the settings with readable errors, the stored admin key."""

from __future__ import annotations

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
