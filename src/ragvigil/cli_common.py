"""What every command group shares: the consoles and loading the settings with readable errors."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console

from ragvigil.config import Settings, describe_errors, load_settings

console = Console()
err = Console(stderr=True, soft_wrap=True)  # a message naming a path stays one line, to copy or grep


def load_settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        err.print("[red]invalid configuration:[/red]")
        for line in describe_errors(exc):
            err.print(f"  {line}")
        raise typer.Exit(2) from None
