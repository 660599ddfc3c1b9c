"""Answer quality on public labelled data: what the answer users read says, asked through the chat API.

Data (never copied into the repository; ``--data``, default ``<repo>/../shared/datasets``):
  * retrieval/cmrc2018_trial.json (zh, SQuAD format): every passage is a document, every question is
    asked; the gold document is the question's passage, the gold spans its answers;
  * retrieval/stackfaq_en.json (en): every FAQ thread is a document (question + answers cut to
    ``--faq-chars`` characters, as ``retrieval_quality.py`` builds them), every paraphrased query is asked.

Production path: each document goes through ``Ingestor.ingest_bytes`` (a ``.txt`` source name, the
loaders of ``retrieval_quality.py``), the ``VectorFiller`` embeds every chunk, then every question is
``POST /api/v1/chat`` (``{"message", "kb"}``, a new session each) on the real app: ``create_app`` on that
runtime, called in process through Starlette's ``TestClient``. In process rather than a ``ragvigil serve``
subprocess because the answers are the measure, not the latency: it is the same ASGI stack (middleware,
admission, routing, the chat pipeline), one process on 2 cores instead of two, and the documents are
ingested and embedded in the foreground with progress (and cached passage vectors) before the first
question. The embedded default: development profile, extractive generator, no LLM. The per-key /
per-user rate limits are off (one client asks thousands of questions); admission's concurrency gate is on.

Measured on CMRC2018 (targets from issue 13):
  * span containment: the share of answers that contain one of the question's gold answer spans, both
    normalised (NFKC, which folds full-width to half-width, then every whitespace removed), computed on the
    answer without citations; split by whether the gold passage is the first of the answer's sources
    (target ≥ 0.93 overall);
  * median answer length without citations, in characters (target ≤ 60): the answer with every citation
    marker ``[n]`` (digits in ASCII square brackets, and the whitespace before it) removed, then the lead
    "根据知识库：" / "From the knowledge base:" at its start removed, then stripped;
  * passage recall@1: the first source's document is the gold passage (target ≥ 0.965, today's).
On StackFAQ: the share of answers drawn from the gold thread (first source = gold; target ≥ 0.85).

Rows of ``bench/quality_crosslingual.py`` and ``bench/quality_multiturn.py`` (``run(data_dir) -> list[Row]``)
are appended when those modules exist.

Passage vectors are cached between runs in the SQLite file of ``_vectors.py`` (``RAGVIGIL_BENCH_CACHE``,
default ``~/.cache/ragvigil/bench-vectors.sqlite``), keyed by model, side ("passage") and text: the vectors
are the ones the filler would compute, a second run skips the embedding.

    .venv/bin/python bench/answer_quality.py                      # ~10 min with cached passage vectors
                                                                  # (+ ~12 min the first time, 2 busy cores)
    .venv/bin/python bench/answer_quality.py --limit 20 --show-misses 10
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import re
import sqlite3
import statistics
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape
from rich.table import Table

from _common import REPO_ROOT, Report, Row, console, exit_on_sigterm, fmt_num, machine_line, temp_data_dir
from _vectors import cache_path
from retrieval_quality import Dataset, chosen_sets, load_cmrc, load_stackfaq

BENCH = Path(__file__).resolve().parent
OPTIONAL = ("quality_crosslingual", "quality_multiturn")  # other benches whose rows this report carries

# The answer's lead and citation markers, as the extractive generator writes them (providers/extractive.py).
LEADS = ("根据知识库：", "From the knowledge base:")
CITATION = re.compile(r"\s*\[\d+\]")
WHITESPACE = re.compile(r"\s+")

# This bench's full run on the code before issue 13's changes (CMRC2018 trial: 256 passages, the 1,000
# non-blank of its 1,002 questions; StackFAQ: 125 threads, 1,249 queries): the "today" of later runs.
TODAY: dict[str, float] = {
    "cmrc_contained": 0.758,
    "cmrc_contained_gold_first": 0.775,
    "cmrc_contained_gold_not_first": 0.316,
    "cmrc_median_chars": 122,
    "cmrc_recall1": 0.962,
    "stackfaq_recall1": 0.808,
}


def strip_citations(answer: str) -> str:
    """The answer as a reader takes it in: no ``[n]`` markers, no "From the knowledge base:" lead."""
    text = CITATION.sub("", answer).strip()
    for lead in LEADS:
        if text.startswith(lead):
            text = text[len(lead) :]
            break
    return text.strip()


def normalise(text: str) -> str:
    """NFKC (full-width letters, digits and punctuation become half-width) without any whitespace."""
    return WHITESPACE.sub("", unicodedata.normalize("NFKC", text))


def contains_span(answer: str, spans: Iterable[str]) -> bool:
    """Whether the answer (citations stripped) holds one of the gold spans after normalisation."""
    body = normalise(strip_citations(answer))
    return any((s := normalise(span)) and s in body for span in spans)


def cmrc_spans(path: Path, limit: int | None) -> list[tuple[str, list[str]]]:
    """(question, gold answer texts) in the order ``load_cmrc`` lists the questions."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    out: list[tuple[str, list[str]]] = []
    passages = 0
    for article in data:
        for para in article["paragraphs"]:
            if limit is not None and passages >= limit:
                break
            passages += 1
            out.extend((qa["question"], [a["text"] for a in qa["answers"]]) for qa in para["qas"])
    return out


