"""The output check: an answer is checked before it is sent, and an unsafe one is replaced.

Why a stage after ``generate`` that also guards the stream: a whole answer can be checked once it
exists, but a streamed one reaches the client piece by piece. So while streaming, the answer is
relayed sentence by sentence, and each sentence is let out only after the text so far passed the
check; on a flagged one the relay stops, the replacement is sent instead, and the turn's stored
answer is the replacement (the SSE ``done`` says ``replaced: true``). The rest of the model's
answer is still read (so the turn's provider and token counts stay true) but never relayed.

A check that raises fails closed: the answer is replaced by the safe-mode response, the turn degraded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from ragvigil.chat.pipeline import BaseStage, Turn
from ragvigil.chat.understand import Understanding, count_flag
from ragvigil.chat.understanding import SafetyCheck, SafetyVerdict
from ragvigil.ops import metrics, semconv

log = logging.getLogger(__name__)

# where a sentence ends: Latin and CJK end punctuation, or a line break
_SENTENCE_END = re.compile(r"[.!?。！？；;…]+[\"'”’)）\]]*\s*|\n+")
MAX_HELD_CHARS = 400  # a "sentence" without an end is checked and relayed once this long


class AnswerCheck(BaseStage):
    """``safety.check_output`` on the answer; a flagged one replaced by ``safety.replacement``."""

    name = "answer_check"

    def __init__(self, understanding: Understanding, safe_response: Callable[[str], str]) -> None:
        self.understanding = understanding
        self.safe_response = safe_response

    def __call__(self, turn: Turn) -> None:
        safety = self.understanding.safety
        if safety is None or turn.settled_by is not None or turn.output_verdict is not None:
            return  # nothing to check with, our own fixed answer, or the stream's guard checked it already
        verdict = self._check(turn, safety, turn.answer)
        if verdict.flagged:
            self._replace(turn, safety, verdict)

    def guard(self, turn: Turn, deltas: Iterator[str]) -> Iterator[str]:
        """Relay ``deltas`` a sentence at a time, each after the answer so far passed the check."""
        safety = self.understanding.safety
        if safety is None or turn.settled_by is not None:
            yield from deltas
            return
        held, sent = "", ""
        flagged: SafetyVerdict | None = None
        for delta in deltas:
            if flagged is not None:
                continue  # read to the end (the generation finishes), relay nothing more
            held += delta
            cut = _last_sentence_end(held)
            if cut == 0 and len(held) < MAX_HELD_CHARS:
                continue
            cut = cut or len(held)
            verdict = self._check(turn, safety, sent + held[:cut])
            if verdict.flagged:
                flagged = verdict
                continue
            sent, piece, held = sent + held[:cut], held[:cut], held[cut:]
            yield piece
        if flagged is None and held:
            verdict = self._check(turn, safety, sent + held)
            if verdict.flagged:
                flagged = verdict
            else:
                yield held
        if turn.output_verdict is None:  # every sentence passed
            turn.output_verdict = SafetyVerdict()
        if flagged is not None:
            self._replace(turn, safety, flagged)
            yield ("\n\n" if sent else "") + turn.answer

    def _check(self, turn: Turn, safety: SafetyCheck, text: str) -> SafetyVerdict:
        try:
            verdict = safety.check_output(text)
        except Exception as exc:  # fail closed: an unchecked answer is not sent
            log.error("answer_check_failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            metrics.SAFETY_FLAGS.labels("error", "none", "output").inc()
            turn.degrade(f"answer check failed ({type(exc).__name__}); answered with the safe response")
            verdict = _FAILED
        if verdict.flagged:
            turn.output_verdict = verdict
        return verdict

    def _replace(self, turn: Turn, safety: SafetyCheck, verdict: SafetyVerdict) -> None:
        if verdict is _FAILED:
            turn.answer = self.safe_response(turn.language)
        else:
            count_flag(verdict, "output")
            turn.answer = safety.replacement(verdict, turn.language)
        turn.sources = []
        turn.replaced = True

    def span_attributes(self, turn: Turn) -> dict[str, Any]:
        v = turn.output_verdict
        return {
            semconv.SPAN_KIND: semconv.CHAIN,
            "ragvigil.answer.replaced": turn.replaced,
            "ragvigil.safety.output_category": v.category if v is not None else None,
        }


_FAILED = SafetyVerdict(category="error", severity="none")  # the check itself failed (never a real category)


def _last_sentence_end(text: str) -> int:
    """The offset just past the last complete sentence of ``text`` (0: none yet)."""
    end = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
    return end
