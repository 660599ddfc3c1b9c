"""The vector store group: the faiss directory usable, and each knowledge base's index against its chunks.

A vector *server* backend (``vector_store.backend`` other than ``faiss``) brings its own check through
``register_vector_server_check``: this module reads only the setting, so it works before that backend exists.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ragvigil.config import Settings
from ragvigil.ops.doctor.database import doctor_engine, sqlite_missing
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok, skipped, warn
from ragvigil.storage.models import Chunk, KnowledgeBase

VectorServerCheck = Callable[[Settings, DoctorOptions], list[CheckResult]]
# the extension point: backend name (``vector_store.backend``) -> its check; faiss is this module's own
VECTOR_SERVER_CHECKS: dict[str, VectorServerCheck] = {}  # filled below
FIX_DRIFT = "restart ragvigil: its start-up resync re-queues the chunks missing and drops orphan vectors"


def register_vector_server_check(backend: str, check: VectorServerCheck) -> None:
    """Have ``ragvigil doctor`` run ``check`` when ``vector_store.backend`` is ``backend``."""
    VECTOR_SERVER_CHECKS[backend] = check


def backend_of(settings: Settings) -> str:
    section = getattr(settings, "vector_store", None)
    return str(getattr(section, "backend", None) or "faiss")


def check_chroma(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    """The Chroma server answers its heartbeat, and each knowledge base's collection holds its embedded chunks."""
    from ragvigil.knowledge.chroma_store import ChromaVectorStore
    from ragvigil.knowledge.vectorstore import VectorStoreError

    vs = settings.vector_store
    store = ChromaVectorStore(
        vs.url.get_secret_value(), settings.embeddings.dim, options.timeout_s, vs.batch, vs.collection_prefix
    )
    where = f"chroma at {store.address}"
    try:
        store.check()
    except VectorStoreError as exc:
        return [fail("vector_store", f"{where} does not answer: {exc}", "start it, or fix RAGVIGIL_VECTOR_STORE__URL")]
    rows = [ok("vector_store", f"{where} answers")]
    if sqlite_missing(settings.db_url) is not None:
        return rows
    try:
        embedded = _embedded_chunks(settings, options)
    except SQLAlchemyError as exc:
        return [
            *rows,
            skipped("vector_store.index", f"chunks not counted, the database cannot be read ({type(exc).__name__})"),
        ]
    for kb in sorted(embedded):
        try:
            stored = store.existing_count(kb) or 0
        except VectorStoreError as exc:
            rows.append(fail(f"vector_store.index[{kb}]", f"{where}: {exc}", "check the Chroma server's log"))
            continue
        found = f"{stored} vectors, {len(embedded[kb])} chunks marked embedded"
        if stored != len(embedded[kb]):
            rows.append(warn(f"vector_store.index[{kb}]", found, FIX_DRIFT))
        else:
            rows.append(ok(f"vector_store.index[{kb}]", found))
    return rows


def check_vectors(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    backend = backend_of(settings)
    if backend != "faiss":
        server_check = VECTOR_SERVER_CHECKS.get(backend)
        if server_check is None:
            return [skipped("vector_store", f"backend {backend}: no doctor check registered for it")]
        return server_check(settings, options)
    root = settings.index_dir
    usable = _directory(root)
    if usable.status != "ok":
        return [usable]
    return [usable, *_drift(settings, root, options)]


def _directory(root: Path) -> CheckResult:
    if not root.exists():
        return ok("vector_store", f"{root} not made yet (created at the first start)")
    if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
        return fail("vector_store", f"{root} is not a readable directory", f"chown/chmod {root} for ragvigil's user")
    try:
        with tempfile.NamedTemporaryFile(dir=root, prefix=".doctor-"):
            pass
    except OSError as exc:
        return fail("vector_store", f"{root} is not writable: {exc}", f"chown/chmod {root} for ragvigil's user")
    return ok("vector_store", f"{root} readable and writable")


def index_ids(path: Path) -> set[int]:
    """The chunk ids a faiss index file holds, its HNSW tombstones left out."""
    import faiss

    index = faiss.read_index(str(path))
    ids = set(faiss.vector_to_array(index.id_map).tolist()) if index.ntotal else set()
    tombs = path.with_suffix(".tomb.json")
    return ids - set(json.loads(tombs.read_text())) if tombs.exists() else ids


def index_file(root: Path, kb: str, kind: str) -> Path | None:
    """The knowledge base's index file: the configured kind's, else the newest of another kind (an index
    rebuilt as another kind when the base grew)."""
    configured = root / f"{kb}.{kind}.faiss"
    if configured.exists():
        return configured
    others = sorted(root.glob(f"{kb}.*.faiss"), key=lambda p: p.stat().st_mtime, reverse=True)
    exact = re.compile(rf"{re.escape(kb)}\.[a-z0-9_]+\.faiss")  # not another base whose name starts with kb.
    return next((p for p in others if exact.fullmatch(p.name)), None)


def _embedded_chunks(settings: Settings, options: DoctorOptions) -> dict[str, set[int]]:
    engine = doctor_engine(settings.db_url, options.timeout_s)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(KnowledgeBase.name, Chunk.id).join(Chunk, Chunk.kb_id == KnowledgeBase.id).where(Chunk.embedded)
            ).all()
            kbs = conn.execute(select(KnowledgeBase.name)).scalars().all()
    finally:
        engine.dispose()
    out: dict[str, set[int]] = {kb: set() for kb in kbs}
    for kb, chunk_id in rows:
        out[kb].add(chunk_id)
    return out


def _drift(settings: Settings, root: Path, options: DoctorOptions) -> list[CheckResult]:
    if sqlite_missing(settings.db_url) is not None:
        return []
    try:
        embedded = _embedded_chunks(settings, options)
    except SQLAlchemyError as exc:
        return [
            skipped("vector_store.index", f"chunks not counted, the database cannot be read ({type(exc).__name__})")
        ]
    rows = []
    for kb in sorted(embedded):
        path = index_file(root, kb, settings.retrieval.vector_index)
        try:
            stored = index_ids(path) if path is not None else set()
        except (RuntimeError, OSError, ValueError) as exc:
            rows.append(fail(f"vector_store.index[{kb}]", f"cannot read {path}: {exc}", FIX_DRIFT))
            continue
        chunks = embedded[kb]
        missing, orphans = len(chunks - stored), len(stored - chunks)
        found = f"{len(stored)} vectors, {len(chunks)} chunks marked embedded" + (f" ({path.name})" if path else "")
        if missing or orphans:
            rows.append(warn(f"vector_store.index[{kb}]", f"{found}: {missing} missing, {orphans} orphan", FIX_DRIFT))
        else:
            rows.append(ok(f"vector_store.index[{kb}]", found))
    return rows


register_vector_server_check("chroma", check_chroma)
