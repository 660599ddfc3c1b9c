"""The lexicon layer: valence words, negation, intensifiers, emoji and emotion cue words (``lexicon.yaml``).

Why a lexicon next to the probes: a frozen embedding blurs short turns ("不开心" sits close to
"开心"), and the words that name an emotion ("气死", "worried") are the plainest evidence there is.
The text is cut into units (longest dictionary match inside a CJK run, words and emoji elsewhere);
a negator flips and weakens the next valence word of its clause, an intensifier strengthens it and
marks the turn as intense. Punctuation ends a clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_LEXICON", "Lexicon", "LexiconReading"]

DEFAULT_LEXICON = Path(__file__).with_name("lexicon.yaml")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_UNIT = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+|[a-z]+(?:'[a-z]+)?|:-?[()D]|[^\sa-z\u3400-\u9fff]")
_CLAUSE_END = frozenset("。！？!?.,，;；、\n~")
_NEGATION_WEIGHT = -0.6  # "不满意" is negative, but less than "差"


@dataclass(frozen=True)
class LexiconReading:
    """What the lexicon saw in one text: summed valence, how many valence words, intensity, category cues."""

    valence: float = 0.0
    hits: int = 0
    intense: bool = False
    cues: dict[str, int] = field(default_factory=dict)


class Lexicon:
    """The word lists of ``lexicon.yaml``, matched per unit (see the module docstring)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.negation = {str(w).lower() for words in data.get("negation", {}).values() for w in words}
        self.intensifiers = {str(w).lower() for words in data.get("intensifiers", {}).values() for w in words}
        self.valence: dict[str, float] = {}
        for words in data.get("valence", {}).values():
            self.valence.update({str(w).lower(): float(v) for w, v in words.items()})
        self.valence.update({str(w).lower(): float(v) for w, v in data.get("emoji", {}).items()})
        self.cues: dict[str, str] = {}
        for label, langs in data.get("cues", {}).items():
            for words in langs.values():
                self.cues.update({str(w).lower(): label for w in words})
        self._phrases = sorted({w for w in self.cues if " " in w}, key=len, reverse=True)
        vocab = self.negation | self.intensifiers | set(self.valence) | set(self.cues)
        self._cjk_words = {w for w in vocab if _CJK.fullmatch(w)}
        self._longest = max((len(w) for w in self._cjk_words), default=1)

    @classmethod
    def load(cls, path: Path | None = None) -> Lexicon:
        return cls(yaml.safe_load((path or DEFAULT_LEXICON).read_text(encoding="utf-8")) or {})

    def units(self, text: str) -> list[str]:
        """The text as lexicon units: dictionary words in CJK runs (longest first), words, emoji, punctuation."""
        out: list[str] = []
        for unit in _UNIT.findall(text.lower()):
            if not _CJK.match(unit):
                out.append(unit)
                continue
            i = 0
            while i < len(unit):
                for size in range(min(self._longest, len(unit) - i), 0, -1):
                    piece = unit[i : i + size]
                    if size == 1 or piece in self._cjk_words:
                        out.append(piece)
                        i += size
                        break
        return out

    def read(self, text: str) -> LexiconReading:
        lowered = text.lower()
        cues: dict[str, int] = {}
        for phrase in self._phrases:
            if phrase in lowered:
                cues[self.cues[phrase]] = cues.get(self.cues[phrase], 0) + 1
        valence, hits, intense = 0.0, 0, False
        negated, boost = False, 1.0
        for unit in self.units(text):
            if unit in _CLAUSE_END:
                negated, boost = False, 1.0
                continue
            if unit in self.cues and not negated:
                cues[self.cues[unit]] = cues.get(self.cues[unit], 0) + 1
            if unit in self.valence:
                v = self.valence[unit] * boost
                valence += v * _NEGATION_WEIGHT if negated else v
                hits += 1
                intense = intense or (boost > 1.0 and not negated)
                negated, boost = False, 1.0
            elif unit in self.negation:
                negated = True
            elif unit in self.intensifiers:
                boost = 1.5
        if text.count("!") + text.count("！") >= 2 and hits:
            intense = True
        return LexiconReading(valence, hits, intense, cues)
