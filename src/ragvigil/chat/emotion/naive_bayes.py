"""A character n-gram naive-Bayes polarity layer for Chinese, trained on the same split as the probe.

Why: the probe reads a frozen e5 embedding, which averages a long review into one point; word-level
evidence ("不干净", "隔音差") survives better as character bigrams. Binarised multinomial naive
Bayes (each n-gram counted once per text, Laplace smoothing) is the classic strong baseline for
short-text sentiment and is a dictionary lookup per n-gram at run time. Only CJK characters count,
so an English turn gets no opinion from this layer (0.0).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CharNaiveBayes", "ngrams"]

_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")


def ngrams(text: str, sizes: Sequence[int] = (1, 2)) -> set[str]:
    """The distinct CJK character n-grams of ``text`` (n-grams never cross a non-CJK character)."""
    out: set[str] = set()
    for run in _CJK_RUN.findall(text):
        for n in sizes:
            out.update(run[i : i + n] for i in range(len(run) - n + 1))
    return out


@dataclass
class CharNaiveBayes:
    """``weights[g]``: log P(g | positive) - log P(g | negative) of n-gram ``g``; ``prior`` the class log-odds."""

    weights: dict[str, float]
    prior: float
    sizes: tuple[int, ...] = (1, 2)
    meta: dict[str, Any] = field(default_factory=dict)

    def log_odds(self, text: str) -> float:
        """log P(positive | text) / P(negative | text); 0.0 when the text has no known n-gram."""
        grams = [self.weights[g] for g in ngrams(text, self.sizes) if g in self.weights]
        return self.prior + float(sum(grams)) if grams else 0.0

    @classmethod
    def fit(
        cls,
        texts: Iterable[str],
        positive: Iterable[bool],
        sizes: Sequence[int] = (1, 2),
        min_count: int = 3,
        alpha: float = 1.0,
        meta: dict[str, Any] | None = None,
    ) -> CharNaiveBayes:
        pos, neg = Counter[str](), Counter[str]()
        n_pos = n_neg = 0
        for text, is_pos in zip(texts, positive, strict=True):
            grams = ngrams(text, sizes)
            if is_pos:
                pos.update(grams)
                n_pos += 1
            else:
                neg.update(grams)
                n_neg += 1
        vocab = sorted(g for g in set(pos) | set(neg) if pos[g] + neg[g] >= min_count)
        p = np.array([pos[g] for g in vocab], dtype=np.float64) + alpha
        q = np.array([neg[g] for g in vocab], dtype=np.float64) + alpha
        w = np.log(p / p.sum()) - np.log(q / q.sum())
        prior = float(np.log(max(n_pos, 1) / max(n_neg, 1)))
        return cls(dict(zip(vocab, w.tolist(), strict=True)), prior, tuple(sizes), dict(meta or {}, vocab=len(vocab)))

    def save(self, path: Path) -> None:
        grams = sorted(self.weights)
        np.savez_compressed(
            path,
            grams=np.array(grams),
            weights=np.array([self.weights[g] for g in grams], dtype=np.float32),
            prior=np.array(self.prior, dtype=np.float32),
            sizes=np.array(self.sizes, dtype=np.int8),
            meta=np.array(json.dumps(self.meta, ensure_ascii=False)),
        )

    @classmethod
    def load(cls, path: Path) -> CharNaiveBayes:
        with np.load(path, allow_pickle=False) as z:
            weights = dict(zip((str(g) for g in z["grams"]), z["weights"].astype(float).tolist(), strict=True))
            return cls(weights, float(z["prior"]), tuple(int(s) for s in z["sizes"]), json.loads(str(z["meta"])))