class CachedPassageEmbedder:
    """The filler's embedder with its passage vectors kept in a SQLite file: embedding CMRC dominates a run."""

    def __init__(self, inner: Any, path: Path) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.name = inner.name
        self.hits = 0
        self.misses = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._db.commit()

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.name}\0passage\0{text}".encode()).hexdigest()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 900):  # SQLite's bound on query parameters
            chunk = keys[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for k, blob in self._db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                found[k] = np.frombuffer(blob, dtype=np.float32)
        missing = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            vecs = np.asarray(self.inner.embed_passages([texts[i] for i in missing]), dtype=np.float32)
            rows = [(keys[i], v.tobytes()) for i, v in zip(missing, vecs, strict=True)]
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            self._db.commit()
            found.update({keys[i]: v for i, v in zip(missing, vecs, strict=True)})
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys])

    def __getattr__(self, name: str) -> Any:  # embed_query, check, ...: the inner embedder's own
        return getattr(self.inner, name)

    def close(self) -> None:
        self._db.close()


@dataclass
class Asked:
    """One question asked through chat and what came back."""

    question: str
    gold: str
    answer: str
    first_source: str | None
    spans: list[str] = field(default_factory=list)
    contained: bool = False
    first_chunk_has_span: bool = False
    flagged: bool = False  # the safety check flagged the question, or the turn was handed off / replaced

    @property
    def gold_first(self) -> bool:
        return self.first_source == self.gold

    @property
    def length(self) -> int:
        return len(strip_citations(self.answer))


def share(items: list[Asked], pred: Callable[[Asked], bool]) -> float | None:
    return sum(1 for a in items if pred(a)) / len(items) if items else None


def ingest(rt: Any, ds: Dataset) -> dict[str, float]:
    """Every document through ``Ingestor.ingest_bytes``, then every chunk through the filler (foreground)."""
    console.rule(f"[bold]{ds.name}: {len(ds.docs)} documents, {len(ds.queries)} questions")
    t = time.perf_counter()
    chunks = 0
    for source, text in ds.docs:
        r = rt.ingestor.ingest_bytes(ds.name, source, text.encode("utf-8"))
        if r.outcome not in ("created", "updated", "unchanged"):
            raise RuntimeError(f"ingest of {source} failed: {r.error}")
        chunks += r.chunks
    ingest_s = time.perf_counter() - t
    pending = rt.ingestor.pending_vectors()
    t = time.perf_counter()
    done = 0
    while n := rt.filler.run_once():
        done += n
        el = time.perf_counter() - t
        console.print(f"  embedding {done}/{pending} chunks, {el:.0f} s elapsed", end="\r")
    rt.filler.drain()
    embed_s = time.perf_counter() - t
    console.print(
        f"ingested {len(ds.docs)} documents → {chunks} chunks in {ingest_s:.1f} s, embedded in {embed_s:.1f} s"
    )
    return {"chunks": chunks, "ingest_s": ingest_s, "embed_s": embed_s}


