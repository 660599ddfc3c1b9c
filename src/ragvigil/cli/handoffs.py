"""``ragvigil handoffs``: the queue of conversations handed to a person (list, show, claim, close).

Reads and writes the database directly, like ``ragvigil alerts``, so it works with the service
down too; claim and close are audited (source ``cli``).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ragvigil.cli.common import console, err, load_settings_or_exit

handoffs_app = typer.Typer(help="Conversations handed to a person: list, show, claim, close.", no_args_is_help=True)

Who = Annotated[str, typer.Option(help="your name, for the record and the audit log")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON")]
Id = Annotated[str, typer.Argument(help="hand-off id (from `ragvigil handoffs list`; a prefix is enough)")]


def _store():  # type: ignore[no-untyped-def]
    from ragvigil.chat.handoff import HandoffStore
    from ragvigil.storage.db import Database, migrate

    db = Database(load_settings_or_exit().db_url)
    migrate(db.engine)
    return HandoffStore(db)


def _print_json(data: object) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _fail(exc: Exception) -> None:
    from ragvigil.errors import RagvigilError

    msg = exc.public_message() if isinstance(exc, RagvigilError) else str(exc)
    err.print(f"[red]{msg}[/red]")
    raise typer.Exit(1)


@handoffs_app.command("list")
def list_handoffs(
    status: Annotated[str | None, typer.Option(help="open, claimed or closed")] = None,
    priority: Annotated[int | None, typer.Option(min=1, max=4, help="1 (crisis) .. 4")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="records on this page")] = 50,
    offset: Annotated[
        int, typer.Option(min=0, max=1_000_000, help="records to skip (the last page says the next offset)")
    ] = 0,
    as_json: Json = False,
) -> None:
    """The queue, most urgent and oldest first (no user text; `show --message` has it)."""
    from rich.table import Table

    from ragvigil.storage.models import HandoffStatus

    if status is not None and status not in HandoffStatus.ALL:
        err.print(f"[red]--status must be one of {', '.join(HandoffStatus.ALL)}[/red]")
        raise typer.Exit(2)
    page = _store().list(status, priority, limit, offset)
    if as_json:
        _print_json(page)
        return
    table = Table("id", "priority", "reason", "status", "session", "user", "created", "by")
    for r in page["items"]:
        table.add_row(
            r["id"][:8],
            str(r["priority"]),
            r["reason"],
            r["status"],
            r["session_id"][:12],
            r["user_id"] or "",
            r["created_at"][:19],
            r["closed_by"] or r["claimed_by"] or "",
        )
    console.print(table if page["items"] else "no hand-offs")
    if page["next_offset"] is not None:
        console.print(f"{page['total']} in all; next page: --offset {page['next_offset']}")


@handoffs_app.command("show")
def show(
    handoff_id: Id,
    message: Annotated[bool, typer.Option("--message", help="include the user message that triggered it")] = False,
    who: Who = "cli",
    as_json: Json = False,
) -> None:
    """One record (with the triggering message on request: audited)."""
    from ragvigil.ops.access import AuditLog

    store = _store()
    try:
        record = store.get(store.resolve(handoff_id), with_message=message)
    except LookupError as exc:
        _fail(exc)
    if message:
        AuditLog(store.db).record(who, "handoff.read", "ok", f"handoff:{record['id']}", "cli", {"view": "message"})
    if as_json:
        _print_json(record)
        return
    for key, value in record.items():
        console.print(f"[bold]{key}[/bold]: {value if value is not None else ''}", highlight=False)


@handoffs_app.command("claim")
def claim(handoff_id: Id, who: Who = "cli", as_json: Json = False) -> None:
    """Take a record (a closed one, or one claimed by someone else, cannot be)."""
    _act("claim", handoff_id, who, None, as_json)


@handoffs_app.command("close")
def close(
    handoff_id: Id,
    note: Annotated[str | None, typer.Option(help="how it was resolved")] = None,
    who: Who = "cli",
    as_json: Json = False,
) -> None:
    """Close a record."""
    _act("close", handoff_id, who, note, as_json)


def _act(action: str, handoff_id: str, who: str, note: str | None, as_json: bool) -> None:
    from ragvigil.chat.handoff import HandoffConflict
    from ragvigil.ops.access import AuditLog

    who, note = who[:160], note[:1000] if note else None  # the widths of the record's columns
    store = _store()
    try:
        hid = store.resolve(handoff_id)
        record = store.claim(hid, who) if action == "claim" else store.close(hid, who, note)
    except (LookupError, HandoffConflict) as exc:
        _fail(exc)
    AuditLog(store.db).record(who, f"handoff.{action}", "ok", f"handoff:{hid}", "cli", {"reason": record["reason"]})
    if as_json:
        _print_json(record)
        return
    console.print(f"hand-off {record['id']} is {record['status']} by {who}")
