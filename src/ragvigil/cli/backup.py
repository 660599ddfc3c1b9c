"""``ragvigil backup create|verify|list`` and ``ragvigil restore``: backups of every store, checked by restoring.

They work on the data dir and database of the settings directly, with the service running or not
(the database copy is online and consistent; the vector indexes are copied and read back). A
running instance can also be asked over HTTP (``POST /api/v1/admin/backups``), which flushes its
in-memory index changes first. Exit codes: 0 good, 1 a check failed or the restore was refused,
2 bad usage or configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ragvigil.cli.common import cli_actor, console, err, load_settings_or_exit, refuse_if_served

backup_app = typer.Typer(help="Backups of every store: create, verify, list (restore: `ragvigil restore`).")

Json = Annotated[bool, typer.Option("--json", help="Print JSON")]


def _audit(settings, action: str, target: str, detail: dict) -> None:  # type: ignore[no-untyped-def]
    """Operator actions are audited; a database that cannot take the entry does not undo the backup."""
    from ragvigil.ops.access import AuditLog
    from ragvigil.storage.db import Database

    db = Database(settings.db_url)
    try:
        AuditLog(db).record(cli_actor(), action, "ok", target, "cli", detail)
    except Exception as exc:  # the audit trail is best effort for a command run by hand
        err.print(f"[yellow]not audited: {escape(str(exc)[:200])}[/yellow]")
    finally:
        db.dispose()


def _smoke():  # type: ignore[no-untyped-def]
    from ragvigil.knowledge.smoke import retrieval_smoke

    return retrieval_smoke


@backup_app.command("create")
def create(
    to: Annotated[Path | None, typer.Option(help="directory for the backup file", show_default="backup.dir")] = None,
    encrypt: Annotated[
        bool, typer.Option("--encrypt", help="encrypt with backup.encryption_key; secrets included")
    ] = False,
    verify: Annotated[bool, typer.Option("--verify", help="verify it at once (restore to scratch)")] = False,
    as_json: Json = False,
) -> None:
    """Back up the database, vector indexes, originals, journal, signal recordings and configuration."""
    from ragvigil.ops.backup import BackupError, create_backup, verify_backup

    settings = load_settings_or_exit()
    try:
        result = create_backup(settings, to, encrypt=encrypt or settings.backup.encrypt)
    except BackupError as exc:
        err.print(f"[red]backup failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    m = result.manifest
    _audit(settings, "backup.create", result.path.name, {"encrypted": m.encrypted, "bytes": result.path.stat().st_size})
    out = {
        "path": str(result.path),
        "backup_id": m.backup_id,
        "bytes": result.path.stat().st_size,
        "files": len(m.files),
        "rows": sum(m.row_counts.values()),
        "vectors": sum(m.vector_counts.values()),
        "schema_revision": m.schema_revision,
        "encrypted": m.encrypted,
        "duration_s": m.duration_s,
    }
    if verify:
        report = verify_backup(result.path, settings, smoke=_smoke())
        out["verified"] = report.ok
        out["verify_error"] = report.error
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        console.print(f"backup written: {escape(str(result.path))}", highlight=False, soft_wrap=True)
        console.print(
            f"{out['files']} files, {out['rows']} rows, {out['vectors']} vectors, {out['bytes']} bytes, "
            f"schema {m.schema_revision}, {'encrypted' if m.encrypted else 'not encrypted'}, {m.duration_s}s",
            highlight=False,
        )
        if verify:
            console.print(
                "verified" if out["verified"] else f"[red]verify failed:[/red] {escape(str(out['verify_error']))}"
            )
    if verify and not out["verified"]:
        raise typer.Exit(1)


@backup_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="a backup file", show_default=False)],
    scratch_database_url: Annotated[
        str | None,
        typer.Option(help="an EMPTY PostgreSQL database to restore a PostgreSQL backup into (full check)"),
    ] = None,
    smoke: Annotated[bool, typer.Option(help="run the retrieval smoke test on the restored copy")] = True,
    as_json: Json = False,
) -> None:
    """Check a backup by restoring it into a scratch directory; exit 0 only when every check passed."""
    from ragvigil.ops.backup import verify_backup

    settings = load_settings_or_exit()
    report = verify_backup(file, settings, scratch_database_url=scratch_database_url, smoke=_smoke() if smoke else None)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for check in report.checks:
            console.print(f"[green]ok[/green] {escape(check)}", highlight=False)
        if report.ok:
            console.print(f"verified {escape(report.path)} in {report.duration_s}s", highlight=False, soft_wrap=True)
        else:
            err.print(f"[red]FAILED[/red] {escape(report.error or '')}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@backup_app.command("list")
def list_(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="directory to list", show_default="backup.dir")
    ] = None,
    as_json: Json = False,
) -> None:
    """The backups in the backup directory, newest first, with when each was verified."""
    from ragvigil.ops.backup import list_backups

    settings = load_settings_or_exit()
    rows = [b.as_dict() for b in list_backups(directory or settings.backup_dir)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("file", "created", "bytes", "encrypted", "verified")
    for r in rows:
        verified = (
            "never" if r["verified_at"] is None else f"{r['verified_at']} ({'ok' if r['verified_ok'] else 'FAILED'})"
        )
        table.add_row(
            str(r["file"]), str(r["created_at"]), str(r["bytes"]), "yes" if r["encrypted"] else "no", verified
        )
    console.print(table)


def restore(
    file: Annotated[Path, typer.Argument(help="a backup file", show_default=False)],
    force: Annotated[
        bool, typer.Option("--force", help="the data dir is not empty: move it aside (never deleted) and restore")
    ] = False,
    as_json: Json = False,
) -> None:
    """Restore a backup into the data dir (and database) of the settings; stop the service first."""
    from ragvigil.ops.backup import BackupError, restore_backup

    settings = load_settings_or_exit()
    refuse_if_served(settings, "restoring", "stop it first", any_backend=True)
    try:
        report = restore_backup(file, settings, force=force)
    except BackupError as exc:
        err.print(f"[red]restore refused:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from exc
    _audit(settings, "backup.restore", Path(report.path).name, {"moved_aside": report.moved_aside})
    if as_json:
        print(json.dumps(report.__dict__, indent=2))
        return
    console.print(f"restored {escape(report.path)} into {escape(report.data_dir)}", highlight=False, soft_wrap=True)
    if report.moved_aside:
        console.print(f"the previous data is in {escape(report.moved_aside)}", highlight=False, soft_wrap=True)