def chunk_text(rt: Any, chunk_id: int) -> str:
    from ragvigil.storage.models import Chunk

    with rt.db.session() as s:
        chunk = s.get(Chunk, chunk_id)
        return chunk.text if chunk is not None else ""


def ask_all(
    rt: Any, http: Any, ds: Dataset, spans: list[list[str]] | None
) -> tuple[list[Asked], dict[str, int], float]:
    """Every question of ``ds`` as ``POST /api/v1/chat``; (results, failed requests by status, seconds)."""
    out: list[Asked] = []
    failed: dict[str, int] = {}
    t = time.perf_counter()
    for i, (question, gold) in enumerate(ds.queries):
        resp = http.post("/api/v1/chat", json={"message": question, "kb": ds.name})
        if resp.status_code != 200:
            failed[str(resp.status_code)] = failed.get(str(resp.status_code), 0) + 1
            out.append(Asked(question, gold, "", None, spans[i] if spans else []))
            continue
        body = resp.json()
        sources = body["sources"]
        first = sources[0] if sources else None
        asked = Asked(question, gold, body["answer"], first["source"] if first else None, spans[i] if spans else [])
        safety = (body.get("analysis") or {}).get("safety") or {}
        asked.flagged = bool(safety.get("category") or body.get("handoff") or body.get("replaced"))
        if spans is not None:
            asked.contained = contains_span(asked.answer, asked.spans)
            if first is not None and not asked.contained:
                text = normalise(chunk_text(rt, first["chunk_id"]))
                asked.first_chunk_has_span = any(normalise(s) in text for s in asked.spans)
        out.append(asked)
        if (i + 1) % 50 == 0:
            el = time.perf_counter() - t
            console.print(f"  {ds.name}: {i + 1}/{len(ds.queries)} asked, {1000 * el / (i + 1):.0f} ms each", end="\r")
    seconds = time.perf_counter() - t
    console.print(f"  {ds.name}: {len(ds.queries)} asked in {seconds:.0f} s" + " " * 30)
    return out, failed, seconds


def cmrc_rows(report: Report, asked: list[Asked]) -> None:
    first = [a for a in asked if a.gold_first]
    other = [a for a in asked if not a.gold_first]
    contained = share(asked, lambda a: a.contained) or 0.0
    lengths = [a.length for a in asked]
    gold_len = [min(len(s) for s in a.spans) for a in asked if a.spans]
    median = float(statistics.median(lengths)) if lengths else None
    recall1 = share(asked, lambda a: a.gold_first) or 0.0
    misses = [a for a in asked if not a.contained]
    in_chunk = sum(a.first_chunk_has_span for a in misses)
    sec = "cmrc2018 (zh)"
    report.add(
        Row(
            sec,
            "answer contains a gold span",
            contained,
            target="≥ 0.93",
            passed=contained >= 0.93,
            baseline_name="today" if "cmrc_contained" in TODAY else "",
            baseline=TODAY.get("cmrc_contained"),
            note=f"{len(asked) - len(misses)} of {len(asked)}; of the {len(misses)} misses, the span was in the "
            f"first source's chunk in {in_chunk}; {sum(a.flagged for a in asked)} questions safety-flagged "
            f"or handed off ({sum(a.flagged for a in misses)} of them misses)",
            digits=3,
        )
    )
    for name, part, today in (
        ("… gold passage first", first, "cmrc_contained_gold_first"),
        ("… gold passage not first", other, "cmrc_contained_gold_not_first"),
    ):
        value = share(part, lambda a: a.contained)
        report.add(
            Row(
                sec,
                name,
                value,
                baseline_name="today" if today in TODAY else "",
                baseline=TODAY.get(today),
                note=f"{len(part)} questions",
                digits=3,
            )
        )
    report.add(
        Row(
            sec,
            "median answer length without citations",
            median,
            "chars",
            target="≤ 60",
            passed=median is not None and median <= 60,
            baseline_name="median gold span" if gold_len else "",
            baseline=float(statistics.median(gold_len)) if gold_len else None,
            note=f"p90 {np.percentile(lengths, 90):.0f} chars; the [1] markers and the lead removed; "
            f"today {TODAY.get('cmrc_median_chars', float('nan')):.0f} chars"
            if lengths
            else "",
            digits=0,
        )
    )
    report.add(
        Row(
            sec,
            "passage recall@1 (first source)",
            recall1,
            target="≥ 0.965",
            passed=recall1 >= 0.965,
            baseline_name="today" if "cmrc_recall1" in TODAY else "",
            baseline=TODAY.get("cmrc_recall1"),
            note=f"{len(first)} of {len(asked)}; {sum(a.first_source is None for a in asked)} answers without sources",
            digits=3,
        )
    )


