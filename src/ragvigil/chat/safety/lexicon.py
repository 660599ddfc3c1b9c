"""The safety lexicon: entries of terms and patterns per category, read from a YAML file a reviewer can edit.

Each entry: ``id``, ``category`` (one of ``CATEGORIES``), ``severity`` (one of ``SEVERITIES``, not
"none"), ``scope`` (``input``: user messages, ``output``: answers about to be sent, or ``both``),
``terms`` (``zh``/``en``/``pinyin`` lists), ``patterns`` (regular expressions) and ``benign``
(terms or patterns of a context that vetoes the entry where it overlaps a match: "kill the process",
"杀毒软件"; a benign phrase elsewhere in the message does not hide a second, real match). Chinese
terms are matched in the compact form and, unless ``pinyin: false``, as their syllables in the
pinyin form (so "zisha", "zi sha" and the homophone 紫砂 all read as 自杀); English terms and
patterns without CJK in the ``words`` form at word boundaries; patterns with CJK in the compact
form. A file with problems raises ``LexiconError`` listing every one with its line; ``reload``
keeps the previous lexicon then.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ragvigil.chat.understanding import CATEGORIES, SEVERITIES

from .normalize import Normalized, normalize, syllables

__all__ = ["DEFAULT_LEXICON", "Entry", "Lexicon", "LexiconError", "load_lexicon", "reload_lexicon"]

log = logging.getLogger(__name__)
DEFAULT_LEXICON = Path(__file__).with_name("lexicon.yaml")
SCOPES = ("input", "output", "both")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_ENTRY_KEYS = {"id", "category", "severity", "scope", "terms", "patterns", "benign", "pinyin"}
MAX_FILE_BYTES = 1 << 20
MAX_TERM_CHARS = 200


class LexiconError(ValueError):
    """The lexicon file is invalid; ``problems`` lists every fault as 'line N: entries[i] (id): field: reason'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))


def _typed(match: str) -> bool:
    """A pinyin match counts when a syllable of it was typed in Latin letters (lower case in the form)."""
    return any(c.islower() for c in match)


Span = tuple[str, int, int]  # (form, start, end): where in which normalised form a term or context matched


def _find_all(text: str, term: str) -> list[tuple[int, int]]:
    """Every occurrence of ``term`` in ``text`` (overlapping ones too), as (start, end)."""
    spans, i = [], text.find(term)
    while i >= 0:
        spans.append((i, i + len(term)))
        i = text.find(term, i + 1)
    return spans


@dataclass(frozen=True)
class _Matcher:
    """Chinese substrings (compact form) and word-boundary regexes over the words / pinyin / compact forms."""

    cjk: tuple[str, ...] = ()
    words: re.Pattern[str] | None = None
    pinyin: re.Pattern[str] | None = None
    compact: re.Pattern[str] | None = None

    def matches(self, n: Normalized) -> str | None:
        """Which form matched ("lexicon" for a term, "pattern" for a regex), or None."""
        if any(t in n.compact or t in n.raw_compact for t in self.cjk):
            return "lexicon"
        if self.words is not None and self.words.search(n.words):
            return "lexicon"
        if self.pinyin is not None and n.pinyin and any(_typed(m.group(0)) for m in self.pinyin.finditer(n.pinyin)):
            return "lexicon"
        if self.compact is not None and self.compact.search(n.compact):
            return "pattern"
        return None

    def spans(self, n: Normalized, contexts: bool = False) -> list[tuple[str, Span]]:
        """Every match as (source, span). ``contexts``: a benign matcher, whose word patterns also run over the
        pinyin form (Latin words stay as typed there) so a context can cover a pinyin match too."""
        out: list[tuple[str, Span]] = []
        for t in self.cjk:
            out += [("lexicon", ("compact", a, b)) for a, b in _find_all(n.compact, t)]
            out += [("lexicon", ("raw_compact", a, b)) for a, b in _find_all(n.raw_compact, t)]
        if self.words is not None:
            out += [("lexicon", ("words", m.start(), m.end())) for m in self.words.finditer(n.words)]
            if contexts and n.pinyin:
                out += [("lexicon", ("pinyin", m.start(), m.end())) for m in self.words.finditer(n.pinyin)]
        if self.pinyin is not None and n.pinyin:
            typed = (m for m in self.pinyin.finditer(n.pinyin) if _typed(m.group(0)))
            out += [("lexicon", ("pinyin", m.start(), m.end())) for m in typed]
        if self.compact is not None:
            out += [("pattern", ("compact", m.start(), m.end())) for m in self.compact.finditer(n.compact)]
            if contexts:
                out += [("pattern", ("raw_compact", m.start(), m.end())) for m in self.compact.finditer(n.raw_compact)]
        return out


