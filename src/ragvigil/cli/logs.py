"""``ragvigil logs ...``: read the log files (rotated and gzipped ones too) and the encrypted message log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ragvigil.cli.common import console, err, load_settings_or_exit

logs_app = typer.Typer(help="Read the log files (rotated and gzipped ones too).", no_args_is_help=True)
_settings = load_settings_or_exit


SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="From this time on: ISO-8601, or 15m / 2h / 7d ago", show_default="the oldest line"),
]
UntilOpt = Annotated[
    str | None,
    typer.Option("--until", help="Up to this time: ISO-8601, or 15m / 2h / 7d ago", show_default="now"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
LogDirOpt = Annotated[
    Path | None, typer.Option("--log-dir", help="Where the log files are", show_default="<data_dir>/logs")
]


def _read_logs(log_dir: Path | None, since: str | None, until: str | None):  # type: ignore[no-untyped-def]
    """Records of the chosen window plus the read statistics (filled in as records are consumed)."""
    from datetime import datetime

    from ragvigil.ops.loganalysis import ReadStats, iter_records, parse_when

    now = datetime.now().astimezone()
    try:
        lo = parse_when(since, now) if since else None
        hi = parse_when(until, now) if until else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    stats = ReadStats()
    try:
        records = list(iter_records(log_dir or _settings().log_dir, lo, hi, stats=stats))
    except (FileNotFoundError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    return records, stats


def _emit(result: object, stats, as_json: bool, table: Table | None) -> None:  # type: ignore[no-untyped-def]
    from ragvigil.ops.loganalysis import to_json

    if as_json:
        print(to_json({"result": result, "stats": stats}))
    elif table is not None:
        console.print(table)
    if stats.corrupt_lines:
        err.print(f"[yellow]{stats.corrupt_lines} corrupt line(s) skipped[/yellow]")
    for path in stats.unreadable_files:
        err.print(f"[yellow]unreadable: {path}[/yellow]")


@logs_app.command("errors")
def logs_errors(
    since: SinceOpt = None,
    until: UntilOpt = None,
    top: Annotated[int, typer.Option(min=1, max=1000, help="How many error kinds to show")] = 20,
    as_json: JsonOpt = False,
    log_dir: LogDirOpt = None,
) -> None:
    """Top error kinds with counts, first and last seen."""
    from ragvigil.ops.loganalysis import error_summary

    records, stats = _read_logs(log_dir, since, until)
    kinds = error_summary(records, top)
    table = Table("count", "event", "exception", "first seen", "last seen", "example")
    for k in kinds:
        table.add_row(
            str(k.count),
            k.event,
            k.exc_type or "-",
            f"{k.first_seen:%Y-%m-%d %H:%M:%S}",
            f"{k.last_seen:%Y-%m-%d %H:%M:%S}",
            f"{k.example[:80]} ({k.example_request_id or '-'})",
        )
    _emit(kinds, stats, as_json, table)


@logs_app.command("levels")
def logs_levels(
    since: SinceOpt = None, until: UntilOpt = None, as_json: JsonOpt = False, log_dir: LogDirOpt = None
) -> None:
    """Lines per level."""
    from ragvigil.ops.loganalysis import level_counts

    records, stats = _read_logs(log_dir, since, until)
    counts = level_counts(records)
    table = Table("level", "lines")
    for level, n in counts.items():
        table.add_row(level, str(n))
    _emit(counts, stats, as_json, table)


@logs_app.command("latency")
def logs_latency(
    by: Annotated[str, typer.Option(help="route or stage")] = "route",
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
    log_dir: LogDirOpt = None,
) -> None:
    """p50/p95/p99 per route or per pipeline stage."""
    from ragvigil.ops.loganalysis import latency_summary

    if by not in ("route", "stage"):
        raise typer.BadParameter("--by must be route or stage")
    records, stats = _read_logs(log_dir, since, until)
    rows = latency_summary(records, by=by)  # type: ignore[arg-type]
    table = Table(by, "count", "p50 ms", "p95 ms", "p99 ms", "max ms")
    for r in rows:
        table.add_row(r.name, str(r.count), f"{r.p50_ms:.1f}", f"{r.p95_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.max_ms:.1f}")
    _emit(rows, stats, as_json, table)


def _timeline(records, stats, as_json: bool, **ids: str) -> None:  # type: ignore[no-untyped-def]
    from ragvigil.ops.loganalysis import timeline

    try:
        lines = timeline(records, **ids)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    table = Table("time", "level", "event", "request", "details")
    skip = {"ts", "level", "event", "request_id", "session_id", "user_id", "logger"}
    for rec in lines:
        details = " ".join(f"{k}={v}" for k, v in rec.items() if k not in skip)
        table.add_row(
            str(rec.get("ts")), str(rec.get("level")), str(rec.get("event")), str(rec.get("request_id")), details[:120]
        )
    _emit(lines, stats, as_json, table)


@logs_app.command("new-key")
def logs_new_key() -> None:
    """Print a new key for the encrypted message log (set it as RAGVIGIL_MESSAGE_LOG_KEY)."""
    from ragvigil.ops.message_log import new_key

    print(new_key())


@logs_app.command("messages")
def logs_messages(
    session: Annotated[str | None, typer.Option(help="only this session")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Decrypt and show the conversation log (needs RAGVIGIL_MESSAGE_LOG_KEY)."""
    from ragvigil.ops.message_log import EncryptedMessageLog, MessageLogKeyError

    s = _settings()
    if s.message_log_key is None:
        err.print("[red]no message_log_key configured: the message log cannot be read[/red]")
        raise typer.Exit(2)
    log = EncryptedMessageLog(s.log_dir, s.message_log_key.get_secret_value())
    try:
        records = list(log.read(session))
    except MessageLogKeyError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(records, ensure_ascii=False))
        return
    table = Table("at", "session", "question", "answer")
    for r in records:
        table.add_row(r["at"], r["session_id"] or "-", r["question"][:80], r["answer"][:120])
    console.print(table)


@logs_app.command("session")
def logs_session(
    session_id: Annotated[str, typer.Argument(help="A chat session id (the API's session_id)")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
    log_dir: LogDirOpt = None,
) -> None:
    """Every log line of one chat session, in time order, across all files."""
    records, stats = _read_logs(log_dir, since, until)
    _timeline(records, stats, as_json, session_id=session_id)


@logs_app.command("user")
def logs_user(
    user_id: Annotated[str, typer.Argument(help="A user id as the client sent it (user_id)")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
    log_dir: LogDirOpt = None,
) -> None:
    """Every log line of one user, in time order, across all files."""
    records, stats = _read_logs(log_dir, since, until)
    _timeline(records, stats, as_json, user_id=user_id)