def stackfaq_rows(report: Report, asked: list[Asked]) -> None:
    drawn = share(asked, lambda a: a.gold_first) or 0.0
    report.add(
        Row(
            "stackfaq (en)",
            "answer drawn from the gold thread (first source)",
            drawn,
            target="≥ 0.85",
            passed=drawn >= 0.85,
            baseline_name="today" if "stackfaq_recall1" in TODAY else "",
            baseline=TODAY.get("stackfaq_recall1"),
            note=f"{sum(a.gold_first for a in asked)} of {len(asked)}; "
            f"median answer {statistics.median([a.length for a in asked]) if asked else 0:.0f} chars without citations; "
            f"{sum(a.first_source is None for a in asked)} without sources",
            digits=3,
        )
    )


def sample(items: list[Asked], n: int) -> list[Asked]:
    """``n`` items spread evenly over the list: the same sample for the same run."""
    if n <= 0 or not items:
        return []
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def show_misses(asked: list[Asked], n: int) -> None:
    misses = [a for a in asked if not a.contained]
    table = Table(title=f"CMRC2018 misses: {min(n, len(misses))} of {len(misses)}", show_lines=True)
    for col in ("question", "gold span", "gold first", "span in 1st chunk", "answer (as served)"):
        table.add_column(col, overflow="fold")
    for a in sample(misses, n):
        table.add_row(
            escape(a.question),
            escape(" | ".join(dict.fromkeys(a.spans))),
            "yes" if a.gold_first else f"no ({a.first_source})",
            "yes" if a.first_chunk_has_span else "no",
            escape(a.answer),
        )
    console.print(table)


