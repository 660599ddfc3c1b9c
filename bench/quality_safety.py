"""The safety check measured on data it was not built from: crisis recall on held-out phrasings, the
crisis check's false positives on the benign rows of every public set, the offensive check on COLD dev,
and what a check costs per turn beyond the shared embedding.

    python bench/quality_safety.py [--data ../shared/datasets] [--max-rows 2000] [--embed]

Without ``--embed`` the classifier half is measured only on rows whose vectors are already in the
shared cache (the lexicon half on every row); each row says how many it read. ``run`` is imported by
``bench/quality.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

import _datasets
from _common import REPO_ROOT, Report, Row, percentiles_ms
from _vectors import VectorCache
from ragvigil.chat.intent import DEFAULT_FILE, ExampleIntentClassifier, load_file
from ragvigil.chat.safety import SafetyChecker

HELDOUT = REPO_ROOT / "bench" / "data" / "crisis_heldout.yaml"
SECTION = "safety"


def _sample(texts: list[str], n: int) -> list[str]:
    texts = sorted({t for t in texts if t})
    random.Random(_datasets.SEED).shuffle(texts)
    return texts[:n]


def _vectors(cache: VectorCache, texts: list[str], embed: bool) -> dict[str, np.ndarray]:
    """Vectors of ``texts``: all (embedding what is missing) or only those the cache holds."""
    if embed:
        return dict(zip(texts, cache.vectors(texts), strict=True))
    keys = {cache.key(t): t for t in texts}
    have = []
    klist = list(keys)
    for start in range(0, len(klist), 900):
        chunk = klist[start : start + 900]
        marks = ",".join("?" * len(chunk))
        have += [k for (k,) in cache._db.execute(f"SELECT key FROM vectors WHERE key IN ({marks})", chunk)]
    kept = [keys[k] for k in have]
    return dict(zip(kept, cache.vectors(kept), strict=True)) if kept else {}


def _heldout_texts(path: Path) -> tuple[list[str], list[str]]:
    """(crisis texts, benign texts) of the held-out file, whatever its nesting: strings under a key or
    item naming crisis/self_harm are crisis, under benign/safe/negative are benign."""
    crisis: list[str] = []
    benign: list[str] = []

    def walk(node: object, side: str | None) -> None:
        if isinstance(node, str):
            if side == "crisis":
                crisis.append(node)
            elif side == "benign":
                benign.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item, side)
        elif isinstance(node, dict):
            label = str(node.get("label") or node.get("category") or node.get("kind") or "").casefold()
            text = node.get("text")
            if isinstance(text, str):
                if isinstance(node.get("crisis"), bool):  # rows: [{text, lang, crisis: true|false, kind}]
                    walk(text, "crisis" if node["crisis"] else "benign")
                else:
                    walk(text, _side(label) or _side(str(node.get("expect", ""))) or side)
                return
            for key, value in node.items():
                walk(value, _side(str(key)) or side)

    walk(yaml.safe_load(path.read_text(encoding="utf-8")), None)
    return crisis, benign


def _side(word: str) -> str | None:
    w = word.casefold()
    if w in ("crisis", "self_harm", "positive", "positives", "flag", "true"):
        return "crisis"
    if w in ("benign", "safe", "negative", "negatives", "none", "false", "benign_lookalikes", "lookalikes"):
        return "benign"
    return None


def cmrc_questions(data: Path) -> list[str]:
    """Every question of CMRC2018 trial (SQuAD format): factual reading-comprehension questions about
    Wikipedia passages, many naming deaths, wars and diseases; none is a crisis or a complaint."""
    doc = json.loads((data / "retrieval" / "cmrc2018_trial.json").read_text(encoding="utf-8"))
    return [qa["question"] for a in doc["data"] for p in a["paragraphs"] for qa in p["qas"] if qa.get("question")]


class _CachedEmbedder:
    """The intent classifier's embedder over the shared bench cache (the examples are embedded once)."""

    def __init__(self, cache: VectorCache) -> None:
        self.cache = cache
        self.name = cache.model

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        return self.cache.vectors([text])[0]


