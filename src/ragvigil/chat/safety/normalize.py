"""The forms a text is matched in, so spacing, width, script, leetspeak and pinyin tricks do not hide a term.

Why several forms rather than one: Chinese has no word boundaries, so Chinese terms are matched as
substrings of ``compact`` (every separator gone: "自 杀", "自.杀" → "自杀"); English terms need word
boundaries ("kill the process" must not become "killtheprocess"), so they are matched in ``words``
(separators as one space, runs of single letters joined: "s u i c i d e" → "suicide", leet digits
read as letters: "su1c1de"); pinyin and homophone tricks ("zisha", "不想活le", 紫砂) are matched in
``pinyin``, where every Chinese character is its toneless syllable and Latin words stay as typed.

The pinyin table is pypinyin's single-character dictionary (first reading, tones stripped), read
once: a dict lookup per character keeps normalising a turn in the tens of microseconds, where
pypinyin's phrase segmentation costs milliseconds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import zhconv

__all__ = ["Normalized", "normalize", "pinyin_of", "syllables"]

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_IS_CJK = re.compile(f"[{_CJK}]")
_SEPARATORS = re.compile(r"[^\w]+|_+")  # anything that is not a letter, digit or CJK character
_LEET_TOKEN = re.compile(r"\S*[a-z]\S*")  # a token holding a letter: its digits and symbols may be leet
_SINGLE_RUN = re.compile(r"\b(?:[a-z] ){2,}[a-z]\b")  # "s u i c i d e"
_TONES = str.maketrans("āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜüńňǹḿ", "aaaaeeeeiiiioooouuuuvvvvvnnnm")


@dataclass(frozen=True)
class Normalized:
    """``text`` NFKC + case-fold + simplified + homophones; ``compact`` without separators; ``words``
    separators as spaces, leet read, single letters joined; ``pinyin`` ``words`` with CJK as syllables."""

    text: str
    compact: str
    words: str
    pinyin: str


@lru_cache(maxsize=1)
def _pinyin_table() -> dict[str, str]:
    from pypinyin.pinyin_dict import pinyin_dict

    return {chr(cp): readings.split(",")[0].translate(_TONES) for cp, readings in pinyin_dict.items()}


def pinyin_of(text: str) -> str:
    """Each CJK character of ``text`` as its toneless syllable between spaces; everything else kept."""
    table = _pinyin_table()
    out = []
    for ch in text:
        syllable = table.get(ch) if _IS_CJK.match(ch) else None
        out.append(f" {syllable} " if syllable else ch)
    return " ".join("".join(out).split())


def syllables(term: str) -> list[str]:
    """The syllables of a Chinese term (for the pinyin pattern a lexicon derives from it)."""
    return pinyin_of(term).split()


def normalize(text: str, max_chars: int, homophones: Mapping[str, str] | None = None) -> Normalized:
    """All matching forms of ``text``, cut to ``max_chars`` first so the work per turn is bounded."""
    base = unicodedata.normalize("NFKC", text[:max_chars]).casefold()
    if _IS_CJK.search(base):
        base = zhconv.convert(base, "zh-cn")
    for variant, canonical in (homophones or {}).items():
        if variant in base:
            base = base.replace(variant, canonical)
    compact = _SEPARATORS.sub("", base)
    spaced = _LEET_TOKEN.sub(lambda m: m.group(0).translate(_LEET), base)
    spaced = " ".join(_SEPARATORS.sub(" ", spaced).split())
    words = _SINGLE_RUN.sub(lambda m: m.group(0).replace(" ", ""), spaced)
    return Normalized(text=base, compact=compact, words=words, pinyin=pinyin_of(words))
