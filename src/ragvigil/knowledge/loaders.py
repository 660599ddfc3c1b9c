"""Turn uploaded bytes into clean text with headings kept as Markdown.

Why repair here: help-centre exports often arrive as UTF-8 that some tool decoded as
Windows-1252 ("ä¸­æ–‡"). ftfy undoes that; where bytes were lost the repair is only
partial, and the document carries a warning instead of being indexed as if clean.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import ftfy
from ftfy.badness import is_bad

from ragvigil.config import IngestSettings
from ragvigil.knowledge.pdf import PdfLimits, PdfRejected, extract_pdf_text

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")


class LoadError(Exception):
    """A file that cannot become a document; the message says why."""


@dataclass
class LoadedDocument:
    source: str
    title: str
    text: str
    content_hash: str
    size_bytes: int
    warnings: list[str] = field(default_factory=list)
    damage: TextDamage | None = None  # what the mojibake repair left behind, measured on the final text
    repaired: bool = False  # the text had been decoded with the wrong encoding and was repaired


@dataclass(frozen=True)
class TextDamage:
    """What is left of encoding damage in a text, measured after repair.

    Why counted, not guessed: a document whose repair was partial ("会å‘˜", "�以在�年") would put
    those characters into answers; ingest quarantines it when too few characters came through.
    ``lost`` estimates the characters that did not survive: each residual mojibake fragment (a UTF-8
    lead byte shown as Latin-1/cp1252 followed by continuation bytes, or a run of orphan continuation
    bytes) and each replacement character stands for one lost character.
    """

    letters: int  # letters and digits that came through (a CJK character counts one)
    lost: int  # characters estimated lost
    replacement_chars: int  # U+FFFD in the text
    fragments: int  # residual mojibake fragments

    @property
    def recovered_share(self) -> float:
        """Share of the text's characters that came through intact (1.0 for a clean text)."""
        total = self.letters + self.lost
        return 1.0 if not self.lost else self.letters / total

    def describe(self) -> str:
        """One line for an operator: the share recovered and the evidence (never the text)."""
        return (
            f"only {self.recovered_share:.0%} of its characters recovered after encoding repair "
            f"({self.fragments} mojibake fragments, {self.replacement_chars} replacement characters)"
        )


# A UTF-8 lead byte decoded as Latin-1/cp1252, then the continuation bytes as they show in cp1252 (U+0080-U+00BF
# and the cp1252 letters of 0x80-0x9F); orphan continuation bytes in a run (their lead byte was lost), leaving out
# the typographic quotes, dashes and ellipsis that also sit next to each other in clean text.
_CP1252_HIGH = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"  # what cp1252 shows for the bytes 0x80-0x9F
_TYPOGRAPHIC = "…‘’“”•–—†‡€‚„"
_CONT = "\u0080-\u00bf" + _CP1252_HIGH
_ORPHAN = "\u0080-\u00bf" + "".join(ch for ch in _CP1252_HIGH if ch not in _TYPOGRAPHIC)
_DAMAGE = re.compile(f"[\u00c2-\u00ef][{_CONT}]{{1,2}}|[{_ORPHAN}]{{2,3}}|\ufffd")


def measure_damage(text: str) -> TextDamage:
    """Count what a repair left behind in ``text`` (linear in its length)."""
    fragments = replacement = damaged_letters = 0
    for m in _DAMAGE.finditer(text):
        if m.group() == "\ufffd":
            replacement += 1
        else:
            fragments += 1
        damaged_letters += sum(ch.isalnum() for ch in m.group())
    letters = sum(ch.isalnum() for ch in text) - damaged_letters
    return TextDamage(
        letters=max(letters, 0), lost=fragments + replacement, replacement_chars=replacement, fragments=fragments
    )


# Fragments that survive only when a mojibake repair was partial.
_MOJIBAKE_LEFTOVER = re.compile(r"[ÃÂâåäæçèéï][\x80-\xbf\u0152-\u2122]|\ufffd|Ã.|â€")