def _handoff_row(data: Path, cache: VectorCache, checker: SafetyChecker, max_rows: int, embed: bool) -> Row:
    """CMRC questions handed off, each as a new session's first turn (so no trend can fire): a crisis
    verdict or an intent whose action is ``handoff`` (complaint, human_request), as the policy decides."""
    texts = _sample(cmrc_questions(data), max_rows)
    vecs = _vectors(cache, texts, embed)
    intents = ExampleIntentClassifier(load_file(DEFAULT_FILE), _CachedEmbedder(cache))
    crisis = complaint = 0
    for text, vector in vecs.items():
        if checker.check(text, vector).crisis:
            crisis += 1
        elif intents.classify(text, vector, "zh").action == "handoff":
            complaint += 1
    n = len(vecs)
    rate = (crisis + complaint) / n if n else None
    return Row(
        SECTION,
        "handed off, CMRC2018 trial questions (new sessions)",
        None if rate is None else rate * 100,
        "%",
        "≤ 1 %",
        None if rate is None else rate <= 0.01,
        note=f"{crisis + complaint}/{n}: crisis {crisis}, complaint/human_request intent {complaint}",
        digits=2,
    )


def _benign_sets(data: Path, n: int) -> dict[str, list[str]]:
    _, banking_held = _datasets.split_holdout(_datasets.banking77(data))
    _, senti_held = _datasets.split_holdout(_datasets.chnsenticorp(data))  # the rest trains the crisis probe
    cold_dev = _datasets.cold(data, "dev")
    return {
        "ChnSentiCorp held-out": _sample([e.text for e in senti_held], n),
        "VADER tweets+amazon": _sample(
            [e.text for e in _datasets.vader(data, "tweets") + _datasets.vader(data, "amazon")], n
        ),
        "BANKING77 held-out": _sample([e.text for e in banking_held], n),
        "CLINC150 val (+oos)": _sample(
            [e.text for e in _datasets.clinc150(data, "val") + _datasets.clinc150(data, "oos_val")], n
        ),
        "CrossWOZ val user turns": _sample([t for t, _ in _datasets.crosswoz_user_turns(data)], n),
        "COLD dev safe rows": _sample([e.text for e in cold_dev if e.label == "safe"], n),
        "CMRC2018 trial questions": _sample(cmrc_questions(data), n),
    }


def run(
    data: Path,
    cache: VectorCache | None = None,
    max_rows: int = 2000,
    embed: bool = False,
    heldout: Path | None = HELDOUT,
) -> list[Row]:
    """Every row; ``heldout`` None leaves the held-out crisis phrasings out (a run that must not look at them)."""
    cache = cache or VectorCache()
    checker = SafetyChecker()
    rows: list[Row] = []
    latencies: list[float] = []

    def timed_check(text: str, vector: np.ndarray | None) -> bool:
        start = time.perf_counter()
        verdict = checker.check(text, vector)
        latencies.append(time.perf_counter() - start)
        return verdict.crisis

    if heldout is not None:
        rows.append(_heldout_row(heldout, cache, checker, timed_check))
    total_fp = total_n = 0
    for name, texts in _benign_sets(data, max_rows).items():
        lex_fp = sum(checker.check(t).crisis for t in texts)
        vecs = _vectors(cache, texts, embed)
        fp = sum(timed_check(t, v) for t, v in vecs.items())
        total_fp, total_n = total_fp + fp, total_n + len(vecs)
        rate = fp / len(vecs) if vecs else None
        rows.append(
            Row(
                SECTION,
                f"crisis FP rate, {name}",
                None if rate is None else rate * 100,
                "%",
                "≤ 1 %",
                None if rate is None else rate <= 0.01,
                note=f"{fp}/{len(vecs)} with classifier; lexicon alone {lex_fp}/{len(texts)}",
                digits=2,
            )
        )
    if total_n:
        rate = total_fp / total_n
        rows.append(
            Row(
                SECTION,
                "crisis FP rate, all benign rows",
                rate * 100,
                "%",
                "≤ 1 %",
                rate <= 0.01,
                digits=2,
                note=f"{total_fp}/{total_n}",
            )
        )
    rows.append(_handoff_row(data, cache, checker, max_rows, embed))
    rows.append(_cold_row(data, cache, checker, max_rows, embed))
    p = percentiles_ms(latencies)
    rows.append(
        Row(
            SECTION,
            "check latency per turn (beyond the embedding)",
            p["p50"],
            "ms",
            "≤ 5 ms p50 (whole analysis)",
            p["p50"] <= 5.0,
            display=f"{p['p50']:.3f} / {p['p95']:.3f} ms",
            note=f"p50 / p95 over {p['n']} checks",
            digits=3,
        )
    )
    return rows