def optional_rows(report: Report, data: Path) -> None:
    """Rows of the cross-lingual and multi-turn benches, when they exist."""
    for name in OPTIONAL:
        path = BENCH / f"{name}.py"
        if not path.exists():
            report.note(f"{name}.py not found: its rows are skipped")
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # its dataclasses look their module up there
        spec.loader.exec_module(mod)
        console.rule(f"[bold]{name}")
        rows = mod.run(data)
        for row in rows:
            report.add(row)
        report.note(f"{name}.py: {len(rows)} rows")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    finally:
        logging.disable(logging.NOTSET)  # main may run inside a test process: its logging is left as found


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO_ROOT / ".." / "shared" / "datasets", help="datasets folder")
    ap.add_argument("--sets", default="cmrc2018,stackfaq", help="which sets, comma separated")
    ap.add_argument("--limit", type=int, help="only the first N documents of each set (and their questions)")
    ap.add_argument("--threads", type=int, default=2, help="e5 threads for embedding the passages")
    ap.add_argument("--faq-chars", type=int, default=1000, help="StackFAQ thread text is cut to this many characters")
    ap.add_argument("--show-misses", type=int, default=0, metavar="N", help="print N CMRC answers without a gold span")
    ap.add_argument(
        "--no-optional", dest="optional", action="store_false", help="skip the cross-lingual/multi-turn rows"
    )
    ap.add_argument("--no-cache", dest="cache", action="store_false", help="embed the passages without the cache")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here (and every miss beside it)")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    logging.disable(logging.WARNING)  # a line per safety-flagged question would bury the progress lines
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    data = args.data.resolve()
    wanted, files = chosen_sets(ap, data, args.sets)

    from fastapi.testclient import TestClient

    from ragvigil.api.server import create_app
    from ragvigil.app import Runtime
    from ragvigil.config import AdmissionSettings, Settings
    from ragvigil.knowledge.embeddings import E5Embedder

    console.print(f"[bold]ragvigil answer quality[/bold] — {machine_line()}; data {data}")
    t_start = time.perf_counter()
    report = Report("answer quality through POST /api/v1/chat (extractive generator, no LLM)")
    results: dict[str, list[Asked]] = {}
    with temp_data_dir("answers", keep=args.keep) as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=tmp,
            background_embedding=False,
            log_level="ERROR",
            first_start_admin_key=False,  # no key is needed: development profile on loopback
            admission=AdmissionSettings(per_key=None, per_user=None),
        )
        rt = Runtime(settings)
        passage = E5Embedder(threads=args.threads)
        cached = CachedPassageEmbedder(passage, cache_path()) if args.cache else None
        rt.filler.embedder = cached or passage
        try:
            for name in wanted:
                if name == "cmrc2018":
                    ds = load_cmrc(files[name], args.limit)
                    pairs = cmrc_spans(files[name], args.limit)
                    if [q for q, _ in pairs] != [q for q, _ in ds.queries]:
                        raise RuntimeError("the CMRC spans do not line up with load_cmrc's questions")
                    spans: list[list[str]] | None = [s for _, s in pairs]
                else:
                    ds = load_stackfaq(files[name], args.limit, args.faq_chars, heading=False)
                    spans = None
                blank = [i for i, (q, _) in enumerate(ds.queries) if not q.strip()]
                if blank:  # the API refuses a blank message (422): not a question anyone can answer
                    ds.queries = [x for i, x in enumerate(ds.queries) if i not in blank]
                    spans = None if spans is None else [x for i, x in enumerate(spans) if i not in blank]
                    report.note(f"{name}: {len(blank)} blank questions in the data are not asked")
                info = ingest(rt, ds)
                with TestClient(create_app(runtime=rt), client=("127.0.0.1", 50000)) as http:
                    asked, failed, seconds = ask_all(rt, http, ds, spans)
                results[name] = asked
                if failed:
                    report.note(f"{name}: failed requests by status {failed} (counted as misses)")
                report.note(
                    f"{name}: {len(ds.docs)} documents → {info['chunks']:.0f} chunks (ingest {info['ingest_s']:.0f} s, "
                    f"embedding {info['embed_s']:.0f} s), {len(asked)} questions in {seconds:.0f} s "
                    f"({1000 * seconds / max(1, len(asked)):.0f} ms each)"
                )
                before = len(report.rows)
                if name == "cmrc2018":
                    cmrc_rows(report, asked)
                else:
                    stackfaq_rows(report, asked)
                for row in report.rows[before:]:  # at once: a later set may take minutes more
                    console.print(f"  {row.name}: {fmt_num(row.value, row.unit, row.digits)}")
        finally:
            rt.close()
            if cached is not None:
                report.note(f"passage vectors: {cached.hits} from the cache, {cached.misses} embedded")
                cached.close()
    if args.optional:
        optional_rows(report, data)
    if args.limit is not None:
        report.note(f"--limit {args.limit}: only the first {args.limit} documents of each set (not comparable).")
    report.note(
        "containment: NFKC + no whitespace on both sides, answer without its [1] markers and lead; "
        "recall@1 and 'drawn from': the first source's document is the gold one."
    )
    if args.show_misses and "cmrc2018" in results:
        show_misses(results["cmrc2018"], args.show_misses)
    if args.json:
        misses = [
            {
                "question": a.question,
                "spans": a.spans,
                "gold_first": a.gold_first,
                "flagged": a.flagged,
                "answer": a.answer,
            }
            for a in results.get("cmrc2018", [])
            if not a.contained
        ]
        args.json.with_suffix(".misses.json").write_text(json.dumps(misses, ensure_ascii=False, indent=1))
    return report.finish(t_start, args.json)


if __name__ == "__main__":
    sys.exit(main())
