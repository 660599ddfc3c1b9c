"""Heading-aware chunking with CJK-aware sentence splitting and sentence overlap.

A chunk never crosses a heading: its ``anchor`` is the heading path ("Billing > Refunds"),
which is what a citation points at. Inside a section, whole sentences are packed up to
``max_chars``; the last sentences of a chunk are repeated at the start of the next one
(up to ``overlap`` characters) so an answer split across a boundary is still found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# A sentence ends at CJK 。！？； (optionally followed by closing quotes) or at Latin .!? followed by space.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?])[”’」』）)]*|(?<=[.])(?=\s)|\n")


@dataclass(frozen=True)
class TextChunk:
    ordinal: int
    anchor: str
    text: str


def split_sentences(text: str) -> list[str]:
    """Split into sentences; keeps the end punctuation with its sentence."""
    parts: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        piece = text[start:end].strip()
        if piece:
            parts.append(piece)
        start = end
    tail = text[start:].strip()
    if tail:
        parts.append(tail)
    return parts


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
    return [(anchor, "\n".join(lines).strip()) for anchor, lines in sections if "\n".join(lines).strip()]


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
