"""Cross-lingual retrieval on the sample help centre: English questions about Chinese-only documents and
Chinese questions about English-only ones, plus same-language controls.

The help centre (``samples/helpcentre``: 13 English-only and 13 Chinese-only topics) goes through the
production path: ``Ingestor.ingest_bytes`` with each file's name as source, then the ``VectorFiller``
embeds every chunk, then ``HybridRetriever.search(kb, question, 30, mode)`` for hybrid (the production
mode) and vector alone, with the production ``RetrievalSettings``. Hits are collapsed to documents by
``hit.source``. The questions (``bench/data/crosslingual_helpcentre.yaml``) were written by the team,
not taken from the documents.

Reported: cross-lingual top-1 (target ≥ 0.80) and top-5, how often the expected document is among the
top-5 chunks marked relevant (what reaches the generator), and the control questions' top-1.

    .venv/bin/python bench/quality_crosslingual.py    # ~1-2 minutes (embedding 26 documents)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.table import Table

from _common import REPO_ROOT, Report, Row, console, exit_on_sigterm, machine_line, temp_data_dir

QUESTIONS = Path(__file__).parent / "data" / "crosslingual_helpcentre.yaml"
HELPCENTRE = REPO_ROOT / "samples" / "helpcentre"
MODES = ("hybrid", "vector")
SEARCH_K = 30
KB = "helpcentre"


@dataclass
class Question:
    question: str
    language: str
    expect_source: str
    kind: str  # crosslingual or control


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [Question(**q, kind=kind) for kind in ("crosslingual", "control") for q in data[kind]]


@dataclass
class Outcome:
    question: Question
    mode: str
    rank: int | None  # of the expected document among distinct documents, None if absent
    relevant_top5: bool  # the expected document among the top-5 chunks marked relevant
    first: str  # the first document


def ask(rt, questions: list[Question], mode: str) -> list[Outcome]:  # type: ignore[no-untyped-def]
    out = []
    for q in questions:
        hits = rt.retriever.search(KB, q.question, SEARCH_K, mode).hits
        docs: list[str] = []
        for h in hits:
            if h.source not in docs:
                docs.append(h.source)
        rank = docs.index(q.expect_source) + 1 if q.expect_source in docs else None
        rel = any(h.relevant and h.source == q.expect_source for h in hits[:5])
        out.append(Outcome(q, mode, rank, rel, docs[0] if docs else ""))
    return out


def share(outcomes: list[Outcome], pred) -> float:  # type: ignore[no-untyped-def]
    return sum(1 for o in outcomes if pred(o)) / max(1, len(outcomes))


def measure(data_dir: Path | None = None, keep: bool = False) -> dict[str, list[Outcome]]:
    """Ingest the help centre into a fresh data dir and ask every question in both modes."""
    from ragvigil.app import Runtime
    from ragvigil.config import Settings

    questions = load_questions()
    with temp_data_dir("crosslingual", keep=keep) as tmp:
        rt = Runtime(Settings(_env_file=None, data_dir=tmp, background_embedding=False, log_level="WARNING"))  # type: ignore[call-arg]
        try:
            for f in sorted(HELPCENTRE.iterdir()):
                r = rt.ingestor.ingest_bytes(KB, f.name, f.read_bytes())
                if r.outcome not in ("created", "updated", "unchanged"):
                    raise RuntimeError(f"ingest of {f.name} failed: {r.error}")
            rt.filler.drain()
            return {mode: ask(rt, questions, mode) for mode in MODES}
        finally:
            rt.close()


def run(data_dir: Path | None = None) -> list[Row]:
    """The cross-lingual rows (``data_dir`` unused: the help centre and the questions are in the repository)."""
    return rows(measure(data_dir))


def rows(results: dict[str, list[Outcome]]) -> list[Row]:
    out = []
    for mode in MODES:
        cross = [o for o in results[mode] if o.question.kind == "crosslingual"]
        ctrl = [o for o in results[mode] if o.question.kind == "control"]
        label = "hybrid (production)" if mode == "hybrid" else "vector alone"
        top1 = share(cross, lambda o: o.rank == 1)
        out.append(
            Row(
                "cross-lingual",
                f"{label}: top-1",
                top1,
                target="≥ 0.80" if mode == "hybrid" else "",
                passed=top1 >= 0.80 if mode == "hybrid" else None,
                note=f"{len(cross)} questions (half en → zh documents, half zh → en)",
                digits=3,
            )
        )
        out.append(
            Row(
                "cross-lingual", f"{label}: top-5", share(cross, lambda o: o.rank is not None and o.rank <= 5), digits=3
            )
        )
        out.append(
            Row(
                "cross-lingual",
                f"{label}: expected document relevant in top-5 chunks",
                share(cross, lambda o: o.relevant_top5),
                digits=3,
            )
        )
        c1 = share(ctrl, lambda o: o.rank == 1)
        out.append(
            Row(
                "cross-lingual",
                f"{label}: control (same-language) top-1",
                c1,
                target="1.00" if mode == "hybrid" else "",
                passed=c1 == 1.0 if mode == "hybrid" else None,
                note=f"{len(ctrl)} questions",
                digits=3,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO_ROOT / ".." / "shared" / "datasets", help="(unused)")
    ap.add_argument("--misses", action="store_true", help="list every question whose document is not first")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    console.print(f"[bold]ragvigil cross-lingual retrieval[/bold] — {machine_line()}")
    results = measure(args.data, keep=args.keep)
    table = Table(title="per language direction (top-1 / top-5)", title_justify="left")
    for col in ("mode", "en → zh documents", "zh → en documents", "control"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for mode in MODES:
        cells = []
        for pred in (
            lambda o: o.question.kind == "crosslingual" and o.question.language == "en",
            lambda o: o.question.kind == "crosslingual" and o.question.language == "zh",
            lambda o: o.question.kind == "control",
        ):
            sel = [o for o in results[mode] if pred(o)]
            t1 = sum(o.rank == 1 for o in sel)
            t5 = sum(o.rank is not None and o.rank <= 5 for o in sel)
            cells.append(f"{t1}/{len(sel)} / {t5}/{len(sel)}")
        table.add_row(mode, *cells)
    console.print(table)
    if args.misses:
        for o in results["hybrid"]:
            if o.rank != 1:
                console.print(
                    f"  miss ({o.question.kind}): {o.question.question} → {o.first} (expected {o.question.expect_source}, rank {o.rank})"
                )
    report = Report("cross-lingual retrieval on samples/helpcentre")
    for row in rows(results):
        report.add(row)
    report.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