def _covered(span: Span, contexts: list[Span]) -> bool:
    """A benign context overlapping the match in the same form vetoes that match (and only that one)."""
    form, start, end = span
    return any(f == form and s < end and start < e for f, s, e in contexts)


@dataclass(frozen=True)
class Entry:
    id: str
    category: str
    severity: str
    scope: str
    match: _Matcher
    patterns: _Matcher
    benign: _Matcher

    def hit(self, n: Normalized) -> str | None:
        """The finding's source when a term or pattern of the entry matches ``n`` outside every benign context.

        Why per span: "我不想活在别人的期待里，真的想死" holds a benign phrase and a real crisis phrase; a
        context that vetoed the whole entry would leave that message to the probe alone.
        """
        if self.match.matches(n) is None and self.patterns.matches(n) is None:
            return None  # the common case: no term at all, no span work
        hits = self.match.spans(n) + [("pattern", span) for _, span in self.patterns.spans(n)]
        contexts = [span for _, span in self.benign.spans(n, contexts=True)]
        kept = [source for source, span in hits if not _covered(span, contexts)]
        if not kept:
            return None
        return "lexicon" if "lexicon" in kept else "pattern"


@dataclass(frozen=True)
class Lexicon:
    source: str
    entries: tuple[Entry, ...]
    homophones: dict[str, str] = field(default_factory=dict)

    def for_scope(self, scope: str) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.scope in (scope, "both"))


def load_lexicon(path: Path | None = None) -> Lexicon:
    """The lexicon in ``path`` (default: the shipped one); ``LexiconError`` lists every problem."""
    path = path or DEFAULT_LEXICON
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise LexiconError(str(path), [f"cannot read: {e.strerror or e}"]) from e
    if len(raw) > MAX_FILE_BYTES:
        raise LexiconError(str(path), [f"file is {len(raw)} bytes, more than {MAX_FILE_BYTES}"])
    try:
        loader = yaml.SafeLoader(raw.decode("utf-8"))
        try:
            node = loader.get_single_node()
            doc = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LexiconError(str(path), [f"not valid YAML: {e}"]) from e
    return _build(str(path), doc, node)


def reload_lexicon(path: Path | None, previous: Lexicon) -> tuple[Lexicon, list[str]]:
    """(the new lexicon, []) or, when the file has problems, (``previous``, the problems): never no lexicon."""
    try:
        return load_lexicon(path), []
    except LexiconError as e:
        log.error("safety_lexicon_rejected", extra={"source": str(path), "problems": len(e.problems)})
        return previous, e.problems


def _lines(node: Any) -> list[int]:
    """The line of each item of the top-level ``entries`` sequence node."""
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if key.value == "entries" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _build(source: str, doc: Any, node: Any) -> Lexicon:
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise LexiconError(source, ["the file must be a mapping with an 'entries' list"])
    unknown = set(doc) - {"version", "homophones", "entries"}
    problems += [f"unknown top-level key {k!r}" for k in sorted(unknown, key=str)]
    homophones = doc.get("homophones") or {}
    if not isinstance(homophones, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k for k, v in homophones.items()
    ):
        problems.append("homophones: must map a variant to its canonical text (both strings)")
        homophones = {}
    raw_entries = doc.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise LexiconError(source, [*problems, "entries: must be a non-empty list"])
    lines = _lines(node)
    folded = {k.casefold(): v for k, v in homophones.items()}
    entries, seen = [], set()
    for i, raw in enumerate(raw_entries):
        where = f"line {lines[i]}: entries[{i}]" if i < len(lines) else f"entries[{i}]"
        entry_problems: list[str] = []
        entry = _entry(raw, entry_problems, folded)
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            where += f" ({raw['id']})"
            if raw["id"] in seen:
                entry_problems.append(f"id {raw['id']!r} is used twice")
            seen.add(raw["id"])
        problems += [f"{where}: {p}" for p in entry_problems]
        if entry is not None and not entry_problems:
            entries.append(entry)
    if problems:
        raise LexiconError(source, problems)
    return Lexicon(source, tuple(entries), folded)