def decode_bytes(raw: bytes) -> str:
    """Decode with the encodings such files actually come in, strict first."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for enc in ("utf-8", "gb18030"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("cp1252", errors="replace")


def repair_text(text: str) -> tuple[str, list[str]]:
    """Fix mojibake (keeping full-width CJK punctuation) and report what could not be fixed."""
    fixed = ftfy.fix_text(text, fix_character_width=False, normalization="NFC")
    warnings: list[str] = []
    if fixed != text and _looks_mojibake(text):
        warnings.append("mojibake repaired (text had been decoded with the wrong encoding)")
    leftovers = _MOJIBAKE_LEFTOVER.findall(fixed)
    if leftovers or is_bad(fixed):
        warnings.append(
            f"encoding damage remains after repair ({len(leftovers)} suspicious fragments); "
            "some characters may be lost — re-export the source as UTF-8"
        )
    return fixed, warnings


def _looks_mojibake(text: str) -> bool:
    return bool(_MOJIBAKE_LEFTOVER.search(text)) or is_bad(text)


def _html_to_markdown(html: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup  # ~4 MB of modules, for an HTML document only (not at a server's start)

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "header", "footer", "noscript", "template", "aside"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    lines: list[str] = []
    body = soup.body or soup
    for el in body.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td", "th", "blockquote"]):
        if el.find_parent(["p", "li", "td", "th", "blockquote", "pre"]) is not None:
            continue  # its text is already part of the enclosing block
        txt = el.get_text(" ", strip=True)
        if not txt:
            continue
        if el.name and el.name[0] == "h" and el.name[1:].isdigit():
            lines.append("#" * int(el.name[1:]) + " " + txt)
        elif el.name == "li":
            lines.append("- " + txt)
        else:
            lines.append(txt)
    return "\n\n".join(lines), title


def pdf_limits(limits: IngestSettings, time_left_s: float | None = None) -> PdfLimits:
    """The PDF extractor's bounds from the ``ingest`` settings, its clock cut to ``time_left_s`` if given."""
    budget, setting = limits.pdf_time_budget_s, "ingest.pdf_time_budget_s"
    if time_left_s is not None and time_left_s < budget:
        budget, setting = max(time_left_s, 0.0), "ingest.upload_time_budget_s"
    return PdfLimits(
        max_pages=limits.pdf_max_pages,
        max_stream_bytes=limits.pdf_max_stream_bytes,
        max_stream_tokens=limits.pdf_max_stream_tokens,
        max_chars=limits.max_text_chars,
        time_budget_s=budget,
        budget_setting=setting,
    )


# C0 controls except tab/newline/carriage return, DEL, and lone surrogates: PostgreSQL refuses
# NUL in text, and none of them carries meaning in a help-centre article.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]|[\ud800-\udfff]")


def strip_controls(text: str) -> str:
    """Drop control characters (form feed becomes a line break, a page break in text exports)."""
    return _CONTROL.sub("", text.replace("\x0c", "\n"))


def _first_heading(text: str) -> str:
    for line in text.splitlines():
        m = re.match(r"^#{1,6}\s+(.+?)\s*#*$", line.strip())
        if m:
            return m.group(1)
    return ""


def load_bytes(
    raw: bytes, source: str, limits: IngestSettings | None = None, time_left_s: float | None = None
) -> LoadedDocument:
    """Parse one file's bytes by its suffix. Raises LoadError for unsupported, empty or over-limit input.

    ``time_left_s`` is what remains of a larger budget (one upload's) for extracting a PDF.
    """
    limits = limits or IngestSettings()
    suffix = PurePath(source).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise LoadError(f"unsupported file type {suffix or '(none)'}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    if not raw.strip():
        raise LoadError("empty file")
    if len(raw) > limits.max_file_bytes:
        raise LoadError(
            f"file has {len(raw)} bytes; at most {limits.max_file_bytes} are accepted (ingest.max_file_bytes)"
        )
    title = ""
    pdf_warnings: list[str] = []
    try:
        if suffix == ".pdf":
            text, pdf_warnings = extract_pdf_text(raw, pdf_limits(limits, time_left_s))
        elif suffix in (".html", ".htm"):
            if len(raw) > limits.html_max_bytes:
                raise LoadError(
                    f"HTML file has {len(raw)} bytes; at most {limits.html_max_bytes} (ingest.html_max_bytes)"
                )
            text, title = _html_to_markdown(decode_bytes(raw))
        else:
            text = decode_bytes(raw)
    except PdfRejected as exc:
        raise LoadError(str(exc)) from None
    except (RecursionError, ValueError) as exc:  # markup nested too deep for the parser, or broken beyond repair
        raise LoadError(f"unreadable {suffix} file: {type(exc).__name__}: {exc}") from None
    text = strip_controls(text)
    if len(text) > limits.max_text_chars:
        raise LoadError(f"text has {len(text)} characters; at most {limits.max_text_chars} (ingest.max_text_chars)")
    text, warnings = repair_text(text)
    repaired = any(w.startswith("mojibake repaired") for w in warnings)
    warnings = pdf_warnings + warnings
    text = re.sub(r"[ \t]+\n", "\n", text).strip()
    if not text:
        raise LoadError("no extractable text (scanned PDF or empty markup?)")
    title = _first_heading(text) or title or PurePath(source).stem
    return LoadedDocument(
        source=source,
        title=title[:500],
        text=text,
        content_hash=hashlib.sha256(raw).hexdigest(),
        size_bytes=len(raw),
        warnings=warnings,
        damage=measure_damage(text),
        repaired=repaired,
    )


def load_path(path: Path) -> LoadedDocument:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"cannot read file: {exc.strerror or exc}") from exc
    return load_bytes(raw, str(path))


def discover(paths: list[Path]) -> list[Path]:
    """Expand directories into their files (sorted, hidden files skipped); files are kept as given."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(
                f
                for f in sorted(p.rglob("*"))
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        else:
            found.append(p)
    return found
