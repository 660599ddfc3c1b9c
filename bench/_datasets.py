"""Loaders for the public labelled data sets the quality benchmarks and training scripts read.

The data is never copied into the repository: every loader takes the datasets folder (``--data``,
default ``<repo>/../shared/datasets``). Which file may be trained on is the data set's README's
call; ``split_holdout`` holds out a fixed part of a train-only file for the numbers, by seed.
"""

from __future__ import annotations

import csv
import json
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

from _common import REPO_ROOT

DEFAULT_DATA = REPO_ROOT / ".." / "shared" / "datasets"
SEED = 20261201


@dataclass(frozen=True)
class Example:
    text: str
    label: str


def chnsenticorp(data: Path) -> list[Example]:
    """Hotel reviews, ``1`` positive / ``0`` negative (eval; train only on a held-out part of it)."""
    with (data / "sentiment" / "chnsenticorp_htl_all.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = [Example(r["review"].strip(), "positive" if r["label"] == "1" else "negative") for r in rows]
    return [e for e in out if e.text]


def vader(data: Path, which: str = "tweets", neutral_band: float = 0.5) -> list[Example]:
    """VADER ground truth (eval): polarity from the human mean valence; ``|valence| < neutral_band`` is dropped."""
    out = []
    path = data / "sentiment" / f"vader_{which}_groundtruth.txt"
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t", 2)
        if len(parts) != 3:
            continue
        valence = float(parts[1])
        if abs(valence) >= neutral_band:
            out.append(Example(parts[2].strip(), "positive" if valence > 0 else "negative"))
    return out


def banking77(data: Path) -> list[Example]:
    """10,003 banking utterances, 77 intents (train: hold a split out with ``split_holdout``)."""
    with (data / "intent" / "banking77_train.csv").open(encoding="utf-8") as f:
        return [Example(r["text"].strip(), r["category"]) for r in csv.DictReader(f)]


def clinc150(data: Path, split: str) -> list[Example]:
    """``train``/``val`` in-scope rows and ``oos_train``/``oos_val`` rows (label ``oos``)."""
    raw = json.loads((data / "intent" / "clinc150_train_val.json").read_text(encoding="utf-8"))
    return [Example(text, label) for text, label in raw[split]]


def crosswoz_user_turns(data: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """CrossWOZ val user turns: (text, [(act, domain), ...]) (eval)."""
    with zipfile.ZipFile(data / "intent" / "crosswoz_val.json.zip") as z:
        raw = json.loads(z.read("val.json"))
    turns = []
    for dialogue in raw.values():
        for m in dialogue["messages"]:
            if m["role"] == "usr" and m["content"].strip():
                turns.append((m["content"].strip(), [(a[0], a[1]) for a in m["dialog_act"]]))
    return turns


def cold(data: Path, split: str) -> list[Example]:
    """COLD ``train``/``dev``: ``offensive`` or ``safe`` Chinese comments."""
    with (data / "safety" / f"cold_{split}.csv").open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    return [Example(r["TEXT"].strip(), "offensive" if r["label"] == "1" else "safe") for r in rows if r["TEXT"].strip()]


def split_holdout(rows: list[Example], fraction: float = 0.2, seed: int = SEED) -> tuple[list[Example], list[Example]]:
    """(train, held out): a fixed, label-stratified split, the same on every machine."""
    by_label: dict[str, list[Example]] = {}
    for e in rows:
        by_label.setdefault(e.label, []).append(e)
    train, held = [], []
    rng = random.Random(seed)
    for label in sorted(by_label):
        items = list(by_label[label])
        rng.shuffle(items)
        cut = max(1, round(len(items) * fraction))
        held.extend(items[:cut])
        train.extend(items[cut:])
    return train, held
