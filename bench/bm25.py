"""BM25 view benchmark: ``Bm25Index.search`` latency, the view's memory and its rebuild time.

The synthetic zh/en corpus of ``retrieval.py`` (synthetic tokens: each drawn word tokenized once) goes
into SQLite; a fresh child process then loads the production view through ``Catalog.bm25`` (so the
records are what ``_load_records`` makes of the rows) and reports:
  - the rebuild time (``Catalog.bm25`` on a cold catalog),
  - the RSS the view added to the child (after ``gc``; the child imported everything first),
  - ``Bm25Index.search`` p50/p95 for queries of 2-4 tokens of a random chunk (k = candidates, 30),
  - how many of those answers differ from bm25s's own ``get_scores`` + a full sort (must be 0).

    .venv/bin/python bench/bm25.py                    # 100k chunks
    .venv/bin/python bench/bm25.py --sizes 10000,100000 --queries 1000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import console, machine_line, percentiles_ms, temp_data_dir


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_db(path: Path, n_chunks: int, distinct_docs: int, seed: int) -> None:
    from sqlalchemy import insert

    from ragvigil.knowledge.tokenize import Tokenizer
    from ragvigil.storage.db import Database, migrate
    from ragvigil.storage.models import Chunk, Document, KnowledgeBase
    from retrieval import SECTIONS_PER_DOC, CorpusGen

    tokenizer = Tokenizer(path.parent / "cache")
    gen = CorpusGen(seed, tokenizer)
    n_docs = max(1, n_chunks // SECTIONS_PER_DOC)
    distinct = [gen.doc(i) for i in range(min(n_docs, distinct_docs))]
    db = Database(f"sqlite:///{path}")
    migrate(db.engine)
    with db.session(write=True) as s:
        kb = KnowledgeBase(name="bench")
        s.add(kb)
        s.flush()
        kb_id = kb.id
        docs, chunks = [], []
        cid = 0
        for i in range(n_docs):
            d = distinct[i % len(distinct)]
            doc_id = f"d{i:07d}"
            docs.append({"id": doc_id, "kb_id": kb_id, "source": f"synthetic/doc-{i:07d}.md", "title": d.title,
                         "status": "ready", "vector_status": "ready", "chunk_count": SECTIONS_PER_DOC,
                         "size_bytes": len(d.text)})  # fmt: skip
            assert d.section_tokens is not None and d.title_tokens is not None
            for j, section in enumerate(d.text.split("\n\n## ")[1:]):
                cid += 1
                head = section.split("\n", 1)[0]
                chunks.append({"id": cid, "document_id": doc_id, "kb_id": kb_id, "ordinal": j, "anchor": head,
                               "text": section, "tokens": " ".join(d.title_tokens + d.section_tokens[j]),
                               "embedded": True})  # fmt: skip
            if len(chunks) >= 20_000 or i == n_docs - 1:
                s.execute(insert(Document), docs)
                s.execute(insert(Chunk), chunks)
                docs, chunks = [], []


def child(db_path: Path, n_queries: int, seed: int, check: int) -> dict:
    from ragvigil.config import RetrievalSettings
    from ragvigil.knowledge.catalog import Catalog
    from ragvigil.knowledge.tokenize import Tokenizer
    from ragvigil.storage.db import Database

    k = RetrievalSettings().candidates
    tokenizer = Tokenizer(db_path.parent / "cache")
    tokenizer.tokens("预热 warm up")
    catalog = Catalog(Database(f"sqlite:///{db_path}"))
    gc.collect()
    before = rss_mb()
    t = time.perf_counter()
    index = catalog.bm25("bench")
    rebuild_s = time.perf_counter() - t
    gc.collect()
    view_mb = rss_mb() - before

    rng = np.random.default_rng(seed)
    tok_lists = []
    for ti in rng.choice(len(index), size=n_queries, replace=False):
        toks = [t for t in dict.fromkeys(index.records[ti].tokens) if not t.isdigit()]
        pick = sorted(rng.choice(len(toks), size=min(len(toks), 2 + int(rng.integers(0, 3))), replace=False))
        q = ""
        for w in (toks[j] for j in pick):
            q += (" " if q and (q[-1].isascii() or w[0].isascii()) else "") + w
        tok_lists.append(tokenizer.tokens(q))
    for toks in tok_lists[:20]:
        index.search(toks, k)
    times = []
    for toks in tok_lists:
        t = time.perf_counter()
        index.search(toks, k)
        times.append(time.perf_counter() - t)
    p = percentiles_ms(times)

    differ = 0
    for toks in tok_lists[:check]:  # against bm25s's own scores, ranked score desc then position asc
        scores = index._bm25.get_scores(toks)
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]
        want = [(index.records[i].id, float(scores[i])) for i in order if scores[i] > 0]
        got = [(r.id, s) for r, s in index.search(toks, k)]
        differ += got != want
    return {"chunks": len(index), "rebuild_s": rebuild_s, "view_mb": view_mb, "rss_mb": rss_mb(),
            "p50_ms": p["p50"], "p95_ms": p["p95"], "queries": n_queries, "checked": min(check, n_queries),
            "differ": differ}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000", help="corpus sizes in chunks, comma separated")
    ap.add_argument("--queries", type=int, default=500, help="timed queries per size")
    ap.add_argument("--check", type=int, default=200, help="queries compared with bm25s's get_scores")
    ap.add_argument("--distinct-docs", type=int, default=10_000, help="documents generated; more repeat them")
    ap.add_argument("--seed", type=int, default=20261124)
    ap.add_argument("--keep", action="store_true", help="keep the temp data dirs")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.queries, args.seed, args.check)))
        return 0
    console.print(machine_line())
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        with temp_data_dir(f"bm25-{n}", keep=args.keep) as data_dir:
            t = time.perf_counter()
            build_db(data_dir / "bench.db", n, args.distinct_docs, args.seed)
            console.print(f"[dim]{n:,} chunks into SQLite in {time.perf_counter() - t:.0f} s[/dim]")
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(data_dir / "bench.db"), "--queries", str(args.queries),
                 "--check", str(args.check), "--seed", str(args.seed)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            console.print(rows[-1])
    console.print(machine_line())
    console.print("| chunks | search p50 / p95 ms | view RSS MB | rebuild s | answers differing from get_scores |")
    console.print("|---|---|---|---|---|")
    for r in rows:
        console.print(
            f"| {r['chunks']:,} | {r['p50_ms']:.2f} / {r['p95_ms']:.2f} | {r['view_mb']:,.0f} | {r['rebuild_s']:.1f} "
            f"| {r['differ']} of {r['checked']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
