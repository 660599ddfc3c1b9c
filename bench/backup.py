"""Backup, verify and restore of a knowledge base of N documents: time and size of each step.

What it does (in a temp data dir, nothing leaves it, stops by itself):
  1. ingests ``--docs`` (10,000) small synthetic documents through the normal ingest path (BM25
     searchable at once) and ``--turns`` chat messages; background embedding is off;
  2. gives every chunk a vector: the first ``--embedded`` (20) documents' chunks get their real e5
     passage vectors, the rest random unit vectors (embedding 10k passages takes ~20 minutes on 2
     cores, and what a backup copies does not depend on how a vector was computed; the retrieval
     smoke test searches the first chunk, which has its real vector);
  3. ``create_backup`` (timed, bytes), ``verify_backup`` with the retrieval smoke test (timed),
     ``restore_backup`` into a fresh data dir (timed), then a runtime started on the restored dir
     and one search by vector (nothing re-embedded).

    .venv/bin/python bench/backup.py                # 10k documents
    .venv/bin/python bench/backup.py --docs 2000    # a smaller base
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, Row, console, machine_line, temp_data_dir

WORDS = (
    "account billing export invoice mobile notes password plan refund share storage sync team trial upgrade "
    "workspace backup calendar device folder language limit login offline order payment privacy quota report"
).split()


def synthetic_doc(i: int, rng: random.Random) -> bytes:
    topic = " ".join(rng.sample(WORDS, 3))
    body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90)))
    return f"# Article {i}: {topic}\n\n{body.capitalize()}.\n\nSee also article {rng.randint(0, i + 1)}.\n".encode()


def build(data_dir: Path, docs: int, embedded: int, turns: int, seed: int) -> tuple[object, float]:
    from sqlalchemy import select, update

    from ragvigil.app import Runtime
    from ragvigil.config import Settings
    from ragvigil.knowledge.embeddings import E5Embedder
    from ragvigil.storage.models import Chunk, Document

    settings = Settings(_env_file=None, data_dir=data_dir, background_embedding=False)  # type: ignore[call-arg]
    rt = Runtime(settings)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    first_doc_ids = []
    for i in range(docs):
        r = rt.ingestor.ingest_bytes("default", f"synthetic/{i:06d}.md", synthetic_doc(i, rng))
        if i < embedded:
            first_doc_ids.append(r.document_id)
    ingest_s = time.perf_counter() - t0
    with rt.db.session() as s:
        chunks = list(s.execute(select(Chunk.id, Chunk.text, Chunk.document_id).order_by(Chunk.id)))
    real = [c for c in chunks if c.document_id in set(first_doc_ids)]
    rest = [c for c in chunks if c.document_id not in set(first_doc_ids)]
    e5 = E5Embedder(threads=1)
    if real:
        rt.vectors.upsert("default", [c.id for c in real], e5.embed_passages([c.text for c in real]))
    vecs = np.random.default_rng(seed).standard_normal((len(rest), rt.vectors.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    for i in range(0, len(rest), 5000):
        part = rest[i : i + 5000]
        rt.vectors.upsert("default", [c.id for c in part], vecs[i : i + 5000])
    rt.vectors.flush()
    with rt.db.session(write=True) as s:
        s.execute(update(Chunk).values(embedded=True))
        s.execute(update(Document).values(vector_status="ready", status="ready"))
    if turns:
        from fastapi.testclient import TestClient

        from ragvigil.api.server import create_app

        with TestClient(create_app(runtime=rt), client=("127.0.0.1", 50000)) as c:
            sid = None
            for t in range(turns // 2):
                body = {"message": f"How do I {rng.choice(WORDS)} my {rng.choice(WORDS)}?"}
                if sid and t % 10:
                    body["session_id"] = sid
                sid = c.post("/api/v1/chat", json=body).json()["session_id"]
    return rt, ingest_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--embedded", type=int, default=20, help="documents whose chunks get real e5 vectors")
    ap.add_argument("--turns", type=int, default=200, help="chat messages stored (two per turn)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the temp data dirs")
    args = ap.parse_args()
    if not 1 <= args.docs <= 1_000_000 or not 0 <= args.turns <= 100_000:
        ap.error("--docs 1..1,000,000, --turns 0..100,000")

    from ragvigil.app import Runtime
    from ragvigil.config import Settings
    from ragvigil.knowledge.smoke import retrieval_smoke
    from ragvigil.ops.backup import create_backup, restore_backup, verify_backup

    console.print(machine_line())
    report = Report(f"backup of a knowledge base of {args.docs:,} documents")
    with temp_data_dir("backup", keep=args.keep) as root:
        rt, ingest_s = build(root / "data", args.docs, args.embedded, args.turns, args.seed)
        chunks = rt.vectors.count("default")
        report.add(Row("build", "documents ingested", args.docs, digits=0, note=f"{chunks:,} chunks with vectors"))
        report.add(Row("build", "ingest time", ingest_s, "s"))
        t0 = time.perf_counter()
        result = create_backup(rt.settings, root / "backups", flush_vectors=rt.vectors.flush)
        backup_s = time.perf_counter() - t0
        size = result.path.stat().st_size
        m = result.manifest
        report.add(Row("backup", "create (online, consistent)", backup_s, "s"))
        report.add(
            Row(
                "backup",
                "file size",
                size / 1e6,
                "MB",
                note=f"{len(m.files)} files, {sum(m.row_counts.values()):,} rows",
            )
        )
        db_bytes = (rt.settings.data_dir / "ragvigil.db").stat().st_size
        index_bytes = sum(p.stat().st_size for p in rt.settings.index_dir.glob("*.faiss"))
        report.add(Row("backup", "database + index on disk", (db_bytes + index_bytes) / 1e6, "MB"))
        rt.close()
        t0 = time.perf_counter()
        verified = verify_backup(result.path, rt.settings, smoke=retrieval_smoke)
        verify_s = time.perf_counter() - t0
        report.add(
            Row(
                "verify",
                "restore to scratch + integrity + counts + smoke",
                verify_s,
                "s",
                passed=verified.ok,
                target="passes",
                note=verified.error or "",
            )
        )
        fresh = Settings(_env_file=None, data_dir=root / "restored", background_embedding=False)  # type: ignore[call-arg]
        t0 = time.perf_counter()
        restore_backup(result.path, fresh)
        restore_s = time.perf_counter() - t0
        report.add(Row("restore", "restore into a fresh data dir", restore_s, "s"))
        t0 = time.perf_counter()
        rt2 = Runtime(fresh)
        start_s = time.perf_counter() - t0
        same = rt2.vectors.count("default") == chunks and rt2.ingestor.pending_vectors() == 0
        rt2.close()
        report.add(
            Row("restore", "start on the restored dir", start_s, "s", passed=same, target="same vectors, none pending")
        )
        report.add(Row("total", "restore-and-verify", verify_s + restore_s, "s"))
    report.print()
    return 0 if verified.ok and same else 1


if __name__ == "__main__":
    raise SystemExit(main())
