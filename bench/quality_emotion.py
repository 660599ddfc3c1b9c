"""Emotion quality on labelled data nobody here wrote: polarity accuracy and macro-F1, categories, latency.

- ChnSentiCorp (zh): the held-out part of the fixed split (``_datasets.split_holdout``) — the
  training script trains on the other part only.
- VADER tweets and Amazon snippets (en, eval only): binary polarity of the human mean valence,
  ``|valence| < 0.5`` dropped by the loader.
- The team-written held-out turns of ``training/emotion_heldout.yaml``: emotion category accuracy and
  the distribution of predicted labels.
- analyze latency p50 per turn given the turn's vector (the shared embedding is not counted).

A prediction's side is the sign of the emotion's score (a "neutral" turn still leans one way); the
share of turns the analyzer called neutral is in the note. The same rows are printed for the parts
alone (probe, n-grams, lexicon) so what each layer adds is visible; a part with no opinion (a text
without a lexicon word) counts as negative there.

    python bench/quality_emotion.py --data ../shared/datasets
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

import _datasets
from _common import REPO_ROOT, Report, Row, console, machine_line, percentiles_ms
from ragvigil.chat.emotion.offline import OfflineEmotionAnalyzer
from ragvigil.chat.understanding import EMOTIONS

HELDOUT = REPO_ROOT / "training" / "emotion_heldout.yaml"
SIDES = ("negative", "positive")


def _metrics(truth: list[str], pred: list[str], labels: tuple[str, ...]) -> tuple[float, float, dict[str, float]]:
    """(accuracy, macro-F1 over ``labels``, confusion cells "truth>pred")."""
    cells = Counter(f"{t}>{p}" for t, p in zip(truth, pred, strict=True))
    f1s = []
    for label in labels:
        tp = cells[f"{label}>{label}"]
        fp = sum(cells[f"{t}>{label}"] for t in labels if t != label)
        fn = sum(cells[f"{label}>{p}"] for p in labels if p != label)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    acc = sum(t == p for t, p in zip(truth, pred, strict=True)) / max(len(truth), 1)
    return acc, float(np.mean(f1s)), {k: float(v) for k, v in cells.items()}


def _side(score: float) -> str:
    return "positive" if score > 0 else "negative"


def _polarity_rows(
    name: str, target: float, rows: list[_datasets.Example], vectors: np.ndarray, analyzer: OfflineEmotionAnalyzer
) -> list[Row]:
    truth = [e.label for e in rows]
    emotions = [analyzer.analyze(e.text, v, "") for e, v in zip(rows, vectors, strict=True)]
    neutral = sum(e.polarity == "neutral" for e in emotions) / max(len(emotions), 1)
    acc, f1, cells = _metrics(truth, [_side(e.score) for e in emotions], SIDES)
    out = [
        Row(
            "polarity",
            f"{name} accuracy",
            acc,
            target=f"≥ {target:.2f}",
            passed=acc >= target,
            digits=3,
            note=f"n={len(rows)}, {neutral:.0%} called neutral",
            extra=cells,
        ),
        Row("polarity", f"{name} macro-F1", f1, digits=3),
    ]
    parts = {
        "probe alone": [_side(analyzer.margin(v, name.endswith("(zh)"))[0]) for v in vectors],
        "lexicon alone": [_side(analyzer.lexicon.read(e.text).valence) for e in rows],
    }
    if name.endswith("(zh)"):  # the n-gram layer reads CJK characters only
        parts["n-grams alone"] = [_side(analyzer.ngrams.log_odds(e.text)) for e in rows]
    for part, pred in parts.items():
        acc_p, f1_p, _ = _metrics(truth, pred, SIDES)
        out.append(Row("parts", f"{name}: {part}", acc_p, digits=3, note=f"macro-F1 {f1_p:.3f}"))
    return out


def _heldout_turns(path: Path = HELDOUT) -> list[tuple[str, str]]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [(t, label) for label, langs in raw.items() for texts in langs.values() for t in texts]


def run(data: Path, cache: object) -> list[Row]:
    """Every row of the emotion benchmark (``cache``: a ``_vectors.VectorCache``)."""
    analyzer = OfflineEmotionAnalyzer.load()
    rows: list[Row] = []
    _train, held = _datasets.split_holdout(_datasets.chnsenticorp(data))
    sets = [
        ("ChnSentiCorp held-out (zh)", 0.90, held),
        ("VADER tweets (en)", 0.88, _datasets.vader(data, "tweets")),
        ("VADER Amazon (en)", 0.88, _datasets.vader(data, "amazon")),
    ]
    latencies: list[float] = []
    for name, target, examples in sets:
        vectors = cache.vectors([e.text for e in examples])  # type: ignore[attr-defined]
        rows += _polarity_rows(name, target, examples, vectors, analyzer)
        for e, v in zip(examples[:500], vectors[:500], strict=False):
            start = time.perf_counter()
            analyzer.analyze(e.text, v, "")
            latencies.append(time.perf_counter() - start)
    turns = _heldout_turns()
    vectors = cache.vectors([t for t, _ in turns])  # type: ignore[attr-defined]
    predicted = [analyzer.analyze(t, v, "").label for (t, _), v in zip(turns, vectors, strict=True)]
    acc, f1, cells = _metrics([label for _, label in turns], predicted, EMOTIONS)
    spread = Counter(predicted)
    rows.append(
        Row(
            "category",
            "team held-out turns: accuracy",
            acc,
            digits=3,
            extra=cells,
            note=f"n={len(turns)}, macro-F1 {f1:.3f}",
        )
    )
    rows.append(
        Row(
            "category",
            "predicted distribution",
            None,
            display=", ".join(f"{label} {spread[label]}" for label in EMOTIONS),
        )
    )
    p = percentiles_ms(latencies)
    rows.append(
        Row(
            "latency",
            "analyze p50 per turn (vector given)",
            p["p50"],
            unit="ms",
            target="≤ 5 ms",
            passed=p["p50"] <= 5.0,
            digits=2,
            note=f"p95 {p['p95']:.2f} ms, n={p['n']}",
        )
    )
    return rows


def _confusion(row: Row, labels: tuple[str, ...]) -> None:
    width = max(len(label) for label in labels) + 2
    console.print(f"[bold]{row.name}[/bold] (rows: truth, columns: predicted)")
    console.print(" " * width + "".join(f"{label[:9]:>10}" for label in labels))
    for t in labels:
        console.print(f"{t:<{width}}" + "".join(f"{int(row.extra.get(f'{t}>{p}', 0)):>10}" for p in labels))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=_datasets.DEFAULT_DATA, help="datasets folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    from _vectors import VectorCache

    started = time.perf_counter()
    report = Report("emotion per user turn")
    for row in run(args.data, VectorCache()):
        report.add(row)
    report.note(machine_line())
    report.finish(started, args.json)
    for row in report.rows:
        if row.extra and row.section == "polarity":
            _confusion(row, SIDES)
        elif row.extra and row.section == "category":
            _confusion(row, EMOTIONS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
