"""Heading-aware chunking with CJK-aware sentence splitting and sentence overlap.

A chunk never crosses a heading: its ``anchor`` is the heading path ("Billing > Refunds"),
which is what a citation points at. Inside a section, whole sentences are packed up to
``max_chars``; the last sentences of a chunk are repeated at the start of the next one
(up to ``overlap`` characters) so an answer split across a boundary is still found.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# A sentence ends at CJK 。！？； (with the closing quotes after it), at Latin .!? followed by a space or the end,
# or at a line break; never inside a title, quote or bracket that closes on the same line, nor inside a URL or an
# e-mail address, a decimal, an abbreviation or an ellipsis.
_PAIRS = {
    "《": "》",
    "「": "」",
    "『": "』",
    "“": "”",
    "‘": "’",
    "(": ")",
    "（": "）",
    "[": "]",
    "【": "】",
    "〈": "〉",
}
_CLOSERS = frozenset(_PAIRS.values())
_QUOTE_CLOSERS = frozenset('”’」』"')  # a quote ending in 。！？ ends its sentence with the quote
_CJK_END = frozenset("。！？；")
_END_RUN = frozenset("。！？；!?")
_TRAILING = frozenset('”’」』）)"')
_MAX_GROUP = 240  # an opener closed further away than this (or never) does not hold a split back
_LINK = re.compile(r"(?:https?://|www\.)[^\s<>\"，。！？；、（）《》“”]+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII)
_MARK = re.compile(r"[《「『“‘(（\[【〈》」』”’)）\]】〉\"\n。！？；.!?]")
_WORD_BEFORE = re.compile(r"(?:^|[^A-Za-z.])([A-Za-z][A-Za-z.]*)$")
_LIST_MARKER = re.compile(r"^(?:\d{1,3}|[A-Za-z])$")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs v etc e.g i.e cf no nos fig figs inc ltd co corp dept est approx ca al "
    "jan feb mar apr jun jul aug sep sept oct nov dec mt ft vol vols ed eds pp op gen gov sen rep rev "
    "u.s u.k u.n e.u a.m p.m ph.d".split()
)


@dataclass(frozen=True)
class TextChunk:
    ordinal: int
    anchor: str
    text: str


def split_sentences(text: str) -> list[str]:
    """Split into stripped sentences, each keeping its end punctuation and closing quotes.

    A scan rather than one regex: whether a 。 or a "." ends a sentence depends on what is open around it
    (《大小姐×执事！》 is a title, not two sentences) and on the word before it ("v.", "U.S.", "3.5")."""
    parts: list[str] = []
    start = 0
    links = deque((m.start(), m.start() + _link_end(m.group())) for m in _LINK.finditer(text))
    open_: list[str] = []  # the closers awaited, innermost last
    i = 0
    n = len(text)

    def cut(end: int) -> None:
        nonlocal start
        piece = text[start:end].strip()
        if piece:
            parts.append(piece)
        start = end

    while True:
        m = _MARK.search(text, i)
        if m is None:
            break
        i = m.start()
        while links and links[0][1] <= i:  # links are in text order: drop the ones already passed
            links.popleft()
        if links and links[0][0] <= i:
            i = links[0][1]
            continue
        c = text[i]
        i += 1
        if c == "\n":
            cut(i)
            open_.clear()
        elif (c == '"' and open_ and open_[-1] == '"') or c in _CLOSERS:
            if c not in open_:
                continue
            while open_.pop() != c:
                pass
            if not open_ and c in _QUOTE_CLOSERS and text[i - 2] in _END_RUN | {"."}:
                i = _skip(text, i, _TRAILING)
                cut(i)
        elif c in _PAIRS or c == '"':
            closer = _PAIRS.get(c, '"')
            j = text.find(closer, i, i + _MAX_GROUP)
            if j != -1 and "\n" not in text[i:j]:
                open_.append(closer)
        elif open_:
            continue
        elif c in _CJK_END or c in "!?":
            j = _skip(text, _skip(text, i, _END_RUN), _TRAILING)
            if c in _CJK_END or j == n or not text[j].isascii() or text[j].isspace():
                cut(j)
                i = j
        elif c == "." and _ends_at_dot(text, start, i):
            i = _skip(text, i, _TRAILING)
            cut(i)
    cut(n)
    return parts


def _link_end(link: str) -> int:
    """A URL's length without the sentence punctuation written right after it."""
    return len(link.rstrip(".,;:!?)"))


