"""``SafetyChecker``: the ``SafetyCheck`` of ``chat.understanding``, from the lexicon, its patterns and the probes.

The combination rule (also in ``docs/safety.md``):

1. Every lexicon term or pattern that matches one of the normalised forms, and is not vetoed by one
   of its entry's benign contexts overlapping that match, is a finding with the entry's category and severity.
2. The crisis probe alone flags ``self_harm`` (severity ``high``) only at ``crisis_threshold`` or
   above (unset: the threshold its training chose by cross-validation, stored with the weights); benign contexts do not veto it (a benign word next to a real crisis must not hide it).
   At ``crisis_boost`` or above it raises a self-harm lexicon finding of lower severity to ``high``.
   In a third-person death-fact context (``third_person.py``: "刘七是怎么死的？", no first- or second-person
   marker) the probe alone needs ``crisis_third_person`` instead: it reads "death" and "how", not who.
3. The offensive probe flags ``harassment`` at ``offensive_threshold`` (severity ``low``) and at
   ``offensive_strong`` (``medium``); an insult's severity is the lexicon's call above that.
4. The verdict: a crisis finding, when there is one, decides the category (a person's safety comes
   first), else the most severe finding (ties: the order of ``CATEGORIES``). Its severity is the
   highest of that category's findings.

Findings carry category, severity, source and rule id, never the text. Answers (``check_output``)
are checked against the ``output``/``both`` entries only, so an answer that kindly repeats "you
said you want to die" is not replaced, while one giving a method or encouragement is.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ragvigil.chat.understanding import (
    CATEGORIES,
    CRISIS_CATEGORIES,
    SAFE,
    SEVERITIES,
    SafetyFinding,
    SafetyVerdict,
)

from .classifier import Probes, load_probes
from .lexicon import Lexicon, load_lexicon, reload_lexicon
from .normalize import Normalized, normalize
from .responses import Resources, load_resources
from .third_person import third_person_death_fact

if TYPE_CHECKING:
    from ragvigil.config import SafetySettings

__all__ = ["SafetyChecker", "Thresholds", "combine"]

_RANK = {s: i for i, s in enumerate(SEVERITIES)}
MEMO_ENTRIES = 256  # messages whose lexicon matching is remembered (admission's check, then the pipeline's)
MEMO_MAX_CHARS = 2000  # a longer message is matched afresh each time (the memo's bytes stay bounded)
_ORDER = {c: i for i, c in enumerate(CATEGORIES)}


@dataclass(frozen=True)
class Thresholds:
    crisis: float | None = None  # None: the crisis probe's own (``Probes.crisis_threshold``)
    crisis_boost: float = 0.5
    offensive: float = 0.5
    offensive_strong: float = 0.85
    crisis_third_person: float = 0.99  # the probe alone on a factual question about someone else's death


def combine(findings: list[SafetyFinding]) -> SafetyVerdict:
    """Rule 4: a crisis finding decides; else the most severe; severity the highest of that category."""
    if not findings:
        return SAFE
    crisis = [f for f in findings if f.category in CRISIS_CATEGORIES]
    pool = crisis or findings
    top = max(pool, key=lambda f: (_RANK[f.severity], -_ORDER.get(f.category, 99)))
    severity = max((f.severity for f in pool if f.category == top.category), key=_RANK.__getitem__)
    return SafetyVerdict(top.category, severity, tuple(findings))


class SafetyChecker:
    """Input and output safety; ``enabled`` off makes every verdict safe (what the canary must notice)."""

    def __init__(
        self,
        lexicon: Lexicon | None = None,
        resources: Resources | None = None,
        probes: Probes | None = None,
        thresholds: Thresholds = Thresholds(),
        max_chars: int = 2000,
        lexicon_path: Path | None = None,
        enabled: bool = True,
    ) -> None:
        self.lexicon_path = lexicon_path
        self._use(lexicon or load_lexicon(lexicon_path))
        self.resources = resources or load_resources()
        self.probes = probes if probes is not None else load_probes()
        self.thresholds = thresholds
        self.max_chars = max_chars
        self.enabled = enabled
        self._lock = threading.Lock()
        # text -> (the lexicon state it was matched with, normalized text, findings): see ``_lexical``
        self._memo: dict[str, tuple[object, Normalized, tuple[SafetyFinding, ...]]] = {}

    @classmethod
    def from_settings(cls, settings: SafetySettings) -> SafetyChecker:
        return cls(
            lexicon=load_lexicon(settings.lexicon_file),
            resources=load_resources(settings.resources_file),
            probes=load_probes() if settings.classifier else Probes(None, None),
            thresholds=Thresholds(
                settings.crisis_threshold,
                settings.crisis_boost_threshold,
                settings.offensive_threshold,
                settings.offensive_strong_threshold,
            ),
            max_chars=settings.max_chars,
            lexicon_path=settings.lexicon_file,
            enabled=settings.enabled,
        )

    @property
    def lexicon(self) -> Lexicon:
        return self._state[0]

    def _use(self, lexicon: Lexicon) -> None:
        """One assignment, so a check running during a reload sees either lexicon whole, never a mix."""
        self._state = (lexicon, lexicon.for_scope("input"), lexicon.for_scope("output"))

    def reload(self) -> list[str]:
        """Re-read the lexicon file; on problems the previous lexicon stays and the problems are returned."""
        with self._lock:
            lexicon, problems = reload_lexicon(self.lexicon_path, self.lexicon)
            self._use(lexicon)
        return problems

    def check(self, text: str, vector: np.ndarray | None = None) -> SafetyVerdict:
        if not self.enabled:
            return SAFE
        n, found = self._lexical(text)
        findings = list(found)
        if vector is not None:
            findings = self._classify(findings, vector, third_person_death_fact(n))
        return combine(findings)

    def _lexical(self, text: str) -> tuple[Normalized, tuple[SafetyFinding, ...]]:
        """The normalized input and its lexicon findings, remembered for the last few messages.

        Admission checks a message (lexicon only) before the pipeline checks it again with its vector:
        the second check reuses the first's matching. The memo is tied to the lexicon it was made with
        (a reload starts afresh) and bounded in entries and in the length of the texts it keeps.
        """
        state = self._state
        memo = text if len(text) <= MEMO_MAX_CHARS else None
        if memo is not None:
            kept = self._memo.get(memo)
            if kept is not None and kept[0] is state:
                return kept[1], kept[2]
        lexicon, entries, _ = state
        n = normalize(text, self.max_chars, lexicon.homophones)
        found = tuple(SafetyFinding(e.category, e.severity, s, e.id) for e in entries if (s := e.hit(n)) is not None)
        if memo is not None:
            if len(self._memo) >= MEMO_ENTRIES:
                self._memo.clear()  # a burst of distinct messages: start over, the bound is what matters
            self._memo[memo] = (state, n, found)
        return n, found

    def check_output(self, text: str) -> SafetyVerdict:
        if not self.enabled:
            return SAFE
        lexicon, _, entries = self._state
        n = normalize(text, self.max_chars, lexicon.homophones)
        return combine([SafetyFinding(e.category, e.severity, source, e.id) for e in entries if (source := e.hit(n))])

    def response(self, verdict: SafetyVerdict, language: str) -> str:
        return self.resources.response(verdict, language)

    def replacement(self, verdict: SafetyVerdict, language: str) -> str:
        return self.resources.replacement(verdict, language)

    def _classify(self, findings: list[SafetyFinding], vector: np.ndarray, fact: bool = False) -> list[SafetyFinding]:
        """Rules 2 and 3; ``fact``: a third-person death-fact text, where the probe alone needs more."""
        t = self.thresholds
        p = self.probes.crisis_probability(vector)
        if p is not None:
            alone = t.crisis if t.crisis is not None else self.probes.crisis_threshold
            if fact:
                alone = max(alone, t.crisis_third_person)
            if p >= alone:
                findings.append(SafetyFinding("self_harm", "high", "classifier", "probe.crisis", round(p, 4)))
            elif p >= t.crisis_boost:
                weak = [f for f in findings if f.category in CRISIS_CATEGORIES and _RANK[f.severity] < _RANK["high"]]
                if weak:
                    findings.append(SafetyFinding("self_harm", "high", "classifier", "probe.crisis", round(p, 4)))
        q = self.probes.offensive_probability(vector)
        if q is not None and q >= t.offensive:
            severity = "medium" if q >= t.offensive_strong else "low"
            findings.append(SafetyFinding("harassment", severity, "classifier", "probe.offensive", round(q, 4)))
        return findings