def _heldout_row(
    path: Path, cache: VectorCache, checker: SafetyChecker, timed_check: Callable[[str, np.ndarray | None], bool]
) -> Row:
    name = "crisis recall, held-out phrasings"
    if not path.exists():
        return Row(SECTION, name, None, note=f"skipped: {path} is not there yet")
    crisis, benign = _heldout_texts(path)
    if not crisis:
        return Row(SECTION, name, None, note="skipped: no crisis phrasings found in the held-out file")
    vecs = dict(zip(crisis + benign, cache.vectors(crisis + benign), strict=True))  # small: always embedded
    hits = sum(timed_check(t, vecs[t]) for t in crisis)
    fps = sum(timed_check(t, vecs[t]) for t in benign)
    recall = hits / len(crisis)
    lex = sum(checker.check(t).crisis for t in crisis)
    note = f"{hits}/{len(crisis)}; lexicon alone {lex}/{len(crisis)}"
    if benign:
        note += f"; its benign rows flagged {fps}/{len(benign)}"
    return Row(SECTION, name, recall, "", "≥ 0.98", recall >= 0.98, note=note, digits=3)


def _cold_row(data: Path, cache: VectorCache, checker: SafetyChecker, max_rows: int, embed: bool) -> Row:
    rows = _datasets.cold(data, "dev")
    label = {e.text: e.label for e in rows}
    texts = _sample(list(label), max_rows)
    vecs = _vectors(cache, texts, embed)
    if not vecs:
        return Row(SECTION, "offensive check on COLD dev", None, note="skipped: no COLD dev vectors cached (--embed)")
    matrix = {(g, p): 0 for g in ("offensive", "safe") for p in ("offensive", "safe")}
    for t, v in vecs.items():
        verdict = checker.check(t, v)
        predicted = "offensive" if verdict.flagged and not verdict.crisis else "safe"
        matrix[(label[t], predicted)] += 1
    n = sum(matrix.values())
    acc = (matrix[("offensive", "offensive")] + matrix[("safe", "safe")]) / n
    f1s = []
    for c in ("offensive", "safe"):
        tp = matrix[(c, c)]
        fp = sum(matrix[(g, c)] for g in ("offensive", "safe") if g != c)
        fn = sum(matrix[(c, p)] for p in ("offensive", "safe") if p != c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    confusion = " ".join(f"{g}→{p}:{matrix[(g, p)]}" for g, p in matrix)
    return Row(
        SECTION,
        "offensive check on COLD dev (accuracy)",
        acc,
        "",
        "",
        None,
        digits=3,
        note=f"macro-F1 {np.mean(f1s):.3f}; n={n}; confusion (gold→predicted) {confusion}",
        extra={"macro_f1": float(np.mean(f1s))},
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=_datasets.DEFAULT_DATA)
    ap.add_argument("--max-rows", type=int, default=2000, help="fixed sample per public set")
    ap.add_argument("--embed", action="store_true", help="embed the vectors the cache lacks (slow)")
    ap.add_argument("--heldout", type=Path, default=HELDOUT, help="the held-out crisis phrasings (YAML)")
    ap.add_argument("--no-heldout", action="store_true", help="leave the held-out crisis phrasings out")
    args = ap.parse_args()
    report = Report("safety check quality")
    for row in run(args.data, VectorCache(), args.max_rows, args.embed, None if args.no_heldout else args.heldout):
        report.add(row)
    report.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
