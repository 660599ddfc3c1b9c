"""Retrieval benchmark on a synthetic mixed Chinese/English corpus (10k and 100k chunks by default).

Measures, per corpus size:
  (a) chunk_text + Tokenizer.tokens + Bm25Index build throughput (target ≥ 2,000 chunks/s),
      against jieba ``lcut_for_search`` alone over the same text;
  (c) query latency p50/p95 of BM25 alone, vector alone and hybrid, through the production
      ``HybridRetriever.search`` over a real ``Catalog`` (SQLite) and ``FaissVectorStore``
      (flat and hnsw). Query vectors are precomputed, so the embedding is *not* in these
      numbers; it is reported on its own line. Target: hybrid p95 < 20 ms at 100k.
and once:
  (b) E5Embedder passage throughput on a sample, and the query embedding latency.

Passage vectors are SYNTHETIC (clustered, L2-normalised, e5-like cosines): embedding 100k passages
would take hours on 2 cores. Query vectors are a noisy copy of their target chunk's vector.

    .venv/bin/python bench/retrieval.py            # 10k + 100k chunks, ~5 minutes
    .venv/bin/python bench/retrieval.py --quick    # 10k chunks only, ~1 minute
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# Before numpy loads OpenBLAS: the exact-search baseline runs on one BLAS thread (faiss is unaffected).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from _common import (
    REPO_ROOT,
    Report,
    Row,
    console,
    exit_on_sigterm,
    machine_line,
    normalise_rows,
    percentiles_ms,
    temp_data_dir,
)

if TYPE_CHECKING:
    from ragvigil.knowledge.retrieval import HybridRetriever
    from ragvigil.knowledge.tokenize import Tokenizer
    from ragvigil.knowledge.vectorstore import FaissVectorStore

DIM = 384
SECTIONS_PER_DOC = 10  # every section body is 200-400 chars, so one section = one chunk

# A fixed English vocabulary (help-centre flavoured); the Chinese one comes from jieba's own dictionary.
EN_WORDS = """
account access action activity address admin alert app archive attachment audit backup badge balance
banner billing board browser bucket budget cache calendar camera card cart channel chart checkout client
clipboard cloud code comment company config connection contact content cookie copy coupon credit
customer dashboard data database date deadline default delete desktop device dialog discount document
domain download draft drive editor email encryption error event export extension feature feedback field
file filter folder font format forum gateway group guest history home icon image import inbox invoice
issue item key keyboard label language layout license limit link list locale lock login logo mail
manager member menu message meeting method migration mobile mode module monitor network notebook note
notice offline order owner package page password payment permission phone photo plan platform plugin
policy portal preview price printer privacy profile project proxy purchase query queue quota receipt
record refund region release reminder report request reset response role router rule sandbox scanner
schedule screen script search seat security server service session setting share shortcut signature
snippet software space storage subscription support sync system table tablet tag task team template
tenant test theme thread ticket timezone token tool trash trial update upgrade upload usage user
version video view wallet webhook widget window workspace zone fails cannot missing slow stuck expired
invalid blocked restore enable disable connect remove rename move change open close create find
""".split()


# ---------------------------------------------------------------------------------------------
# corpus


def zh_vocabulary(size: int) -> list[str]:
    """The ``size`` most frequent 2-4 character words of jieba's bundled dictionary (fixed, offline)."""
    import jieba

    from ragvigil.knowledge.tokenize import STOPWORDS

    path = Path(jieba.__file__).parent / "dict.txt"
    rows: list[tuple[int, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(" ")
        if len(parts) < 2:
            continue
        word, freq = parts[0], int(parts[1])
        if 2 <= len(word) <= 4 and all("\u4e00" <= ch <= "\u9fff" for ch in word) and word not in STOPWORDS:
            rows.append((-freq, word))
    rows.sort()
    return [w for _, w in rows[:size]]


def zipf(n: int, s: float = 1.0, offset: float = 10.0) -> np.ndarray:
    p = 1.0 / np.power(np.arange(n) + offset, s)
    return p / p.sum()


class _Draws:
    """Buffered random draws (one numpy call per million words, not one per word)."""

    def __init__(self, rng: np.random.Generator, words: list[str], p: np.ndarray) -> None:
        self.rng, self.words, self.p = rng, words, p
        self.buf: list[str] = []
        self.pos = 0

    def take(self, k: int) -> list[str]:
        if self.pos + k > len(self.buf):
            idx = self.rng.choice(len(self.words), size=1_000_000, p=self.p)
            self.buf = [self.words[i] for i in idx]
            self.pos = 0
        out = self.buf[self.pos : self.pos + k]
        self.pos += k
        return out


@dataclass
class Doc:
    source: str
    title: str
    text: str
    # with synthetic tokens: the BM25 tokens of the title and of each section (heading + body)
    title_tokens: tuple[str, ...] | None = None
    section_tokens: list[tuple[str, ...]] | None = None


class CorpusGen:
    """Deterministic pseudo-documents: a title, then 10 sections of 200-400 chars of zh/en sentences.

    With a ``tokenizer`` it also gives every section its BM25 tokens, made of the memoised tokens of
    the words it drew (``Tokenizer.tokens`` once per vocabulary word): jieba over 1M chunks (~300M
    characters at ~280k chars/s) would take longer than the rest of the run together.
    """

    def __init__(self, seed: int, tokenizer: Tokenizer | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        zh = zh_vocabulary(4000)
        self.zh = _Draws(self.rng, zh, zipf(len(zh)))
        self.en = _Draws(self.rng, EN_WORDS, zipf(len(EN_WORDS), s=0.9, offset=5))
        self._u: np.ndarray = np.empty(0)
        self._upos = 0
        self.tokenizer = tokenizer
        self._memo: dict[str, tuple[str, ...]] = {}

    def u(self) -> float:
        if self._upos >= len(self._u):
            self._u = self.rng.random(1_000_000)
            self._upos = 0
        self._upos += 1
        return float(self._u[self._upos - 1])

    def tokens_of(self, words: list[str]) -> tuple[str, ...]:
        """The BM25 tokens of ``words`` (each word tokenized once per process)."""
        out: list[str] = []
        for w in words:
            t = self._memo.get(w)
            if t is None:
                assert self.tokenizer is not None
                t = self._memo[w] = tuple(self.tokenizer.tokens(w))
            out.extend(t)
        return tuple(out)

    def sentence(self) -> tuple[str, list[str]]:
        n = 5 + int(self.u() * 9)
        if self.u() < 0.6:  # Chinese sentence, sometimes with an English term in it
            words = self.zh.take(n)
            if self.u() < 0.3:
                words[int(self.u() * n)] = f" {self.en.take(1)[0]} "
            return "".join(words) + ("。" if self.u() < 0.8 else "？"), words
        words = self.en.take(n)
        return " ".join(words).capitalize() + ".", words

    def body(self) -> tuple[str, list[str]]:
        target = 200 + int(self.u() * 140)
        parts: list[str] = []
        drawn: list[str] = []
        size = 0
        while size < target:
            s, words = self.sentence()
            parts.append(s)
            drawn.extend(words)
            size += len(s) + 1
        return " ".join(parts)[:400], drawn

    def heading(self) -> tuple[str, list[str]]:
        if self.u() < 0.6:
            words = self.zh.take(2 + int(self.u() * 2))
            return "".join(words), words
        words = self.en.take(2 + int(self.u() * 2))
        return " ".join(words).capitalize(), words

    def doc(self, i: int) -> Doc:
        title, title_words = self.heading()
        sections: list[str] = []
        section_words: list[list[str]] = []
        for _ in range(SECTIONS_PER_DOC):
            (head, head_words), (body, body_words) = self.heading(), self.body()
            sections.append(f"## {head}\n\n{body}")
            section_words.append(head_words + body_words)
        doc = Doc(f"synthetic/doc-{i:06d}.md", title, f"# {title}\n\n" + "\n\n".join(sections) + "\n")
        if self.tokenizer is not None:
            doc.title_tokens = self.tokens_of(title_words)
            doc.section_tokens = [self.tokens_of(w) for w in section_words]
        return doc


def synthetic_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    """Clustered unit vectors whose cosines look like e5's (a shared direction + topic + noise)."""
    clusters = max(16, n // 100)
    common = normalise_rows(rng.standard_normal((1, DIM), dtype=np.float32))
    centroids = normalise_rows(rng.standard_normal((clusters, DIM), dtype=np.float32))
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 20_000):
        m = min(20_000, n - start)
        assign = rng.integers(0, clusters, m)
        noise = normalise_rows(rng.standard_normal((m, DIM), dtype=np.float32))
        out[start : start + m] = normalise_rows(common + 0.45 * centroids[assign] + 0.35 * noise)
    return out


class PrecomputedQueryEmbedder:
    """Stands in for the e5 query embedder: returns vectors computed before timing starts."""

    name = "precomputed"
    dim = DIM

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        return self.vectors[text]

    def embed_passages(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - never called
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# measurements


def lat_row(section: str, name: str, seconds: list[float], **kw) -> Row:  # type: ignore[no-untyped-def]
    p = percentiles_ms(seconds)
    return Row(
        section,
        name,
        p["p95"],
        "ms",
        display=f"{p['p50']:.2f} / {p['p95']:.2f} ms",
        digits=2,
        extra=p,
        **kw,
    )


def time_each(fn, items: list, warmup: int = 10) -> list[float]:  # type: ignore[no-untyped-def]
    for it in items[:warmup]:
        fn(it)
    out = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        out.append(time.perf_counter() - t)
    return out


def bench_embedding(report: Report, args: argparse.Namespace, passages: list[str], queries: list[str]) -> None:
    from ragvigil.knowledge.embeddings import E5Embedder

    t = time.perf_counter()
    emb = E5Embedder(threads=args.embed_threads)
    emb.embed_query("warm up")
    load_s = time.perf_counter() - t
    sec = f"embedding ({args.embed_threads} thr)"
    fresh = list(dict.fromkeys(queries))[: args.embed_queries]
    q_times = time_each(emb.embed_query, fresh, warmup=0)
    qrow = lat_row(sec, f"query embedding (E5Embedder.embed_query, {len(fresh)} fresh)", q_times)
    q_per_s = len(q_times) / sum(q_times)
    qrow.note = f"{q_per_s:.0f} queries/s; load + first call {load_s:.2f} s; not in the retrieval latencies"
    report.add(qrow)

    batch = 16
    t = time.perf_counter()
    done = 0
    for i in range(0, len(passages), batch):
        emb.embed_passages(passages[i : i + batch])
        done += len(passages[i : i + batch])
        console.print(f"[dim]  embedded {done}/{len(passages)} passages[/dim]", end="\r")
    el = time.perf_counter() - t
    chars = sum(len(p) for p in passages)
    report.add(
        Row(
            sec,
            f"(b) passage embedding, sample of {len(passages)} (batch {batch})",
            len(passages) / el,
            "passages/s",
            note=f"{chars / el:,.0f} chars/s, avg {chars / len(passages):.0f} chars/passage; {el:.1f} s; "
            f"reported separately (not a target)",
        )
    )


class LiveReport(Report):
    """Also prints each row when it is measured: a 1M run takes long, and a stopped run keeps what it saw."""

    def add(self, row: Row) -> Row:
        super().add(row)
        console.print(
            f"[dim]  = {row.section} | {row.name} | {row.display or row.value} {row.unit} | {row.note or ''}[/dim]"
        )
        return row


# hybrid p95 (ms), recall@10 and the index kind that served it, by (size label, kind): the closing summary
hybrid_p95: dict[tuple[str, str], float] = {}
recall_at10: dict[tuple[str, str], float] = {}
kind_used: dict[tuple[str, str], str] = {}


def print_kind_summary(kinds: list[str]) -> None:
    """One line per size: hybrid p95 and recall@10 of flat, hnsw and auto side by side (auto names its kind)."""
    from rich.table import Table

    table = Table(
        title="hybrid p95 by index kind (ms, excl. query embedding; recall@10 of the store vs exact)",
        title_justify="left",
    )
    table.add_column("size")
    for kind in kinds:
        table.add_column(kind, justify="right")
    for label in dict.fromkeys(lb for lb, _ in hybrid_p95):
        cells = []
        for kind in kinds:
            p = hybrid_p95.get((label, kind))
            shown = "" if p is None else f"{p:.2f} (r {recall_at10[(label, kind)]:.3f})"
            if p is not None and kind == "auto":
                shown += f" {kind_used[(label, kind)]}"
            cells.append(shown)
        table.add_row(label, *cells)
    console.print(table)


def rss_row(section: str, name: str) -> Row:
    """Peak resident memory of this process so far, with the current one in the note (Linux units)."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        now_mb = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        note = f"now {now_mb:,.0f} MB"
    except (OSError, ValueError):
        note = ""
    return Row(section, name, peak_mb, "MB peak", note=note, digits=0)


@dataclass
class Probe:
    """Hybrid queries in a thread while the store fills: what a user sees while the HNSW build runs."""

    retriever: HybridRetriever
    store: FaissVectorStore
    queries: list[str]
    interval_s: float
    max_samples: int
    stop: threading.Event = field(default_factory=threading.Event)
    # (start, seconds, kind at the start), one per answered query; errors by message
    samples: list[tuple[float, float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    swapped_at: float | None = None

    def run(self) -> None:
        i = 0
        while not self.stop.is_set() and len(self.samples) < self.max_samples:
            kind = self.store.kind_of("bench")
            if kind == "hnsw" and self.swapped_at is None:
                self.swapped_at = time.perf_counter()
            t = time.perf_counter()
            try:
                self.retriever.search("bench", self.queries[i % len(self.queries)], mode="hybrid")
                self.samples.append((t, time.perf_counter() - t, kind))
            except Exception as exc:  # a bench records what broke and goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")
            i += 1
            self.stop.wait(self.interval_s)

    def watch_swap(self) -> None:
        """The moment the served kind turns HNSW, polled more often than a flat query at 1M returns."""
        while not self.stop.is_set() and self.swapped_at is None:
            if self.store.kind_of("bench") == "hnsw":
                self.swapped_at = time.perf_counter()
                return
            self.stop.wait(0.005)


def fill_auto(
    report: Report,
    sec: str,
    args: argparse.Namespace,
    store: FaissVectorStore,
    retriever: HybridRetriever,
    ids: np.ndarray,
    vecs: np.ndarray,
    queries: list[str],
) -> float:
    """Fill an ``auto`` store as fast as upserts go, with hybrid queries running beside it; returns the
    seconds until the background build swapped HNSW in (the fill time of this kind)."""
    probe = Probe(retriever, store, queries, args.probe_interval, args.probe_max)
    threads = [threading.Thread(target=probe.run, daemon=True), threading.Thread(target=probe.watch_swap, daemon=True)]
    crossed_at: float | None = None
    crossed_count = 0
    t0 = time.perf_counter()
    started = False
    for start in range(0, len(vecs), args.upsert_batch):
        store.upsert("bench", ids[start : start + args.upsert_batch].tolist(), vecs[start : start + args.upsert_batch])
        if not started:  # the probe starts once the index has something to find
            for th in threads:
                th.start()
            started = True
        if crossed_at is None and start + args.upsert_batch >= args.auto_threshold:
            crossed_at, crossed_count = time.perf_counter(), min(len(vecs), start + args.upsert_batch)
        console.print(f"[dim]  auto: {start + args.upsert_batch:,} vectors[/dim]", end="\r")
    filled_at = time.perf_counter()
    finished = store.wait_rebuild("bench", args.rebuild_timeout)
    done_at = time.perf_counter()
    # a few answers from the swapped-in index, then stop the probe
    stop_after = time.perf_counter() + 2.0
    while time.perf_counter() < stop_after and probe.swapped_at is None:
        time.sleep(0.01)
    time.sleep(min(1.0, args.probe_interval * 20))
    probe.stop.set()
    for th in threads:
        th.join(60)
    swapped_at = probe.swapped_at or done_at
    kind = store.kind_of("bench")
    report.add(
        Row(
            sec,
            f"auto: index kind after the fill (threshold {args.auto_threshold:,})",
            store.count("bench"),
            "vectors",
            note=f"{kind}; the build {'finished' if finished else 'still ran'} {done_at - filled_at:.1f} s after the fill "
            f"({filled_at - t0:.1f} s)",
            digits=0,
        )
    )
    if crossed_at is not None:
        report.add(
            Row(
                sec,
                "auto: background HNSW build, threshold crossed → HNSW serving",
                swapped_at - crossed_at,
                "s",
                target="HNSW serves after it",
                passed=kind == "hnsw" and finished,
                note=f"crossed at {crossed_count:,} vectors; the fill went on meanwhile, so the build took in every "
                f"write up to {len(vecs):,} (logged and replayed before the swap)",
                digits=1,
            )
        )
        during = [(t, d, k) for t, d, k in probe.samples if t >= crossed_at and k == "flat"]
        kinds = sorted({k for _, _, k in during})
        report.add(
            lat_row(
                sec,
                f"auto: hybrid queries answered during the build ({len(during)}, served by {'/'.join(kinds) or '-'})",
                [d for _, d, _ in during],
                target="answered, 0 errors",
                passed=bool(during) and not probe.errors and kinds == ["flat"],
                note=f"one query every {args.probe_interval * 1000:.0f} ms beside the fill; errors {len(probe.errors)}"
                + (f" (first: {probe.errors[0]})" if probe.errors else ""),
            )
        )
        # the answer that spanned the swap (flush of the new index under the store's lock) and the ones after it
        spanning = [d for t, d, _ in probe.samples if t < swapped_at <= t + d]
        after = [d for _, d, k in probe.samples if k == "hnsw"]
        report.add(
            lat_row(
                sec,
                f"auto: hybrid queries after the swap ({len(after)})",
                after,
                note=(
                    f"the query across the swap took {spanning[0] * 1000:.0f} ms"
                    if spanning
                    else "no query spanned the swap"
                ),
            )
        )
    return swapped_at - t0


def bench_size(report: Report, args: argparse.Namespace, n_chunks: int, gen_seed: int) -> list[str]:
    """Everything for one corpus size; returns the query texts (for the embedding section)."""
    import faiss
    from sqlalchemy import insert

    from ragvigil.config import RetrievalSettings
    from ragvigil.knowledge.catalog import Catalog
    from ragvigil.knowledge.chunking import chunk_text
    from ragvigil.knowledge.ingest import Ingestor, indexable_text
    from ragvigil.knowledge.lexical import Bm25Index, ChunkRecord
    from ragvigil.knowledge.retrieval import HybridRetriever
    from ragvigil.knowledge.tokenize import Tokenizer
    from ragvigil.knowledge.vectorstore import FaissVectorStore
    from ragvigil.storage.db import Database, migrate
    from ragvigil.storage.models import Chunk, Document, KnowledgeBase

    label = f"{n_chunks // 1000}k" if n_chunks >= 1000 else str(n_chunks)
    sec = f"N={label}"
    rs = RetrievalSettings()
    rng = np.random.default_rng(gen_seed + 1)
    n_docs = max(1, n_chunks // SECTIONS_PER_DOC)

    with temp_data_dir(f"retrieval-{label}", keep=args.keep) as data_dir:
        console.rule(f"[bold]{label} chunks ({n_docs:,} documents)")
        tokenizer = Tokenizer(data_dir / "cache")
        tokenizer.tokens("预热 warm up")  # loads jieba's dictionary (not part of the throughput)
        synthetic = args.tokens == "synthetic" or (args.tokens == "auto" and n_chunks > args.jieba_max)
        t = time.perf_counter()
        gen = CorpusGen(gen_seed, tokenizer if synthetic else None)
        docs = []
        distinct = min(n_docs, args.distinct_docs)
        for i in range(distinct):
            docs.append(gen.doc(i))
            if i % 10_000 == 0:
                console.print(f"[dim]  generated {i:,} documents[/dim]", end="\r")
        # beyond --distinct-docs, documents repeat the distinct ones under new names: BM25's posting lists
        # grow with the corpus as they would (same word distribution), at a fraction of the time
        for i in range(distinct, n_docs):
            d = docs[i % distinct]
            docs.append(Doc(f"synthetic/doc-{i:07d}.md", d.title, d.text, d.title_tokens, d.section_tokens))
        console.print(
            f"generated {n_docs:,} documents ({distinct:,} distinct) in {time.perf_counter() - t:.1f} s"
            + (" (with synthetic tokens: memoised per drawn word, no jieba over the corpus)" if synthetic else "")
        )

        # (a) chunk + tokenize + BM25 build -------------------------------------------------
        gc.collect()
        t0 = time.perf_counter()
        pieces = [chunk_text(d.text, d.title, rs.chunk_chars, rs.chunk_overlap) for d in docs[:distinct]]
        pieces += [pieces[i % distinct] for i in range(distinct, n_docs)]  # a repeat chunks as its original
        t1 = time.perf_counter()
        records: list[ChunkRecord] = []
        cid = 0
        total_chars = 0
        for di, (d, ps) in enumerate(zip(docs, pieces, strict=True)):
            # synthetic tokens hold when one section made one chunk (else this document goes through jieba)
            given = d.section_tokens if d.section_tokens is not None and len(ps) == len(d.section_tokens) else None
            for j, p in enumerate(ps):
                cid += 1
                text = indexable_text(d.title, p.anchor, p.text)
                total_chars += len(text)
                toks = (d.title_tokens or ()) + given[j] if given is not None else tuple(tokenizer.tokens(text))
                records.append(ChunkRecord(cid, f"d{di:06d}", d.title, d.source, p.anchor, p.text, toks))
            if di % 2000 == 0:
                console.print(f"[dim]  tokenized {cid:,} chunks[/dim]", end="\r")
        t2 = time.perf_counter()
        if not synthetic:  # at synthetic sizes the Catalog.bm25 rebuild below is the one BM25 build
            Bm25Index(records)
        t3 = time.perf_counter()
        n = len(records)
        total = t3 - t0
        console.print(
            f"{n:,} chunks (avg {total_chars / n:.0f} chars incl. heading path): chunk {t1 - t0:.1f} s, "
            f"tokenize {t2 - t1:.1f} s, BM25 build {t3 - t2:.1f} s"
        )

        # baseline: jieba search-mode segmentation alone over (a sample of) the same texts
        sample = records[: min(n, args.baseline_sample)]
        jb = tokenizer._jieba  # the same jieba instance, already initialised
        texts = [indexable_text(r.title, r.anchor, r.text) for r in sample]
        tb = time.perf_counter()
        for s in texts:
            jb.lcut_for_search(s)
        jieba_s = time.perf_counter() - tb
        jieba_rate = len(texts) / jieba_s
        jieba_cps = sum(len(s) for s in texts) / jieba_s

        distinct_chunks = sum(len(ps) for ps in pieces[:distinct])
        report.add(
            Row(
                sec,
                "chunk_text",
                distinct_chunks / (t1 - t0),
                "chunks/s",
                note=f"over the {distinct_chunks:,} distinct chunks",
                digits=0,
            )
        )
        if synthetic:
            report.add(
                Row(
                    sec,
                    "tokens: synthetic (memoised per drawn word)",
                    float(np.mean([len(r.tokens) for r in records])),
                    "tokens/chunk",
                    note=f"jieba over {total_chars:,} chars would take ~{total_chars / jieba_cps:,.0f} s (jieba alone); "
                    "throughput row (a) not measured at this size",
                    digits=1,
                )
            )
        else:
            report.add(
                Row(
                    sec,
                    "Tokenizer.tokens (jieba search mode)",
                    n / (t2 - t1),
                    "chunks/s",
                    note=f"{total_chars / (t2 - t1):,.0f} chars/s; {np.mean([len(r.tokens) for r in records]):.1f} tokens/chunk",
                    digits=0,
                )
            )
            report.add(Row(sec, "Bm25Index build", t3 - t2, "s", note=f"{n / (t3 - t2):,.0f} chunks/s", digits=2))
        if not synthetic:
            report.add(
                Row(
                    sec,
                    "(a) chunk + tokenize + BM25 build",
                    n / total,
                    "chunks/s",
                    target="≥ 2,000",
                    passed=n / total >= 2000,
                    baseline_name=f"jieba lcut_for_search alone ({len(texts):,} chunks)",
                    baseline=jieba_rate,
                    note=f"{total:.1f} s total; excludes loading/repair and SQLite writes",
                    digits=0,
                )
            )

        # the same corpus in SQLite (bulk insert by this harness, with the tokens computed above)
        db = Database(f"sqlite:///{data_dir / 'bench.db'}")
        migrate(db.engine)
        t = time.perf_counter()
        with db.session() as s:
            kb = KnowledgeBase(name="bench")
            s.add(kb)
            s.flush()
            kb_id = kb.id
            s.execute(
                insert(Document),
                [
                    {
                        "id": f"d{i:06d}",
                        "kb_id": kb_id,
                        "source": d.source,
                        "title": d.title,
                        "status": "ready",
                        "vector_status": "ready",
                        "chunk_count": len(pieces[i]),
                        "size_bytes": len(d.text.encode()),
                    }
                    for i, d in enumerate(docs)
                ],
            )
            for start in range(0, n, 20_000):
                s.execute(
                    insert(Chunk),
                    [
                        {
                            "id": r.id,
                            "document_id": r.document_id,
                            "kb_id": kb_id,
                            "ordinal": 0,
                            "anchor": r.anchor,
                            "text": r.text,
                            "tokens": " ".join(r.tokens),
                            "embedded": True,
                        }
                        for r in records[start : start + 20_000]
                    ],
                )
        console.print(f"SQLite bulk insert of {n:,} chunks (harness): {time.perf_counter() - t:.1f} s")

        # queries: 2-4 tokens of a random target chunk, Chinese tokens joined, English spaced
        qrng = np.random.default_rng(gen_seed + 2)
        targets = qrng.choice(n, size=args.queries, replace=False)
        queries: list[str] = []
        for ti in targets:
            toks = [t for t in dict.fromkeys(records[ti].tokens) if not t.isdigit()]
            pick = [
                toks[j]
                for j in sorted(
                    qrng.choice(len(toks), size=min(len(toks), 2 + int(qrng.integers(0, 3))), replace=False)
                )
            ]
            q = ""
            for w in pick:
                q += (" " if q and (q[-1].isascii() or w[0].isascii()) else "") + w
            queries.append(q)
        target_ids = [records[ti].id for ti in targets]

        # production ingest path on a small sample (load + repair + chunk + tokenize + SQLite)
        catalog = Catalog(db)
        ingestor = Ingestor(catalog, tokenizer, rs, None)
        sample_docs = docs[: args.ingest_docs]
        t = time.perf_counter()
        ingested = sum(ingestor.ingest_bytes("ingest-sample", d.source, d.text.encode()).chunks for d in sample_docs)
        el = time.perf_counter() - t
        report.add(
            Row(
                sec,
                f"Ingestor.ingest_bytes, {len(sample_docs)} docs (SQLite)",
                ingested / el,
                "chunks/s",
                note="production ingest path, for reference",
                digits=0,
            )
        )
        del records, pieces
        gc.collect()

        # the production BM25 view, rebuilt from the stored tokens (happens on the first query after an ingest)
        t = time.perf_counter()
        index = catalog.bm25("bench")
        rebuild_s = time.perf_counter() - t
        report.add(
            Row(
                sec,
                "Catalog.bm25 rebuild from stored tokens",
                rebuild_s,
                "s",
                note="runs inside the first query after any ingest",
                digits=2,
            )
        )
        ids_in_order = np.asarray([r.id for r in index.records], dtype=np.int64)

        vecs = synthetic_vectors(len(index), rng)
        pos_of = {cid: i for i, cid in enumerate(ids_in_order.tolist())}
        qvecs = {}
        for q, tid in zip(queries, target_ids, strict=True):
            noise = normalise_rows(rng.standard_normal((1, DIM), dtype=np.float32))[0]
            qvecs.setdefault(q, normalise_rows((vecs[pos_of[tid]] + 0.25 * noise)[None, :])[0])
        qlist = [qvecs[q] for q in queries]
        tok_lists = [tokenizer.tokens(q) for q in queries]

        def exact(qv: np.ndarray, k: int = rs.candidates) -> np.ndarray:
            scores = vecs @ qv
            top = np.argpartition(-scores, k - 1)[:k]
            return ids_in_order[top[np.argsort(-scores[top])]]

        t_bm25_raw = time_each(lambda toks: index.search(toks, rs.candidates), tok_lists)
        t_exact = time_each(exact, qlist)
        report.add(lat_row(sec, "BM25 raw: Bm25Index.search (tokens given)", t_bm25_raw, note="p50 / p95"))
        report.add(lat_row(sec, "exact numpy dot + top-30 (1 BLAS thread; vector baseline)", t_exact))
        bm25_raw_p50 = percentiles_ms(t_bm25_raw)["p50"]
        exact_p50 = percentiles_ms(t_exact)["p50"]
        exact_top10 = [set(exact(qv, 10).tolist()) for qv in qlist]

        # BM25 alone through the production retriever (mode bm25 never touches the embedder or the store)
        bm25_only = HybridRetriever(catalog, tokenizer, None, None, rs)
        t_bm25 = time_each(lambda q: bm25_only.search("bench", q, mode="bm25"), queries)
        report.add(
            lat_row(
                sec,
                "BM25 alone: HybridRetriever.search(mode=bm25)",
                t_bm25,
                baseline_name="Bm25Index.search p50",
                baseline=bm25_raw_p50,
                ratio=percentiles_ms(t_bm25)["p50"] / bm25_raw_p50,
            )
        )
        report.add(rss_row(sec, f"RSS with the BM25 view of {len(index):,} chunks and the vectors"))
        auto_root: Path | None = None
        for kind in args.kinds:
            root = data_dir / f"index-{kind}"
            # at 1M one HNSW build takes most of the run: forced hnsw then opens the file the auto store
            # built in the background (same M, efConstruction and efSearch) instead of building it again
            reuse = kind == "hnsw" and auto_root is not None and len(vecs) >= args.hnsw_reuse_from
            if kind == "hnsw" and auto_root is None and "auto" in args.kinds and len(vecs) >= args.hnsw_reuse_from:
                report.add(
                    Row(f"{sec} {kind}", "hnsw: skipped, the auto store's build did not finish", None, note="see auto")
                )
                continue
            store = FaissVectorStore(
                auto_root if reuse and auto_root is not None else root,
                DIM,
                kind,  # type: ignore[arg-type]
                auto_threshold=args.auto_threshold,
            )
            retriever = HybridRetriever(catalog, tokenizer, PrecomputedQueryEmbedder(qvecs), store, rs)
            if reuse:
                t = time.perf_counter()
                loaded = store.count("bench")
                report.add(
                    Row(
                        f"{sec} {kind}",
                        "hnsw: the auto store's HNSW file opened as a forced hnsw store",
                        time.perf_counter() - t,
                        "s",
                        note=f"{loaded:,} vectors; not built again (--hnsw-reuse-from {args.hnsw_reuse_from:,})",
                        digits=1,
                    )
                )
            elif kind == "auto":
                fill = fill_auto(report, f"{sec} {kind}", args, store, retriever, ids_in_order, vecs, queries)
                # forced hnsw may open the auto store's file only once the build wrote it
                auto_root = root if store.kind_of("bench") == "hnsw" else None
            else:
                t = time.perf_counter()
                for start in range(0, len(vecs), args.upsert_batch):
                    store.upsert(
                        "bench",
                        ids_in_order[start : start + args.upsert_batch].tolist(),
                        vecs[start : start + args.upsert_batch],
                    )
                    console.print(f"[dim]  {kind}: {start + args.upsert_batch:,} vectors[/dim]", end="\r")
                fill = time.perf_counter() - t
            if not reuse:
                report.add(
                    Row(
                        f"{sec} {kind}",
                        f"FaissVectorStore({kind}) fill, upsert batch {args.upsert_batch}",
                        len(vecs) / fill,
                        "vectors/s",
                        note=f"{fill:.1f} s; synthetic vectors"
                        + ("; until the background build swapped in HNSW" if kind == "auto" else ""),
                        digits=0,
                    )
                )

            t_vec_raw = time_each(lambda qv, store=store: store.search("bench", qv, rs.candidates), qlist)
            top10 = [{i for i, _ in store.search("bench", qv, 10)} for qv in qlist]
            recall = float(np.mean([len(a & b) / 10 for a, b in zip(top10, exact_top10, strict=True)]))
            vec_raw_p50 = percentiles_ms(t_vec_raw)["p50"]
            report.add(
                lat_row(
                    f"{sec} {kind}",
                    f"vector raw: store.search top-{rs.candidates}",
                    t_vec_raw,
                    baseline_name="exact numpy p50",
                    baseline=exact_p50,
                    ratio=vec_raw_p50 / exact_p50,
                    note=f"recall@10 vs exact {recall:.3f}",
                )
            )
            t_vec = time_each(lambda q, r=retriever: r.search("bench", q, mode="vector"), queries)
            report.add(
                lat_row(
                    f"{sec} {kind}",
                    "vector alone: HybridRetriever.search(mode=vector)",
                    t_vec,
                    baseline_name="store.search p50",
                    baseline=vec_raw_p50,
                    ratio=percentiles_ms(t_vec)["p50"] / vec_raw_p50,
                )
            )
            t_hyb = time_each(lambda q, r=retriever: r.search("bench", q, mode="hybrid"), queries)
            p_hyb = percentiles_ms(t_hyb)
            found = np.mean(
                [
                    tid in {h.chunk_id for h in retriever.search("bench", q).hits}
                    for q, tid in zip(queries, target_ids, strict=True)
                ]
            )
            report.add(
                lat_row(
                    f"{sec} {kind}",
                    "hybrid: HybridRetriever.search(mode=hybrid)",
                    t_hyb,
                    target="p95 < 20 ms",
                    passed=p_hyb["p95"] < 20.0,
                    baseline_name="BM25 raw + vector raw p50",
                    baseline=bm25_raw_p50 + vec_raw_p50,
                    ratio=p_hyb["p50"] / (bm25_raw_p50 + vec_raw_p50),
                    note=f"excl. query embedding; target chunk in top-5 for {found:.0%} of queries",
                )
            )
            hybrid_p95[(label, kind)] = p_hyb["p95"]
            kind_used[(label, kind)] = store.kind_of("bench")
            recall_at10[(label, kind)] = recall
            omp_default = faiss.omp_get_max_threads()
            if omp_default > 1 and not args.no_omp_compare:
                # FaissVectorStore sets one thread; this row only appears if something raised it again
                faiss.omp_set_num_threads(1)
                try:
                    t_vec1 = time_each(lambda qv, store=store: store.search("bench", qv, rs.candidates), qlist)
                    t_hyb1 = time_each(lambda q, r=retriever: r.search("bench", q, mode="hybrid"), queries)
                finally:
                    faiss.omp_set_num_threads(omp_default)
                report.add(
                    lat_row(
                        f"{sec} {kind}",
                        "  same, faiss omp threads=1: store.search",
                        t_vec1,
                        baseline_name=f"omp {omp_default} p50",
                        baseline=vec_raw_p50,
                        ratio=percentiles_ms(t_vec1)["p50"] / vec_raw_p50,
                    )
                )
                p1 = percentiles_ms(t_hyb1)
                report.add(
                    lat_row(
                        f"{sec} {kind}",
                        "  same, faiss omp threads=1: hybrid",
                        t_hyb1,
                        target="(p95 < 20 ms)",
                        baseline_name=f"omp {omp_default} p50",
                        baseline=p_hyb["p50"],
                        ratio=p1["p50"] / p_hyb["p50"],
                        note="what the service setting (one faiss thread) gives",
                    )
                )

            # write costs in the full index (what the background filler and re-ingests pay)
            next_id = int(ids_in_order.max()) + 1
            up = []
            for j in range(5):
                new_ids = list(range(next_id + 16 * j, next_id + 16 * (j + 1)))
                t = time.perf_counter()
                store.upsert("bench", new_ids, vecs[:16])
                up.append(time.perf_counter() - t)
            report.add(
                Row(
                    f"{sec} {kind}",
                    "upsert 16 new vectors into the full index",
                    float(np.median(up)) * 1000,
                    "ms",
                    note="median of 5; the vector filler's batch size",
                    digits=2,
                )
            )
            if kind == "hnsw" and len(vecs) <= args.delete_max:
                t = time.perf_counter()
                store.delete("bench", ids_in_order[:SECTIONS_PER_DOC].tolist())
                del_s = time.perf_counter() - t
                report.add(
                    Row(
                        f"{sec} {kind}",
                        f"delete one document's {SECTIONS_PER_DOC} vectors",
                        del_s * 1000,
                        "ms",
                        target="< 100 ms",
                        passed=del_s < 0.1,
                        note="documented as a tombstone; measured time shows whether it rebuilt the index",
                        digits=1,
                    )
                )
            report.add(rss_row(f"{sec} {kind}", "peak RSS so far"))
            del store, retriever
            gc.collect()
        db.dispose()
    return queries


def main(argv: list[str] | None = None) -> int:
    from ragvigil.config import RetrievalSettings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="corpus sizes in chunks, comma separated")
    ap.add_argument("--queries", type=int, default=200, help="queries per measurement")
    ap.add_argument("--passages", type=int, default=200, help="passages in the embedding sample")
    ap.add_argument("--embed-queries", type=int, default=100, help="fresh queries for the query-embedding latency")
    ap.add_argument("--embed-threads", type=int, default=1, help="E5 threads (production default: 1)")
    ap.add_argument("--kinds", default="flat,hnsw,auto", help="vector index kinds")
    ap.add_argument(
        "--auto-threshold",
        type=int,
        default=RetrievalSettings().vector_index_threshold,
        help="vectors at which kind auto switches to HNSW (default: the service's setting)",
    )
    ap.add_argument("--upsert-batch", type=int, default=1000, help="vectors per upsert while filling the store")
    ap.add_argument(
        "--tokens",
        choices=("auto", "jieba", "synthetic"),
        default="auto",
        help="BM25 tokens of the corpus: jieba over every chunk, or memoised per drawn word (auto: synthetic above --jieba-max)",
    )
    ap.add_argument(
        "--distinct-docs",
        type=int,
        default=10_000,
        help="documents generated (100k chunks); larger corpora repeat them under new names",
    )
    ap.add_argument("--jieba-max", type=int, default=200_000, help="largest size tokenized by jieba with --tokens auto")
    ap.add_argument(
        "--hnsw-reuse-from",
        type=int,
        default=500_000,
        help="from this size, forced hnsw opens the index the auto store built instead of building its own",
    )
    ap.add_argument(
        "--probe-interval", type=float, default=0.02, help="seconds between hybrid queries beside the auto fill"
    )
    ap.add_argument("--probe-max", type=int, default=20_000, help="at most this many probe queries per auto fill")
    ap.add_argument("--rebuild-timeout", type=float, default=3600.0, help="longest wait for the background build")
    ap.add_argument(
        "--swap-backlog",
        type=int,
        help="logged vectors the swap may replay under the store's lock (default: the store's SWAP_BACKLOG)",
    )
    ap.add_argument(
        "--replay-rounds",
        type=int,
        help="rounds of replay outside the lock before the swap (default: the store's REPLAY_ROUNDS)",
    )
    ap.add_argument("--ingest-docs", type=int, default=100, help="documents for the Ingestor.ingest_bytes sample")
    ap.add_argument("--baseline-sample", type=int, default=5000, help="chunks for the jieba-only baseline")
    ap.add_argument("--delete-max", type=int, default=20_000, help="measure the HNSW delete only up to this size")
    ap.add_argument("--seed", type=int, default=20261124)
    ap.add_argument("--quick", action="store_true", help="10k chunks only, fewer queries and passages")
    ap.add_argument("--skip-embedding", action="store_true")
    ap.add_argument("--no-omp-compare", action="store_true", help="skip the faiss omp threads=1 comparison rows")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dirs")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    if args.quick:
        args.sizes, args.queries, args.passages, args.embed_queries = "10000", 100, 32, 50
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    order = {"flat": 0, "auto": 1, "hnsw": 2}  # auto before hnsw, which may reuse its index
    args.kinds.sort(key=lambda k: order.get(k, 3))
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    import faiss

    from ragvigil.knowledge import vectorstore

    if args.swap_backlog is not None:
        vectorstore.SWAP_BACKLOG = args.swap_backlog
    if args.replay_rounds is not None:
        vectorstore.REPLAY_ROUNDS = args.replay_rounds

    console.print(
        f"[bold]ragvigil retrieval benchmark[/bold] — {machine_line()}; faiss omp threads {faiss.omp_get_max_threads()}; repo {REPO_ROOT}"
    )
    report = LiveReport("retrieval benchmark (latencies: p50 / p95, ratios on p50)")
    t_start = time.perf_counter()
    queries: list[str] = []
    for i, n in enumerate(sizes):
        q = bench_size(report, args, n, args.seed + i * 1000)
        queries = queries or q
    if not args.skip_embedding:
        console.rule("[bold]embedding")
        gen = CorpusGen(args.seed + 99)
        from ragvigil.knowledge.chunking import chunk_text
        from ragvigil.knowledge.ingest import indexable_text

        passages: list[str] = []
        while len(passages) < args.passages:
            d = gen.doc(len(passages))
            passages.extend(indexable_text(d.title, p.anchor, p.text) for p in chunk_text(d.text, d.title))
        bench_embedding(report, args, passages[: args.passages], queries)
    report.note(
        "Passage vectors are synthetic (clustered unit vectors); query vectors are precomputed, so the retrieval latencies exclude the query embedding, which is reported on its own line."
    )
    report.note(
        "Hybrid, BM25-alone and vector-alone go through HybridRetriever.search over a real Catalog (SQLite) with production RetrievalSettings (candidates 30, top_k 5, RRF k 60)."
    )
    code = report.finish(t_start, args.json)
    print_kind_summary(args.kinds)
    return code


if __name__ == "__main__":
    sys.exit(main())
