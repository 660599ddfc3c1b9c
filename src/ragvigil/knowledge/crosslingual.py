"""Which script a text is written in, and when a cross-lingual vector hit should outrank the query's own language.

multilingual-e5 does match an English question with the Chinese passage that answers it (and the reverse), but
every cosine carries a language offset: a passage in the query's own language scores ~0.04-0.07 higher than one in
the other language whatever it says. Compared raw, same-language noise always wins and the answering document in
the other language never reaches the top (nor the candidate list). So the two languages are ranked apart and
their best hits compared with that offset added back; term coverage, which is 0 across languages, only ever
speaks for the own-language side.
"""

from __future__ import annotations

import re
from typing import Literal

Script = Literal["zh", "en"]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def script_of(text: str) -> Script | None:
    """``zh`` when CJK characters carry the text, ``en`` when Latin letters do, ``None`` with neither.

    One CJK character counts as much as three Latin letters (about a word each), so "导出成 Word 格式" is
    Chinese and "How do I pay with WeChat Pay (微信)?" is English.
    """
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    if not cjk and not latin:
        return None
    return "zh" if 3 * cjk >= latin else "en"


def own_strength(cosine: float | None, coverage: float, coverage_weight: float) -> float:
    """How well the query's own language answers: its best hit's cosine, raised by the query terms it covers."""
    return (cosine or 0.0) + coverage_weight * coverage


def prefer_crosslingual(
    own: float | None, other_cosine: float | None, language_offset: float, min_cosine: float
) -> bool:
    """True when the other language's best vector hit beats the own language's best (``own_strength``).

    ``own`` is None when no hit in the query's language was found at all. The cross-lingual hit must clear
    ``min_cosine`` on its own: with nothing relevant on either side, the own language keeps the ranking.
    """
    if other_cosine is None or other_cosine < min_cosine:
        return False
    if own is None:
        return True
    return other_cosine + language_offset > own
