"""``ragvigil ingest``, ``search`` and ``ask``: the knowledge base from the command line."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ragvigil.cli.common import KbOpt, check_length, console, err, load_settings_or_exit, refuse_if_served, runtime
from ragvigil.config import Settings

_settings = load_settings_or_exit
_runtime = runtime
_check_length = check_length


class SearchMode(StrEnum):
    hybrid = "hybrid"
    bm25 = "bm25"
    vector = "vector"


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
    refuse_if_served(s, "ingesting", f"upload through it (POST /api/v1/kb/{kb}/documents) or stop it first")
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
                if res.quarantined:
                    err.print(
                        f"[yellow]quarantined[/yellow] {path}: {res.quarantine_reason}; not used for answers until "
                        f"a clean copy is ingested or `ragvigil kb release {res.document_id} --kb {kb}`"
                    )
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


kb_app = typer.Typer(
    help="A knowledge base's documents: list them with their status, release a quarantined one.", no_args_is_help=True
)


def _catalog():  # type: ignore[no-untyped-def]
    """The catalog on the database directly (no engines loaded), so these commands work with the service down."""
    from ragvigil.knowledge.catalog import Catalog
    from ragvigil.storage.db import Database, migrate

    db = Database(_settings().db_url)
    migrate(db.engine)
    return Catalog(db)


@kb_app.command("documents")
def kb_documents(
    kb: KbOpt = None,
    quarantined: Annotated[bool, typer.Option("--quarantined", help="only the quarantined documents")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Documents with their status (quarantined ones say why). Exit 1 for an unknown knowledge base."""
    from sqlalchemy import select

    from ragvigil.api.schemas import DocumentOut
    from ragvigil.knowledge.catalog import KnowledgeBaseNotFound
    from ragvigil.storage.models import Document

    kb = kb or _settings().default_kb
    catalog = _catalog()
    try:
        kb_id = catalog.kb_id(kb)
    except KnowledgeBaseNotFound as exc:
        err.print(f"[red]{exc.public_message()}[/red]")
        raise typer.Exit(1) from None
    stmt = select(Document).where(Document.kb_id == kb_id).order_by(Document.source)
    if quarantined:
        stmt = stmt.where(Document.quarantined.is_(True))
    with catalog.db.session() as s:
        docs = [DocumentOut.model_validate(d, from_attributes=True) for d in s.scalars(stmt)]
    catalog.db.dispose()
    if as_json:
        print(json.dumps([d.model_dump(mode="json") for d in docs], ensure_ascii=False, indent=2))
        return
    table = Table("id", "status", "quality", "source", "reason")
    for d in docs:
        table.add_row(d.id, d.status, d.quality, d.source, d.quarantine_reason if d.quarantined else "")
    console.print(table)


@kb_app.command("release")
def kb_release(
    document_id: Annotated[str, typer.Argument(help="the document's id (from `ragvigil kb documents`)")],
    kb: KbOpt = None,
    who: Annotated[str, typer.Option(help="your name, for the record and the audit log")] = "cli",
) -> None:
    """Serve a quarantined document as it is (audited). Exit 1 if it is unknown or not quarantined."""
    from ragvigil.errors import RagvigilError
    from ragvigil.knowledge.ingest import release_document
    from ragvigil.ops.access import AuditLog

    kb = kb or _settings().default_kb
    catalog = _catalog()
    audit, target = AuditLog(catalog.db), f"{kb}/{document_id}"
    try:
        doc = release_document(catalog, kb, document_id, who)
    except RagvigilError as exc:
        audit.record(who[:160], "document.release", exc.code, target, "cli")
        catalog.db.dispose()
        err.print(f"[red]{exc.public_message()}[/red]")
        raise typer.Exit(1) from None
    audit.record(who[:160], "document.release", "ok", target, "cli", {"reason": doc.quarantine_reason})
    catalog.db.dispose()
    console.print(f"document {doc.id} ({doc.source}) released by {who}: it is used for answers again")
