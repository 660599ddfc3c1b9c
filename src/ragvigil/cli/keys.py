"""``ragvigil keys create/list/revoke`` and ``audit``: API keys and the trail of what they did."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ragvigil.cli.common import cli_actor, console, err, load_settings_or_exit

keys_app = typer.Typer(
    help="API keys: create, list, revoke (roles: client, viewer, operator, admin).", no_args_is_help=True
)
_settings = load_settings_or_exit
_cli_actor = cli_actor


def _access():  # type: ignore[no-untyped-def]
    from ragvigil.ops.access import AuditLog, KeyStore
    from ragvigil.storage.db import Database
    from ragvigil.storage.db import migrate as do_migrate

    db = Database(_settings().db_url)
    do_migrate(db.engine)
    return KeyStore(db), AuditLog(db)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for, e.g. ops-lead or the web front end")],
    role: Annotated[str, typer.Option(help="client, viewer, operator or admin")] = "client",
) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    from ragvigil.ops.access import Role

    if role not in Role.__members__:
        raise typer.BadParameter(f"role must be one of {', '.join(Role.__members__)}")
    keys, audit = _access()
    row, plain = keys.create(name, Role[role])
    audit.record(_cli_actor(), "key.create", "ok", target=f"{row.prefix} ({name}, {role})", source="cli")
    err.print(f"created key {row.prefix}… for {name!r} with role {role}; store it now, it is not shown again:")
    print(plain)


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json", help="Print the keys as JSON")] = False) -> None:
    """Keys with role, creation, last use and revocation (never the key itself)."""
    keys, _ = _access()
    rows = keys.list()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "prefix": r.prefix,
                        "name": r.name,
                        "role": r.role,
                        "created_at": r.created_at,
                        "last_used_at": r.last_used_at,
                        "revoked_at": r.revoked_at,
                    }
                    for r in rows
                ],
                default=str,
            )
        )
        return
    table = Table("id", "prefix", "name", "role", "created", "last used", "revoked")
    for r in rows:
        table.add_row(
            r.id,
            r.prefix,
            r.name,
            r.role,
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "-",
            f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "-",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="key id or prefix")]) -> None:
    """Revoke a key at once."""
    from ragvigil.ops.access import KeyNotFound

    keys, audit = _access()
    try:
        row = keys.revoke(key)
    except KeyNotFound:
        audit.record(_cli_actor(), "key.revoke", "not_found", target=key, source="cli")
        err.print(f"[red]no key with id or prefix {key!r}[/red]")
        raise typer.Exit(1) from None
    audit.record(_cli_actor(), "key.revoke", "ok", target=f"{row.prefix} ({row.name})", source="cli")
    console.print(f"revoked {row.prefix}… ({row.name})")


def audit(
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. key.create or document.upload")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor (an API key's name, or cli:USER)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many entries, newest first")] = 50,
) -> None:
    """The audit trail of operator and admin actions, newest first."""
    _, log = _access()
    table = Table("at", "actor", "role", "action", "target", "source", "result")
    for r in log.query(action, actor, None, limit):
        table.add_row(
            f"{r.at:%Y-%m-%d %H:%M:%S}", r.actor, r.role or "-", r.action, r.target or "-", r.source or "-", r.result
        )
    console.print(table)
