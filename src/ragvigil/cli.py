"""Command line: serve, ingest, search, ask, migrate, config, keys, audit, logs, alerts."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragvigil.cli_alerts import alerts_app
from ragvigil.cli_common import console, err, load_settings_or_exit, print_problems
from ragvigil.cli_drill import drill
from ragvigil.config import Settings, masked_dump
from ragvigil.config_check import check_settings

app = typer.Typer(help="ragvigil: a knowledge-base chat service that runs itself.", no_args_is_help=True)
config_app = typer.Typer(help="Show or check the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
logs_app = typer.Typer(help="Read the log files (rotated and gzipped ones too).", no_args_is_help=True)
app.add_typer(logs_app, name="logs")
keys_app = typer.Typer(
    help="API keys: create, list, revoke (roles: client, viewer, operator, admin).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(alerts_app, name="alerts")
app.command("drill")(drill)
_settings = load_settings_or_exit
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


class SearchMode(StrEnum):
    hybrid = "hybrid"
    bm25 = "bm25"
    vector = "vector"


def _runtime(settings: Settings, apply_migrations: bool = True):  # type: ignore[no-untyped-def]
    from ragvigil.app import Runtime
    from ragvigil.ops.logging import configure_logging

    configure_logging("WARNING", settings.log_dir, settings.log_json, stream=sys.stderr)
    return Runtime(settings, apply_migrations=apply_migrations)


def _reader_runtime(settings: Settings, kb: str):  # type: ignore[no-untyped-def]
    """A runtime for a command that only reads: exit 1 with the fix when there is nothing to read."""
    from sqlalchemy.exc import SQLAlchemyError

    from ragvigil.storage.schema import schema_problem

    try:
        problem = schema_problem(settings.db_url)
    except SQLAlchemyError as exc:
        err.print(f"[red]cannot reach the database[/red] ({str(exc).splitlines()[0][:200]}); check database_url")
        raise typer.Exit(1) from None
    if problem:
        err.print(f"[red]{problem}[/red] (data dir {settings.data_dir})")
        err.print("run `ragvigil migrate`, then `ragvigil ingest PATH` to add documents")
        raise typer.Exit(1)
    from ragvigil.knowledge.catalog import KnowledgeBaseNotFound

    rt = _runtime(settings, apply_migrations=False)
    try:
        searchable = len(rt.catalog.bm25(kb))
    except KnowledgeBaseNotFound:
        unknown = _unknown_kb(rt, kb)
        rt.close()
        raise unknown from None
    if not searchable:
        others = [n for n in rt.catalog.kb_names() if n != kb]
        rt.close()
        err.print(f"[red]knowledge base {kb!r} has no searchable documents[/red]")
        hint = f"; knowledge bases with documents may be among: {', '.join(others)} (--kb)" if others else ""
        err.print(f"add some with `ragvigil ingest PATH --kb {kb}`{hint}")
        raise typer.Exit(1)
    return rt


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (secrets masked)."""
    console.print_json(json.dumps(masked_dump(_settings())))


@config_app.command("check")
def config_check() -> None:
    """Validate the configuration: every problem with its source (variable, file); exits 2 if any."""
    s, problems = check_settings()
    print_problems(problems)
    if problems:
        errors = sum(p.level == "error" for p in problems)
        err.print(f"[red]{errors} error(s), {len(problems) - errors} warning(s)[/red]")
        raise typer.Exit(2)
    assert s is not None
    console.print(f"[green]configuration ok[/green] (profile {s.profile.value}, database {s.db_url.split('://')[0]})")


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    from ragvigil.storage.db import Database
    from ragvigil.storage.db import migrate as do_migrate

    s = _settings()
    db = Database(s.db_url)
    do_migrate(db.engine)
    console.print("[green]database is at the newest schema[/green]")


