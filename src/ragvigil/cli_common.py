"""What every command group shares: the consoles, the settings with readable errors, the stored admin key."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console

from ragvigil.config import Settings, describe_errors, load_settings

console = Console()
err = Console(stderr=True)


def load_settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        err.print("[red]invalid configuration:[/red]")
        for line in describe_errors(exc):
            err.print(f"  {line}")
        raise typer.Exit(2) from None


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
