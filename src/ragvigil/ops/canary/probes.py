"""The canary's probes: a YAML list of known texts and the decision each must get, validated whole.

Why a file: the probes are the canary's test fixtures, and an operator must be able to add the phrasings
their users write (or their own language) without a release. A bad file names every problem at once.
Two kinds: ``check: input`` (the default) is a user message through ``SafetyCheck.check``, expected
``crisis`` or ``clear``; ``check: output`` is an answer through ``SafetyCheck.check_output``, expected
``flagged`` (an unsafe answer must be replaced) or ``clear`` (a caring answer must be sent as it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

EXPECTS = ("crisis", "clear")  # of an input probe (a user message)
OUTPUT_EXPECTS = ("flagged", "clear")  # of an output probe (an answer about to be sent)
CHECKS = ("input", "output")
FIELDS = {"id", "lang", "expect", "text", "check"}
LANGS = ("zh", "en")
MAX_PROBES = 100
MAX_TEXT_CHARS = 2000
MAX_FILE_BYTES = 256 * 1024


class CanaryProbesInvalid(ValueError):
    """A probe file the canary cannot use; ``problems`` lists every one."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


@dataclass(frozen=True)
class Probe:
    """One known text: ``id`` is what reports name (never ``text``); ``check`` input (a message) or output."""

    id: str
    lang: str
    expect: str
    text: str
    check: str = "input"


def parse_probes(text: str, source: str = "probes") -> tuple[Probe, ...]:
    """The probes of a YAML text (``probes: [{id, lang, expect, text, check?}]``); raises CanaryProbesInvalid."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CanaryProbesInvalid(source, [f"not YAML: {str(exc).splitlines()[0]}"]) from exc
    items = data.get("probes") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise CanaryProbesInvalid(source, ["needs a top-level `probes:` list with at least one probe"])
    problems: list[str] = []
    if len(items) > MAX_PROBES:
        problems.append(f"{len(items)} probes: at most {MAX_PROBES}")
    probes: list[Probe] = []
    seen: set[str] = set()
    for n, item in enumerate(items[:MAX_PROBES]):
        where = f"probes[{n}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a mapping of id, lang, expect, text (and check)")
            continue
        problems += _problems(where, item, seen)
        if not any(p.startswith(where + ":") for p in problems):
            probes.append(
                Probe(str(item["id"]), item["lang"], item["expect"], item["text"], item.get("check", "input"))
            )
    for expect in EXPECTS:  # answers are optional; the messages of both kinds are not
        if not problems and not any(p.check == "input" and p.expect == expect for p in probes):
            problems.append(f"needs at least one probe with expect: {expect}")
    if problems:
        raise CanaryProbesInvalid(source, problems)
    return tuple(probes)


def _problems(where: str, item: dict[str, Any], seen: set[str]) -> list[str]:
    out = []
    if unknown := sorted(set(item) - FIELDS):
        out.append(f"{where}: unknown field {unknown[0]!r}")
    pid = item.get("id")
    if not isinstance(pid, str) or not pid.strip() or len(pid) > 64:
        out.append(f"{where}: id must be a name of 1-64 characters")
    elif pid in seen:
        out.append(f"{where}: id {pid!r} used twice")
    else:
        seen.add(pid)
    if item.get("lang") not in LANGS:
        out.append(f"{where}: lang must be one of {', '.join(LANGS)}")
    check = item.get("check", "input")
    if check not in CHECKS:
        out.append(f"{where}: check must be one of {', '.join(CHECKS)}")
    else:
        expects = EXPECTS if check == "input" else OUTPUT_EXPECTS
        if item.get("expect") not in expects:
            out.append(f"{where}: expect of a check: {check} probe must be one of {', '.join(expects)}")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
        out.append(f"{where}: text must be 1-{MAX_TEXT_CHARS} characters")
    return out


def load_probes(path: Path | None = None) -> tuple[Probe, ...]:
    """The probes of ``path``, or the shipped ``default_probes.yaml``; raises CanaryProbesInvalid."""
    if path is None:
        text = resources.files("ragvigil.ops.canary").joinpath("default_probes.yaml").read_text("utf-8")
        return parse_probes(text, "default_probes.yaml")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CanaryProbesInvalid(str(path), [f"larger than {MAX_FILE_BYTES} bytes"])
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CanaryProbesInvalid(str(path), [f"cannot be read: {exc}"]) from exc
    return parse_probes(text, str(path))