def _skip(text: str, i: int, chars: frozenset[str]) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def _ends_at_dot(text: str, start: int, after: int) -> bool:
    """Whether the "." just before ``after`` ends a sentence: a space (or the end) follows, and it closes
    neither an ellipsis before a lower-case word, an abbreviation, an initial, nor a list number."""
    j = _skip(text, after, _TRAILING)
    if j < len(text) and not text[j].isspace():
        return False  # 3.5, v1.2, file.txt
    rest = text[j:].lstrip()
    if rest and rest[0].islower() and rest[0].isascii():
        return False  # e.g. this, ... and then
    if text[after - 2 : after] == "..":
        return True
    before = text[start : after - 1]
    if _LIST_MARKER.match(before.strip()):
        return False  # "1. Install" at the start of a line
    w = _WORD_BEFORE.search(before)
    if w is None:
        return True
    word = w.group(1).lower()
    return not (word in _ABBREVIATIONS or len(word) == 1 or (len(word) <= 4 and "." in word))


def _sections(text: str, title: str) -> list[tuple[str, str]]:
    """(anchor, body) per heading; the heading path gives the anchor."""
    path: list[tuple[int, str]] = []
    sections: list[tuple[str, list[str]]] = [(title, [])]
    for line in text.splitlines():
        m = _HEADING.match(line.strip())
        if m:
            level, heading = len(m.group(1)), m.group(2).strip()
            path = [(lv, h) for lv, h in path if lv < level] + [(level, heading)]
            sections.append((" > ".join(h for _, h in path), []))
        else:
            sections[-1][1].append(line)
    bodies = [(anchor, tables_as_sentences("\n".join(lines)).strip()) for anchor, lines in sections]
    return [(anchor, body) for anchor, body in bodies if body]


_HAN = re.compile(r"[\u3400-\u9fff]")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^:?-{3,}:?$")


def tables_as_sentences(text: str) -> str:
    """Each body row of a Markdown table as one sentence naming its columns: "人民币价格：免费版 ¥0，团队版 ¥48/人/月。".

    Why: joined as it is, a table is one run-on "sentence" of pipes, too long to quote and with the
    column names (团队版) only in its first row; a row that says which column each value is in can be
    found by those names and quoted alone as the answer ("团队版多少钱？").
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and _TABLE_ROW.match(lines[i]) and _is_rule(lines[i + 1]):
            header = _cells(lines[i])
            i += 2
            while i < len(lines) and _TABLE_ROW.match(lines[i]):
                out.append(_row_sentence(header, _cells(lines[i])))
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _is_rule(line: str) -> bool:
    cells = _cells(line) if _TABLE_ROW.match(line) else []
    return bool(cells) and all(_TABLE_RULE.match(c.replace(" ", "")) for c in cells)


def _row_sentence(header: list[str], row: list[str]) -> str:
    zh = any(_HAN.search(c) for c in header + row)
    pairs = [f"{h} {c}".strip() for h, c in zip(header[1:], row[1:], strict=False) if c]
    label, sep, end = (row[0] if row else ""), ("，" if zh else ", "), ("。" if zh else ".")
    lead = f"{label}：" if zh else f"{label}: "
    return (lead if label else "") + sep.join(pairs) + end


def _hard_split(sentence: str, max_chars: int) -> list[str]:
    return [sentence[i : i + max_chars] for i in range(0, len(sentence), max_chars)]


def chunk_text(text: str, title: str = "", max_chars: int = 500, overlap: int = 80) -> list[TextChunk]:
    """Split a document into chunks of at most ``max_chars`` characters."""
    chunks: list[TextChunk] = []
    for anchor, body in _sections(text, title):
        sentences: list[str] = []
        for s in split_sentences(body):
            sentences.extend(_hard_split(s, max_chars) if len(s) > max_chars else [s])
        current: list[str] = []
        size = 0
        for s in sentences:
            if current and size + len(s) > max_chars:
                chunks.append(TextChunk(len(chunks), anchor, _join(current)))
                kept: list[str] = []
                kept_size = 0
                for prev in reversed(current):
                    if kept_size + len(prev) > overlap:
                        break
                    kept.insert(0, prev)
                    kept_size += len(prev)
                current, size = kept, kept_size
            current.append(s)
            size += len(s)
        if current:
            chunks.append(TextChunk(len(chunks), anchor, _join(current)))
    return chunks


def _join(sentences: list[str]) -> str:
    out = ""
    for s in sentences:
        if out and (out[-1].isascii() or s[0].isascii()):
            out += " "
        out += s
    return out
