"""What every command group shares: the consoles and loading the settings with readable errors."""

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