@app.command()
def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Files or directories (.md .markdown .txt .html .htm .pdf); hidden files skipped"),
    ],
    kb: KbOpt = None,
    vectors: Annotated[
        bool,
        typer.Option("--vectors/--defer-vectors", help="Embed now, or leave it to the server's background worker"),
    ] = True,
) -> None:
    """Ingest files; a bad file is reported and the rest continue. Exit 1 if any file failed or none was found."""
    from ragvigil.knowledge.loaders import SUPPORTED_SUFFIXES, discover

    s = _settings()
    kb = kb or s.default_kb
    missing = [p for p in paths if not p.exists()]
    files = [f for f in discover(paths) if f.exists()]
    if not files and not missing:
        err.print(
            f"[red]nothing to ingest:[/red] no files in {', '.join(map(str, paths))} "
            f"(supported: {' '.join(SUPPORTED_SUFFIXES)})"
        )
        raise typer.Exit(1)
    counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
    failures: list[tuple[str, str]] = [(str(p), "no such file or directory") for p in missing]
    counts["failed"] += len(missing)
    max_bytes = s.ingest.max_file_bytes
    rt = _runtime(s)
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
        ) as progress:
            task = progress.add_task("ingesting", total=len(files))
            for path in files:
                try:
                    size = path.stat().st_size
                    if size > max_bytes:
                        raise ValueError(f"file has {size} bytes; at most {max_bytes} (ingest.max_file_bytes)")
                    raw = path.read_bytes()
                except (OSError, ValueError) as exc:
                    counts["failed"] += 1
                    reason = str(exc) if isinstance(exc, ValueError) else f"cannot read file: {exc.strerror}"
                    failures.append((str(path), reason))
                    progress.advance(task)
                    continue
                res = rt.ingestor.ingest_bytes(kb, str(path), raw)
                counts[res.outcome] += 1
                if res.error:
                    failures.append((str(path), res.error))
                for w in res.warnings:
                    err.print(f"[yellow]warning[/yellow] {path}: {w}")
                progress.advance(task)
            if vectors:
                pending = rt.ingestor.pending_vectors()
                vtask = progress.add_task("embedding", total=pending)
                while n := rt.filler.run_once():
                    progress.advance(vtask, n)
                rt.vectors.flush()
    finally:
        rt.close()
    for path_text, reason in failures:
        err.print(f"[red]failed[/red] {path_text}: {reason}")
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" (knowledge base {kb!r})")
    if counts["failed"]:
        raise typer.Exit(1)


def _unknown_kb(rt, kb: str) -> typer.Exit:  # type: ignore[no-untyped-def]
    """Say which knowledge bases exist when the one asked for does not (exit 1, like the API's 404)."""
    known = ", ".join(rt.catalog.kb_names()) or "none yet"
    err.print(f"[red]no knowledge base named {kb!r}[/red] (known: {known})")
    err.print(f"add documents to it with `ragvigil ingest PATH --kb {kb}`, or pick a known one with --kb")
    return typer.Exit(1)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for (up to 2000 characters)")],
    kb: KbOpt = None,
    k: Annotated[int, typer.Option("-k", min=1, max=50, help="How many hits to show")] = 5,
    mode: Annotated[
        SearchMode, typer.Option(help="hybrid fuses BM25 and vector ranks; bm25 or vector alone")
    ] = SearchMode.hybrid,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON")] = False,
) -> None:
    """Print the retrieval hits for a query. Exit 1 when the knowledge base has no documents."""
    s = _settings()
    _check_length("QUERY", query, 2000)
    kb = kb or s.default_kb
    rt = _reader_runtime(s, kb)
    try:
        result = rt.retriever.search(kb, query, k, mode.value)
    finally:
        rt.close()
    if as_json:
        print(json.dumps([h.to_dict() for h in result.hits], ensure_ascii=False, indent=2))
        return
    table = Table("#", "score", "bm25", "vector", "relevant", "document", "anchor", "text")
    for i, h in enumerate(result.hits, 1):
        table.add_row(
            str(i),
            f"{h.score:.4f}",
            "-" if h.bm25_score is None else f"{h.bm25_score:.2f}",
            "-" if h.vector_score is None else f"{h.vector_score:.3f}",
            "yes" if h.relevant else "no",
            f"{h.title}\n[dim]{h.source}[/dim]",
            h.anchor,
            h.text[:120].replace("\n", " "),
        )
    console.print(table)
    if result.vector_error:
        err.print(f"[yellow]vector search unavailable:[/yellow] {result.vector_error}")