def _entry(raw: Any, problems: list[str], homophones: dict[str, str]) -> Entry | None:
    if not isinstance(raw, dict):
        problems.append("must be a mapping")
        return None
    problems += [f"unknown field {k!r}" for k in sorted(set(raw) - _ENTRY_KEYS, key=str)]
    if not isinstance(raw.get("id"), str) or not re.fullmatch(r"[a-z0-9_.-]{1,64}", raw.get("id") or ""):
        problems.append("id: required, lower-case letters, digits, '_', '.', '-' (at most 64)")
    if raw.get("category") not in CATEGORIES:
        problems.append(f"category: {raw.get('category')!r} is not one of {', '.join(CATEGORIES)}")
    if raw.get("severity") not in SEVERITIES[1:]:
        problems.append(f"severity: {raw.get('severity')!r} is not one of {', '.join(SEVERITIES[1:])}")
    scope = raw.get("scope", "input")
    if scope not in SCOPES:
        problems.append(f"scope: {scope!r} is not one of {', '.join(SCOPES)}")
    terms = raw.get("terms") or {}
    if not isinstance(terms, dict) or set(terms) - {"zh", "en", "pinyin"}:
        problems.append("terms: must map zh / en / pinyin to lists of strings")
        terms = {}
    zh, en, py = (_strings(terms.get(k), f"terms.{k}", problems) for k in ("zh", "en", "pinyin"))
    patterns = _strings(raw.get("patterns"), "patterns", problems)
    if not (zh or en or py or patterns):
        problems.append("needs at least one term or pattern")
    derive_pinyin = raw.get("pinyin", True)
    if not isinstance(derive_pinyin, bool):
        problems.append("pinyin: must be true or false")
    benign = _strings(raw.get("benign"), "benign", problems)
    match = _terms(zh, en, py, bool(derive_pinyin))
    pattern_matcher = _patterns(patterns, "patterns", problems)
    benign_matcher = _mixed(benign, problems, homophones)
    if problems:
        return None
    return Entry(raw["id"], raw["category"], raw["severity"], scope, match, pattern_matcher, benign_matcher)


def _strings(value: Any, name: str, problems: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"{name}: must be a list of non-empty strings")
        return []
    return [v.strip().casefold() for v in value]


def _word_regex(terms: list[str]) -> re.Pattern[str] | None:
    """Terms in the ``words`` form at word boundaries; a space in a term may be missing ("killmyself")."""
    if not terms:
        return None
    forms = {normalize(t, MAX_TERM_CHARS).words for t in terms}
    alts = sorted({r"\s?".join(re.escape(w) for w in t.split()) for t in forms if t}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(alts) + r")\b")


def _terms(zh: list[str], en: list[str], py: list[str], derive_pinyin: bool) -> _Matcher:
    """Chinese terms of three syllables or more also as pinyin (two-syllable ones collide with everyday
    homophones: 庆生/轻生, 寻思/寻死, 相思/想死; spell those out under ``terms.pinyin`` when unambiguous)."""
    derived = [" ".join(s) for s in map(syllables, zh) if len(s) >= 3] if derive_pinyin else []
    return _Matcher(cjk=tuple(zh), words=_word_regex(en), pinyin=_pinyin_regex(derived + py))


def _pinyin_regex(terms: list[str]) -> re.Pattern[str] | None:
    """Syllables with optional spaces between word boundaries; a trailing particle may run on ("buxianghuole")."""
    if not terms:
        return None
    alts = sorted({r"\s?".join(re.escape(w) for w in t.split()) for t in terms}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(alts) + r")(?:le|la|a|ba|ne|ma|lo)?\b", re.IGNORECASE)


def _patterns(patterns: list[str], name: str, problems: list[str]) -> _Matcher:
    cjk, latin = [], []
    for j, p in enumerate(patterns):
        try:
            re.compile(p)
        except re.error as e:
            problems.append(f"{name}[{j}]: not a valid regular expression: {e}")
            continue
        (cjk if _CJK.search(p) else latin).append(f"(?:{p})")
    return _Matcher(
        words=re.compile("|".join(latin)) if latin else None,
        compact=re.compile("|".join(cjk)) if cjk else None,
    )


def _mixed(items: list[str], problems: list[str], homophones: dict[str, str] | None = None) -> _Matcher:
    """Benign contexts: plain CJK strings as substrings, plain words at word boundaries, the rest as patterns.

    A plain CJK context is also kept in its homophone-mapped compact form (紫砂壶 as 自杀壶), so it covers
    the term the map made of it in the ``compact`` form, where the entry's match is found."""
    special = re.compile(r"[\\.*+?()\[\]{}|^$]")
    plain = [t for t in items if _CJK.search(t) and not special.search(t)]
    mapped = [normalize(t, MAX_TERM_CHARS, homophones).compact for t in plain] if homophones else []
    plain_cjk = list(dict.fromkeys(plain + [t for t in mapped if t]))
    latin_terms = [t for t in items if not _CJK.search(t) and not special.search(t)]
    regexes = [t for t in items if special.search(t)]
    patterns = _patterns(regexes, "benign", problems)
    words = _word_regex(latin_terms)
    if words is not None and patterns.words is not None:
        words = re.compile(f"{words.pattern}|{patterns.words.pattern}")
    return _Matcher(cjk=tuple(plain_cjk), words=words or patterns.words, compact=patterns.compact)
