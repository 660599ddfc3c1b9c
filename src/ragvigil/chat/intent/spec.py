"""The intents file: read, bounded and validated, every problem reported at once with its location.

Why one error listing everything: an operator editing a file of a hundred intents should fix it in
one pass, not one problem per reload. Every input is bounded (bytes of the file, intents, examples
per intent and in all, characters of an example or a reply), so a file cannot make the load embed
without end. The file::

    threshold: 0.80          # optional: a turn whose nearest example is less similar is ``other``
    intents:
      - name: greeting
        action: small_talk   # optional: small_talk | handoff
        examples: [你好, hello]
        replies: {zh: 你好！, en: Hello!}   # optional: the short reply of a small_talk intent
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ACTIONS",
    "DEFAULT_FILE",
    "IntentFileError",
    "IntentSet",
    "IntentSpec",
    "Limits",
    "load_file",
    "parse",
]

ACTIONS = ("small_talk", "handoff")
LANGUAGES = ("zh", "en")
DEFAULT_FILE = Path(__file__).with_name("default_intents.yaml")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DEFAULT_THRESHOLD = 0.80


@dataclass(frozen=True)
class Limits:
    """The bounds of one intents file (the defaults fit a benchmark of 150 intents x 100 examples)."""

    max_bytes: int = 4 * 1024 * 1024
    max_intents: int = 256
    max_examples_per_intent: int = 200
    max_examples: int = 20_000
    max_example_chars: int = 512
    max_reply_chars: int = 1000


@dataclass(frozen=True)
class IntentSpec:
    name: str
    examples: tuple[str, ...]
    action: str | None = None
    replies: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IntentSet:
    """The intents of one file, in file order; ``source`` says where they came from (for logs)."""

    intents: tuple[IntentSpec, ...]
    threshold: float = DEFAULT_THRESHOLD
    source: str = ""

    def get(self, name: str) -> IntentSpec | None:
        return next((i for i in self.intents if i.name == name), None)

    @property
    def examples(self) -> list[tuple[str, str]]:
        """(intent, example) rows, the classifier's training data."""
        return [(i.name, e) for i in self.intents for e in i.examples]


class IntentFileError(ValueError):
    """An intents file that cannot be used; ``problems`` lists every one, each with its location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))


def load_file(path: Path, limits: Limits = Limits()) -> IntentSet:
    """Read and validate ``path``; raises ``IntentFileError`` listing every problem."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise IntentFileError(source, [f"file: {size} bytes, more than the {limits.max_bytes} allowed"])
        with path.open("rb") as f:
            raw = f.read(limits.max_bytes + 1)
    except OSError as exc:
        raise IntentFileError(source, [f"file: cannot be read ({exc.strerror or exc})"]) from None
    return parse(raw, source, limits)


def parse(raw: bytes | str, source: str = "<text>", limits: Limits = Limits()) -> IntentSet:
    """Validate the text of an intents file; raises ``IntentFileError`` listing every problem."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > limits.max_bytes:
        raise IntentFileError(source, [f"file: {len(data)} bytes, more than the {limits.max_bytes} allowed"])
    try:
        doc = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise IntentFileError(source, [f"file: not UTF-8 (byte {exc.start})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        problem = getattr(exc, "problem", None) or str(exc)
        raise IntentFileError(source, [f"{where}: YAML error: {problem}"]) from None
    problems: list[str] = []
    intents = _intents(doc, problems, limits)
    threshold = _threshold(doc, problems)
    if problems:
        raise IntentFileError(source, problems)
    return IntentSet(tuple(intents), threshold, source)


def _threshold(doc: Any, problems: list[str]) -> float:
    if not isinstance(doc, dict) or doc.get("threshold") is None:
        return DEFAULT_THRESHOLD
    value = doc["threshold"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        problems.append(f"threshold: {value!r} is not a number in [0, 1]")
        return DEFAULT_THRESHOLD
    return float(value)


def _intents(doc: Any, problems: list[str], limits: Limits) -> list[IntentSpec]:
    if not isinstance(doc, dict):
        problems.append("file: expected a mapping with an `intents:` list")
        return []
    if unknown := sorted(set(map(str, doc)) - {"intents", "threshold"}):
        problems.append(f"file: unknown key(s) {', '.join(unknown)} (known: intents, threshold)")
    items = doc.get("intents")
    if not isinstance(items, list) or not items:
        problems.append("intents: missing or not a non-empty list")
        return []
    if len(items) > limits.max_intents:
        problems.append(f"intents: {len(items)} intents, more than the {limits.max_intents} allowed")
    seen: dict[str, int] = {}
    total = 0
    out = []
    for n, item in enumerate(items[: limits.max_intents]):
        spec = _intent(f"intents[{n}]", item, problems, limits)
        if spec is None:
            continue
        if spec.name in seen:
            problems.append(f"intents[{n}].name: {spec.name!r} duplicates intents[{seen[spec.name]}]")
        seen.setdefault(spec.name, n)
        total += len(spec.examples)
        out.append(spec)
    if total > limits.max_examples:
        problems.append(f"intents: {total} examples in all, more than the {limits.max_examples} allowed")
    return out


def _intent(where: str, item: Any, problems: list[str], limits: Limits) -> IntentSpec | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: expected a mapping with name and examples")
        return None
    before = len(problems)
    if unknown := sorted(set(map(str, item)) - {"name", "examples", "action", "replies"}):
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (known: name, examples, action, replies)")
    name = item.get("name")
    if name is None:
        problems.append(f"{where}.name: missing")
    elif not isinstance(name, str) or not NAME.match(name):
        problems.append(f"{where}.name: {name!r} must be lowercase letters, digits and _ (at most 64)")
    where = f"{where} ({name})" if isinstance(name, str) else where
    action = item.get("action")
    if action is not None and action not in ACTIONS:
        problems.append(f"{where}.action: unknown action {action!r} (known: {', '.join(ACTIONS)})")
    examples = _examples(where, item.get("examples"), problems, limits)
    replies = _replies(where, item.get("replies"), problems, limits)
    if len(problems) > before:
        return None
    return IntentSpec(str(name), tuple(examples), action, replies)


def _examples(where: str, raw: Any, problems: list[str], limits: Limits) -> list[str]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}.examples: missing or empty (at least one example)")
        return []
    if len(raw) > limits.max_examples_per_intent:
        problems.append(
            f"{where}.examples: {len(raw)} examples, more than the {limits.max_examples_per_intent} allowed"
        )
    out = []
    for n, example in enumerate(raw):
        if not isinstance(example, str):
            problems.append(f"{where}.examples[{n}]: not a string ({type(example).__name__})")
        elif not example.strip():
            problems.append(f"{where}.examples[{n}]: empty")
        elif len(example) > limits.max_example_chars:
            problems.append(f"{where}.examples[{n}]: {len(example)} characters, more than {limits.max_example_chars}")
        else:
            out.append(example.strip())
    return out


def _replies(where: str, raw: Any, problems: list[str], limits: Limits) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}.replies: expected a mapping of language (zh, en) to a reply")
        return {}
    out = {}
    for lang, text in raw.items():
        if lang not in LANGUAGES:
            problems.append(f"{where}.replies.{lang}: unknown language (known: {', '.join(LANGUAGES)})")
        elif not isinstance(text, str) or not text.strip():
            problems.append(f"{where}.replies.{lang}: not a non-empty string")
        elif len(text) > limits.max_reply_chars:
            problems.append(f"{where}.replies.{lang}: {len(text)} characters, more than {limits.max_reply_chars}")
        else:
            out[lang] = text.strip()
    return out
