"""What a flagged turn is answered with, per language: the crisis response with the locale's hotlines,
a calm refusal per category, and the replacement of an unsafe answer (``resources.yaml``, editable).

Languages are matched by their primary subtag ("zh-CN" → ``zh``); an unknown one falls back to ``en``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ragvigil.chat.understanding import CATEGORIES, CRISIS_CATEGORIES, SafetyVerdict

__all__ = ["DEFAULT_RESOURCES", "Hotline", "Resources", "ResourcesError", "load_resources"]

DEFAULT_RESOURCES = Path(__file__).with_name("resources.yaml")
MAX_FILE_BYTES = 256 * 1024


class ResourcesError(ValueError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Hotline:
    name: str
    number: str
    hours: str = ""

    def line(self) -> str:
        return f"- {self.name}: {self.number}" + (f" ({self.hours})" if self.hours else "")


@dataclass(frozen=True)
class LanguagePack:
    crisis: str
    crisis_closing: str
    hotlines: tuple[Hotline, ...]
    refusals: dict[str, str]
    replacement: str

    def crisis_text(self) -> str:
        return "\n".join([self.crisis, *(h.line() for h in self.hotlines), self.crisis_closing]).strip()


@dataclass(frozen=True)
class Resources:
    languages: dict[str, LanguagePack]

    def pack(self, language: str) -> LanguagePack:
        primary = (language or "").split("-")[0].split("_")[0].casefold()
        if primary in self.languages:
            return self.languages[primary]
        return self.languages.get("en") or next(iter(self.languages.values()))

    def response(self, verdict: SafetyVerdict, language: str) -> str:
        """The crisis response (with hotlines) for a crisis verdict, a calm refusal for any other category."""
        pack = self.pack(language)
        if verdict.category in CRISIS_CATEGORIES:
            return pack.crisis_text()
        return pack.refusals.get(verdict.category or "", pack.refusals["default"])

    def replacement(self, verdict: SafetyVerdict, language: str) -> str:
        """The text sent instead of an unsafe answer; a self-harm answer also gets the crisis hotlines."""
        pack = self.pack(language)
        if verdict.category in CRISIS_CATEGORIES:
            return pack.crisis_text()
        return pack.replacement


def load_resources(path: Path | None = None) -> Resources:
    path = path or DEFAULT_RESOURCES
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_FILE_BYTES:
            raise ResourcesError(str(path), [f"file is {len(raw)} bytes, more than {MAX_FILE_BYTES}"])
        doc = yaml.safe_load(raw.decode("utf-8"))
    except OSError as e:
        raise ResourcesError(str(path), [f"cannot read: {e.strerror or e}"]) from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ResourcesError(str(path), [f"not valid YAML: {e}"]) from e
    problems: list[str] = []
    languages = doc.get("languages") if isinstance(doc, dict) else None
    if not isinstance(languages, dict) or not languages:
        raise ResourcesError(str(path), ["languages: must map a language code to its texts"])
    packs = {}
    for code, raw_pack in languages.items():
        pack = _pack(str(code), raw_pack, problems)
        if pack is not None:
            packs[str(code).casefold()] = pack
    if problems:
        raise ResourcesError(str(path), problems)
    return Resources(packs)


def _text(d: dict[str, Any], key: str, where: str, problems: list[str]) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}.{key}: required text")
        return ""
    return value.strip()


def _pack(code: str, raw: Any, problems: list[str]) -> LanguagePack | None:
    where = f"languages.{code}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping")
        return None
    before = len(problems)
    crisis = _text(raw, "crisis", where, problems)
    closing = _text(raw, "crisis_closing", where, problems)
    replacement = _text(raw, "replacement", where, problems)
    hotlines = []
    raw_lines = raw.get("hotlines")
    if not isinstance(raw_lines, list) or not raw_lines:
        problems.append(f"{where}.hotlines: at least one hotline (name, number, hours)")
        raw_lines = []
    for i, h in enumerate(raw_lines):
        if not isinstance(h, dict) or not h.get("name") or not h.get("number"):
            problems.append(f"{where}.hotlines[{i}]: needs a name and a number")
            continue
        hotlines.append(Hotline(str(h["name"]), str(h["number"]), str(h.get("hours") or "")))
    refusals = raw.get("refusals")
    if not isinstance(refusals, dict) or not isinstance(refusals.get("default"), str):
        problems.append(f"{where}.refusals: must map categories to texts and have a default")
        refusals = {}
    unknown = set(refusals) - set(CATEGORIES) - {"default"}
    problems += [f"{where}.refusals.{k}: not a category ({', '.join(CATEGORIES)})" for k in sorted(unknown)]
    if len(problems) > before:
        return None
    return LanguagePack(crisis, closing, tuple(hotlines), {str(k): str(v) for k, v in refusals.items()}, replacement)
