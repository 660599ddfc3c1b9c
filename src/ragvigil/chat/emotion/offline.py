"""The offline emotion analyzer: e5 probes, a Chinese n-gram layer and a lexicon, combined by a fixed rule.

Parts (all weights in this folder, trained by ``training/train_emotion.py``):

- ``polarity.npz``: a softmax probe (``chat.probe.LinearProbe``) over the turn's e5 query vector with
  labels negative / neutral / positive. Its negative and positive rows are the train part of a fixed
  split inside ChnSentiCorp plus team-written exemplars (zh and en); neutral rows are exemplars only.
- ``polarity_zh.npz`` (optional): the same probe trained on every (cached) ChnSentiCorp train row plus
  the Chinese exemplars, read for a Chinese turn (``language`` zh, or CJK characters when the language
  is not given). Why two: one probe trained on Chinese reviews raised ChnSentiCorp 0.882 -> 0.890 but
  cost the English sets (tweets 0.899 -> 0.875), since reviews then outweighed the English rows; the
  turn's language is known, so each side gets the probe that suits it (ChnSentiCorp 0.891, the
  English sets unchanged).
- ``zh_ngrams.npz``: binarised naive Bayes over CJK character 1-2-grams, trained on the same
  ChnSentiCorp train part (``naive_bayes.py``); it has no opinion on a text without CJK characters.
- ``lexicon.yaml``: valence words with negation and intensifiers, emoji, and emotion cue words.
- ``combiner.npz``: a 2-class probe over three features — the polarity probe's positive-minus-negative
  logit, the n-gram log-odds / 10 (clipped to ±2) and the lexicon valence (clipped to ±4) — fitted on
  a development slice of the ChnSentiCorp train part that neither the probes nor the n-gram layer saw.
  ``combiner_zh.npz`` (with ``polarity_zh.npz``) is the same fit on the Chinese probe's margins, for
  Chinese turns; ``combiner.npz`` keeps the general probe's scale, for the other turns.
  A part with no opinion (no vector, or no CJK n-gram the layer knows: every English turn) is set to
  the combiner's mean for that feature, so it pulls neither way.
- ``category.npz``: a softmax probe over the e5 vector with the seven ``EMOTIONS``, on exemplars.

How the 5 steps come out of a binary-trained model:

1. ``side = 2 * P_combiner(positive) - 1`` in [-1, 1] says which side and how sure.
2. The polarity probe's P(neutral) shrinks it: ``score = side * (1 - n)``, where ``n`` is P(neutral),
   times 0.3 when the lexicon found a valence word (a named feeling is not neutral). With no vector
   (no embedding) the probe parts are left out: ``n`` is 0.5 without a lexicon hit, else 0.
3. An intensifier on a valence word ("太棒", "so worried"), or "!!", makes the turn intense: ``|score|``
   grows by ``INTENSITY_BOOST`` (capped at 1).
4. Thresholds on the score: ``|score| < NEUTRAL_BELOW`` → neutral; ``< VERY_FROM`` → negative / positive;
   otherwise very_negative / very_positive. The scale is therefore ordered by the score.

The category: the category probe's probabilities, plus ``CUE_WEIGHT`` per lexicon cue word of a
category, renormalised; then made consistent with the polarity: a neutral turn with no cue word stays
``neutral`` unless one category is clear (> ``CLEAR_CATEGORY``); a polar turn whose best category is
neutral or of the other side takes the best category of its own side (joy, surprise | sadness, anger,
fear, disgust; surprise may go with either).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragvigil.chat.emotion.lexicon import Lexicon, LexiconReading
from ragvigil.chat.emotion.naive_bayes import CharNaiveBayes
from ragvigil.chat.probe import LinearProbe
from ragvigil.chat.understanding import EMOTIONS, Emotion

__all__ = ["WEIGHTS_DIR", "OfflineEmotionAnalyzer", "features", "is_chinese", "polarity_of"]

WEIGHTS_DIR = Path(__file__).parent
NEUTRAL_BELOW = 0.2
VERY_FROM = 0.6
INTENSITY_BOOST = 0.15
CUE_WEIGHT = 0.5
CLEAR_CATEGORY = 0.6
NEGATIVE_SIDE = ("sadness", "anger", "fear", "disgust", "surprise")
POSITIVE_SIDE = ("joy", "surprise")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def is_chinese(text: str, language: str = "") -> bool:
    """The turn's language when known (zh, zh-CN, ...), else whether the text has CJK characters."""
    if language:
        return language.casefold().startswith("zh")
    return _CJK.search(text) is not None


def polarity_of(score: float) -> str:
    """The 5-step label of a score in [-1, 1] (thresholds ``NEUTRAL_BELOW`` and ``VERY_FROM``)."""
    size = abs(score)
    if size < NEUTRAL_BELOW:
        return "neutral"
    side = "positive" if score > 0 else "negative"
    return f"very_{side}" if size >= VERY_FROM else side