def _check_length(name: str, text: str, limit: int) -> None:
    if not text.strip():
        raise typer.BadParameter("must not be blank", param_hint=name)
    if len(text) > limit:
        raise typer.BadParameter(f"{len(text)} characters; at most {limit}", param_hint=name)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question, as a user would ask it")],
    kb: KbOpt = None,
    session: Annotated[
        str | None, typer.Option(help="Continue this session (its id is printed after each answer)")
    ] = None,
) -> None:
    """Answer a question from the knowledge base (the same pipeline as the API). Exit 1 when it has no documents."""
    from ragvigil.chat.pipeline import Turn
    from ragvigil.chat.sessions import SessionNotFound

    s = _settings()
    _check_length("QUESTION", question, s.max_message_chars)
    if session is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", session):
        raise typer.BadParameter("a session id is 1-64 letters, digits, '_' or '-'", param_hint="--session")
    kb = kb or s.default_kb
    rt = _reader_runtime(s, kb)
    try:
        turn = rt.pipeline.run(Turn(message=question, kb=kb, session_id=session))
    except SessionNotFound:
        # sessions belong to whoever opened them: the CLI continues only the sessions it opened
        err.print(
            f"[red]no chat session {session!r} opened from the command line[/red]; leave out --session to start one"
        )
        raise typer.Exit(1) from None
    finally:
        rt.close()
    console.print(turn.answer)
    for src in turn.sources:
        console.print(f"[dim][{src['n']}] {src['title']} — {src['anchor']} ({src['source']})[/dim]")
    if turn.degraded:
        err.print("[yellow]degraded:[/yellow] " + "; ".join(turn.degraded_reasons))
    err.print(f"[dim]session {turn.session_id}[/dim]")


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on (loopback unless keys are required)", show_default="RAGVIGIL_HOST, 127.0.0.1"
        ),
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port to listen on", show_default="RAGVIGIL_PORT, 8000")] = None,
) -> None:
    """Start the HTTP server."""
    import uvicorn

    from ragvigil.api.server import create_app
    from ragvigil.api.serving import DrainingServer
    from ragvigil.ops.logging import configure_logging, reset_logging

    s = _settings()
    configure_logging(s.log_level, s.log_dir, s.log_json, flush_interval=s.log_flush_interval)
    try:
        if s.alerts.enabled and s.alerts.rules_file is not None:
            from ragvigil.ops.alerts.rules import RuleFileError, load_rule_file

            try:
                load_rule_file(s.alerts.rules_file)
            except RuleFileError as exc:
                err.print(f"[red]alert rules rejected:[/red] {exc}")
                raise typer.Exit(2) from None
        host, port = host or s.host, port or s.port
        from ragvigil.app import open_routes_exposed

        if exposed := open_routes_exposed(s, host):
            err.print(f"[red]refusing to start in {s.profile.value}:[/red] {exposed}")
            raise typer.Exit(2)
        s = s.model_copy(update={"host": host, "port": port})  # the lifespan checks the real bind address
        if s.profile.value == "production":
            from ragvigil.app import Runtime

            rt = Runtime(s)
            problems = rt.startup_problems()
            rt.close()
            if problems:
                for p in problems:
                    err.print(f"[red]refusing to start in production:[/red] {p}")
                raise typer.Exit(2)
        err.print(
            f"ragvigil {s.profile.value} on http://{host}:{port}  (chat page: POST /api/v1/chat, metrics: /metrics)"
        )
        web = create_app(s)
        config = uvicorn.Config(web, host=host, port=port, log_config=None, access_log=False)
        runtime = lambda: getattr(web.state, "runtime", None)  # noqa: E731
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn re-raises it once it has stopped
            DrainingServer(config, s.shutdown_grace_s, runtime, on_stopped=reset_logging).run()
    finally:
        reset_logging()  # the lines still queued in the log writer


def _cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


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


@app.command()
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


if __name__ == "__main__":
    app()
