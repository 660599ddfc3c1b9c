"""The forms a text is matched in, so spacing, width, script, leetspeak and pinyin tricks do not hide a term.

Why several forms rather than one: Chinese has no word boundaries, so Chinese terms are matched as
substrings of ``compact`` (every separator gone: "自 杀", "自.杀" → "自杀"); English terms need word
boundaries ("kill the process" must not become "killtheprocess"), so they are matched in ``words``
(separators as one space, runs of single letters joined: "s u i c i d e" → "suicide", leet digits
read as letters: "su1c1de"); pinyin and homophone tricks ("zisha", "不想活le", 紫砂) are matched in
``pinyin``, where every Chinese character is its toneless syllable in upper case and Latin words
stay as typed in lower case: a pinyin term only counts when at least one of its syllables was typed
in Latin letters (whole-CJK text is matched by its characters: pinyin of CJK text collides with
everyday words, 物化自己 reads "hua zi ji" like 划自己). Known homophones (紫砂) are in the map.

The pinyin table is pypinyin's single-character dictionary (first reading, tones stripped), read
once: a lookup per character keeps normalising a turn in the tens of microseconds, where pypinyin's
phrase segmentation costs milliseconds. Its JSON file is read straight from the installed package:
importing ``pypinyin`` (even ``pypinyin.pinyin_dict``) runs the package's ``__init__``, which loads its
phrase dictionary too, ~55 MB of Python objects held for the life of the process. Only the characters
``_IS_CJK`` matches are ever looked up, so the table is one unsigned 16-bit syllable number per code
point below U+FB00 (~125 KB) and the distinct syllables (~400 strings).
"""

from __future__ import annotations

import importlib.util
import json
import re
import unicodedata
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ragvigil.lean_import import import_without_pkg_resources

import_without_pkg_resources("zhconv")  # its table found by path, without pkg_resources (~5 MB)
import zhconv  # noqa: E402

__all__ = ["Normalized", "normalize", "pinyin_of", "syllables"]

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_IS_CJK = re.compile(f"[{_CJK}]")
_SEPARATORS = re.compile(r"[^\w]+|_+")  # anything that is not a letter, digit or CJK character
_LETTER = re.compile(r"[a-z]")
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
    raw_compact: str = ""  # ``compact`` before the homophone map, for benign contexts (紫砂壶)


_TABLE_END = 0xFB00  # one past the last code point ``_IS_CJK`` matches (U+FAFF)


def _pinyin_json() -> Path:
    """pypinyin's single-character JSON, found without importing the package (see the module docstring)."""
    spec = importlib.util.find_spec("pypinyin")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pypinyin is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pinyin_dict.json"


@lru_cache(maxsize=1)
def _pinyin_table() -> tuple[array, tuple[str, ...]]:
    """``codes[ord(ch)]``: the number of ``ch``'s syllable in ``names`` (upper case, toneless; 0: none)."""
    readings: dict[str, str] = json.loads(_pinyin_json().read_text(encoding="utf-8"))
    codes = array("H", bytes(2 * _TABLE_END))
    index: dict[str, int] = {"": 0}
    for cp, reading in readings.items():
        if (point := int(cp)) < _TABLE_END:
            syllable = reading.split(",")[0].translate(_TONES).upper()
            codes[point] = index.setdefault(syllable, len(index)) if syllable else 0
    return codes, tuple(index)


def pinyin_of(text: str) -> str:
    """Each CJK character of ``text`` as its toneless syllable (upper case) between spaces; the rest kept."""
    codes, names = _pinyin_table()
    out = []
    for ch in text:
        code = codes[ord(ch)] if _IS_CJK.match(ch) else 0
        out.append(f" {names[code]} " if code else ch)
    return " ".join("".join(out).split())


def syllables(term: str) -> list[str]:
    """The syllables of a Chinese term (for the pinyin pattern a lexicon derives from it)."""
    return pinyin_of(term).casefold().split()


def normalize(text: str, max_chars: int, homophones: Mapping[str, str] | None = None) -> Normalized:
    """All matching forms of ``text``, cut to ``max_chars`` first so the work per turn is bounded."""
    base = unicodedata.normalize("NFKC", text[:max_chars]).casefold()
    if _IS_CJK.search(base):
        base = zhconv.convert(base, "zh-cn")
    raw_compact = _SEPARATORS.sub("", base)
    for variant, canonical in (homophones or {}).items():
        if variant in base:
            base = base.replace(variant, canonical)
    compact = _SEPARATORS.sub("", base)
    spaced = " ".join(t.translate(_LEET) if _LETTER.search(t) else t for t in base.split())  # a token with a letter
    spaced = " ".join(_SEPARATORS.sub(" ", spaced).split())
    words = _SINGLE_RUN.sub(lambda m: m.group(0).replace(" ", ""), spaced)
    typed = _LETTER.search(words) is not None  # no Latin letter: no pinyin was typed, skip the form
    return Normalized(base, compact, words, pinyin_of(words) if typed else "", raw_compact)