def features(margin: float, nb_log_odds: float, reading: LexiconReading) -> np.ndarray:
    """The combiner's input: probe margin, scaled n-gram log-odds, lexicon valence (both clipped)."""
    return np.array(
        [margin, float(np.clip(nb_log_odds / 10.0, -2.0, 2.0)), float(np.clip(reading.valence, -4.0, 4.0))],
        dtype=np.float32,
    )


@dataclass
class OfflineEmotionAnalyzer:
    """``analyze(text, vector, language)`` from the committed weights (see the module docstring)."""

    polarity: LinearProbe
    category: LinearProbe
    ngrams: CharNaiveBayes
    combiner: LinearProbe
    lexicon: Lexicon
    polarity_zh: LinearProbe | None = None
    combiner_zh: LinearProbe | None = None
    name: str = "offline"

    @classmethod
    def load(cls, directory: Path | None = None, lexicon: Path | None = None) -> OfflineEmotionAnalyzer:
        d = directory or WEIGHTS_DIR
        zh, zh_combiner = d / "polarity_zh.npz", d / "combiner_zh.npz"
        both = zh.exists() and zh_combiner.exists()  # one without the other would mix two scales
        return cls(
            polarity=LinearProbe.load(d / "polarity.npz"),
            category=LinearProbe.load(d / "category.npz"),
            ngrams=CharNaiveBayes.load(d / "zh_ngrams.npz"),
            combiner=LinearProbe.load(d / "combiner.npz"),
            lexicon=Lexicon.load(lexicon),
            polarity_zh=LinearProbe.load(zh) if both else None,
            combiner_zh=LinearProbe.load(zh_combiner) if both else None,
        )

    def probe_for(self, chinese: bool) -> LinearProbe:
        """The Chinese probe for a Chinese turn when it is there, else the general one."""
        return self.polarity_zh if chinese and self.polarity_zh is not None else self.polarity

    def margin(self, vector: np.ndarray, chinese: bool = False) -> tuple[float, float]:
        """(positive-minus-negative logit, P(neutral)) of the polarity probe for the turn's language."""
        probe = self.probe_for(chinese)
        logits = probe.logits(vector)[0]
        labels = probe.labels
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return float(logits[labels.index("positive")] - logits[labels.index("negative")]), float(
            p[labels.index("neutral")]
        )

    def side(
        self, text: str, vector: np.ndarray | None, reading: LexiconReading, language: str = ""
    ) -> tuple[float, float]:
        """(side in [-1, 1], neutral weight) before intensity: step 1 and 2 of the module docstring."""
        chinese = is_chinese(text, language)
        combiner = self.combiner_zh if chinese and self.combiner_zh is not None else self.combiner
        if vector is not None:
            margin, neutral = self.margin(vector, chinese)
        else:
            margin, neutral = 0.0, 0.0 if reading.hits else 0.5
        log_odds = self.ngrams.log_odds(text)
        x = features(margin, log_odds, reading)
        # a part with no opinion (no vector; no CJK n-gram it knows) sits at the combiner's mean: it adds nothing
        if vector is None:
            x[0] = combiner.mean[0]
        if log_odds == 0.0:
            x[1] = combiner.mean[1]
        p_pos = combiner.probability(x, "positive")
        if reading.hits:
            neutral *= 0.3
        return 2.0 * p_pos - 1.0, neutral

    def analyze(self, text: str, vector: np.ndarray | None, language: str = "") -> Emotion:
        reading = self.lexicon.read(text)
        side, neutral = self.side(text, vector, reading, language)
        score = side * (1.0 - neutral)
        if reading.intense and score != 0.0:
            score = float(np.sign(score)) * min(1.0, abs(score) + INTENSITY_BOOST)
        score = float(np.clip(score, -1.0, 1.0))
        polarity = polarity_of(score)
        label, confidence = self._category(vector, reading, polarity)
        return Emotion(label=label, polarity=polarity, score=score, confidence=confidence)

    def _category(self, vector: np.ndarray | None, reading: LexiconReading, polarity: str) -> tuple[str, float]:
        probs = dict.fromkeys(EMOTIONS, 0.0)
        if vector is not None:
            probs.update(zip(self.category.labels, self.category.proba(vector)[0].tolist(), strict=True))
        else:
            probs["neutral"] = 1.0
        for label, count in reading.cues.items():
            probs[label] = probs.get(label, 0.0) + CUE_WEIGHT * count
        total = sum(probs.values()) or 1.0
        probs = {k: v / total for k, v in probs.items()}
        best = max(probs, key=probs.__getitem__)
        if polarity == "neutral":
            if best != "neutral" and not reading.cues and probs[best] <= CLEAR_CATEGORY:
                best = "neutral"
        else:
            allowed = POSITIVE_SIDE if polarity.endswith("positive") else NEGATIVE_SIDE
            if best not in allowed:
                best = max(allowed, key=probs.__getitem__)
        return best, float(probs[best])
