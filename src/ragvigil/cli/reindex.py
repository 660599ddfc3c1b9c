"""``ragvigil reindex [--kb KB] [--status]``: rebuild chunks and vectors from the kept originals.

A running instance (``--url``, else the local one at the configured host and port) does the work
itself (``POST /api/v1/kb/{kb}/reindex``) while it keeps answering from the old index; this command
then follows its progress. With no instance running it rebuilds in this process, with a progress bar.
``--status`` reads every job's state from the database, whether or not the service runs.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from ragvigil.cli.common import cli_actor, console, err, load_settings_or_exit, refuse_if_served, runtime
from ragvigil.config import Settings

HTTP_TIMEOUT_S = 30.0
POLL_S = 1.0


def reindex(
    kb: Annotated[str | None, typer.Option(help="Knowledge base to rebuild", show_default="every one")] = None,
    status: Annotated[bool, typer.Option("--status", help="Show the newest job of each knowledge base")] = False,
    url: Annotated[
        str | None, typer.Option(help="Base URL of a running instance", show_default="the configured host and port")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="RAGVIGIL_API_KEY", help="An admin key", show_default="<data dir>/admin.key")
    ] = None,
) -> None:
    """Rebuild with the current chunker and model; answers come from the old index until the new one is complete."""
    settings = load_settings_or_exit()
    if status:
        _status(settings, kb)
        return
    from ragvigil.cli.diagnose import _local_url

    base = url or _local_url(settings)
    if _remote(base, kb, api_key, settings, explicit=url is not None):
        return
    refuse_if_served(settings, "reindexing", "give its address with --url, or stop it first")
    err.print(f"[yellow]no instance answers at {base}: reindexing in this process[/yellow]")
    _offline(settings, kb)


def _print(job: dict[str, Any]) -> None:
    colour = {"done": "green", "running": "cyan"}.get(job["state"], "red")
    console.print(
        f"{job['kb']}: [{colour}]{job['state']}[/{colour}] {job['done']}/{job['total']} documents "
        f"({job['skipped']} skipped, {job['failed']} failed), job {job['job_id']} by {escape(job['requested_by'])}, "
        f"started {job['started_at']}" + (f", finished {job['finished_at']}" if job["finished_at"] else "")
    )
    for line in job["errors"]:
        console.print(f"  - {escape(line)}")


def _status(settings: Settings, kb: str | None) -> None:
    from ragvigil.knowledge.catalog import Catalog
    from ragvigil.knowledge.reindex import ReindexNotFound, latest_job
    from ragvigil.storage.db import Database

    db = Database(settings.db_url)
    try:
        catalog = Catalog(db)
        names = [kb] if kb else catalog.kb_names()
        shown = 0
        for name in names:
            try:
                _print(latest_job(db, name).to_dict())
                shown += 1
            except ReindexNotFound:
                if kb:
                    err.print(f"no reindex of {name!r} has run")
                    raise typer.Exit(1) from None
        if not shown:
            console.print("no reindex has run")
    finally:
        db.dispose()


def _remote(base: str, kb: str | None, key: str | None, settings: Settings, explicit: bool) -> bool:
    """Ask the running instance to reindex and follow it; False when nothing listens and no URL was given."""
    import httpx

    from ragvigil.ops.admin_key import read_admin_key

    key = key or read_admin_key(settings.data_dir)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    root = base.rstrip("/") + "/api/v1/kb"
    try:
        with httpx.Client(headers=headers, timeout=HTTP_TIMEOUT_S) as client:
            names = [kb] if kb else _ok(client.get(root))
            for name in names:
                _ok(client.post(f"{root}/{name}/reindex"), 202)
            failed = False
            for name in names:
                while (job := _ok(client.get(f"{root}/{name}/reindex")))["state"] == "running":
                    err.print(f"{name}: {job['done']}/{job['total']} documents", end="\r")
                    time.sleep(POLL_S)
                _print(job)
                failed |= job["state"] != "done"
    except httpx.ConnectError as exc:
        if not explicit:
            return False
        err.print(f"[red]cannot reach {escape(base)}:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        err.print(f"[red]{escape(base)} did not answer:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if failed:
        raise typer.Exit(1)
    return True


def _ok(r: Any, expected: int = 200) -> Any:
    if r.status_code == expected:
        return r.json()
    try:
        body = r.json()
        message = f"{body.get('code')}: {body.get('message')}"
    except ValueError:
        message = r.text[:300]
    hint = " (set RAGVIGIL_API_KEY or --api-key: an admin key)" if r.status_code in (401, 403) else ""
    err.print(f"[red]{r.status_code} {escape(message)}[/red]{hint}")
    raise typer.Exit(1)


def _offline(settings: Settings, kb: str | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ragvigil.errors import RagvigilError

    rt = runtime(settings)
    failed = False
    try:
        names = [kb] if kb else rt.catalog.kb_names()
        for name in names:
            try:
                job_id = rt.reindexer.start(name, cli_actor())
            except RagvigilError as exc:
                rt.audit.record(cli_actor(), "kb.reindex", exc.code, f"kb:{name}", "cli")
                err.print(f"[red]{escape(exc.public_message())}[/red]")
                raise typer.Exit(1) from None
            rt.audit.record(cli_actor(), "kb.reindex", "ok", f"kb:{name}", "cli", {"job_id": job_id})
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
            ) as progress:
                task = progress.add_task(f"reindexing {name}", total=None)
                while (job := rt.reindexer.status(name)).state == "running":
                    progress.update(task, total=job.total or None, completed=job.done)
                    rt.reindexer.wait(name, POLL_S)
            job = rt.reindexer.status(name).to_dict()
            _print(job)
            failed |= job["state"] != "done"
    finally:
        rt.close()
    if failed:
        raise typer.Exit(1)
