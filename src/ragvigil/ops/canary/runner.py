"""The safety canary: known crisis and benign probes through the safety check the chat path uses, on a timer.

Why: a safety filter that silently stops working (a bad lexicon file, a model that no longer loads, a
deploy that wired it off) looks exactly like one that works while nobody in crisis writes in. The canary
asks the live check the questions whose answers are known and turns a wrong answer into a signal:
``ragvigil_safety_canary_passing`` 0, the P1 ``SafetyCanaryFailing``, safe mode by remediation.

Answers are probed too (``check: output`` probes): an unsafe answer through the live ``check_output``
must be flagged (the answer check then replaces it), a caring one must not; a wrong answer decision
fails the run like a wrong message decision, counted in the same outcomes.

Each run goes through what a user turn goes through: the runtime's current ``SafetyCheck`` (read at every
run, so a wrapped or replaced check is the one tested), the turn's e5 query vector (embedded once per
probe and kept: probes are fixed), and the pipeline's own decision rule (``outcome_of``). The checks run
on a worker thread joined for ``timeout_s``; a run that does not end in time fails, and while that worker
is still stuck no new one is started (a hung check never stacks threads), every later run failing too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ragvigil.ops import metrics
from ragvigil.ops.canary.probes import Probe
from ragvigil.ops.periodic import Periodic

if TYPE_CHECKING:
    import numpy as np

    from ragvigil.chat.understanding import SafetyCheck, SafetyVerdict

log = logging.getLogger(__name__)

Outcome = Literal["crisis", "flagged", "clear"]
OUTCOMES = ("pass", "missed", "flagged", "error", "timeout")  # of a run (the runs counter's labels)


def outcome_of(verdict: SafetyVerdict) -> Outcome:
    """The pipeline's decision from a verdict: ``crisis`` (answered with the crisis response, handed to a
    person first), ``flagged`` (another category: the flagged-turn response), ``clear`` (answered as usual)."""
    if verdict.crisis:
        return "crisis"
    return "flagged" if verdict.flagged else "clear"


def probe_outcome(check: SafetyCheck, text: str, vector: np.ndarray | None = None) -> Outcome:
    """What the chat path does with ``text`` under ``check``: the one rule the canary and the pipeline share."""
    return outcome_of(check.check(text, vector))


@dataclass
class CanaryRun:
    """One run: ``outcome`` one of OUTCOMES; ``failures`` the failing probes' ids and why (never their text)."""

    at: float
    outcome: str
    duration_ms: float
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


class SafetyCanary:
    """Runs the probes through ``check()`` (the runtime's current check) every ``interval_s`` seconds."""

    def __init__(
        self,
        check: Callable[[], SafetyCheck | None],
        probes: tuple[Probe, ...],
        *,
        interval_s: float = 5.0,
        timeout_s: float = 5.0,
        embed: Callable[[str], np.ndarray] | None = None,
    ) -> None:
        self.check = check
        self.probes = probes
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.embed = embed
        self.last: CanaryRun | None = None
        self.last_failure: CanaryRun | None = None
        self.runs = dict.fromkeys(OUTCOMES, 0)
        self._vectors: dict[str, np.ndarray] = {}
        self._worker: threading.Thread | None = None
        self._current = ""  # the probe the worker is checking (named when it hangs)
        self._lock = threading.Lock()  # one run at a time (the timer's, or one asked for by a test)
        self._started = False
        self._job = Periodic("safety-canary", interval_s, self.run_once, run_at_start=True)

    # --- the timer ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._started = True
        self._job.start()

    def stop(self) -> None:
        """Stop the timer; the gauge goes absent again (this instance no longer knows)."""
        self._job.stop()
        if self._started:  # a canary that never ran leaves another runtime's signal alone
            self._started = False
            metrics.SAFETY_CANARY.set(None)

    # --- one run -----------------------------------------------------------------------------------
    def run_once(self) -> CanaryRun | None:
        """One run now; None (and no signal) when the runtime has no safety check at all."""
        with self._lock:
            check = self.check()
            if check is None:
                return None
            start = time.monotonic()
            if self._worker is not None and self._worker.is_alive():
                run = CanaryRun(time.time(), "timeout", 0.0, [{"probe": self._current, "reason": "still_running"}])
            else:
                run = self._run(check, start)
            self._record(run)
            return run

    def _run(self, check: SafetyCheck, start: float) -> CanaryRun:
        # before the timed part: embedding is not safety; answers are checked without a vector, as sent
        vectors = {p.id: self._vector(p) if p.check == "input" else None for p in self.probes}
        failures: list[dict[str, str]] = []
        done = threading.Event()

        def work() -> None:
            for probe in self.probes:
                self._current = probe.id
                failure = self._probe(check, probe, vectors[probe.id])
                if failure is not None:
                    failures.append(failure)
            done.set()

        self._worker = threading.Thread(target=work, name="safety-canary-probes", daemon=True)
        t0 = time.monotonic()
        self._worker.start()
        self._worker.join(self.timeout_s)
        ms = round((time.monotonic() - t0) * 1000, 1)
        if not done.is_set():
            return CanaryRun(time.time(), "timeout", ms, [{"probe": self._current, "reason": "timeout"}])
        reasons = {f["reason"] for f in failures}
        outcome = next((o for o in ("error", "missed", "flagged") if o in reasons), "pass")
        return CanaryRun(time.time(), outcome, ms, failures)

    def _probe(self, check: SafetyCheck, probe: Probe, vector: np.ndarray | None) -> dict[str, str] | None:
        """Why ``probe`` failed (``missed``, ``flagged``, ``error``), or None when the check got it right."""
        if probe.check == "output":
            return self._answer_probe(check, probe)
        try:
            verdict = check.check(probe.text, vector)
            got = outcome_of(verdict)
            if probe.expect == "crisis" and got == "crisis":
                if not str(check.response(verdict, probe.lang) or "").strip():  # the crisis response is the answer
                    return {"probe": probe.id, "reason": "error", "detail": "empty crisis response"}
                return None
        except Exception as exc:  # the filter raising is a failure, never a pass; only its type is kept
            return {"probe": probe.id, "reason": "error", "detail": type(exc).__name__}
        if probe.expect == "crisis":
            return {"probe": probe.id, "reason": "missed", "detail": f"decided {got}"}
        if got != "clear":
            return {"probe": probe.id, "reason": "flagged", "detail": f"decided {got}"}
        return None

    @staticmethod
    def _answer_probe(check: SafetyCheck, probe: Probe) -> dict[str, str] | None:
        """An answer through ``check_output``, decided as the answer check decides: flagged → replaced.

        An unsafe answer let through is ``missed`` (it would reach the user), a caring one replaced is
        ``flagged``; the detail says it was an answer, so the runbook's first look tells the two paths apart.
        """
        try:
            got = "flagged" if check.check_output(probe.text).flagged else "clear"
        except Exception as exc:  # the answer check raising is a failure, never a pass
            return {"probe": probe.id, "reason": "error", "detail": type(exc).__name__}
        if got == probe.expect:
            return None
        return {
            "probe": probe.id,
            "reason": "missed" if probe.expect == "flagged" else "flagged",
            "detail": f"answer {got}",
        }

    def _vector(self, probe: Probe) -> np.ndarray | None:
        """The probe's query vector, as a turn would carry it; None while the embedder fails (tried again)."""
        if self.embed is None:
            return None
        found = self._vectors.get(probe.id)
        if found is None:
            try:
                found = self._vectors[probe.id] = self.embed(probe.text)
            except Exception as exc:
                log.info("safety_canary_embedding_failed", extra={"probe": probe.id, "error": type(exc).__name__})
        return found

    def _record(self, run: CanaryRun) -> None:
        was = self.last.passed if self.last is not None else None
        self.last = run
        self.runs[run.outcome] += 1
        metrics.SAFETY_CANARY_RUNS.labels(run.outcome).inc()
        metrics.SAFETY_CANARY.set(1.0 if run.passed else 0.0)
        if not run.passed:
            self.last_failure = run
            log.warning("safety_canary_failed", extra={"outcome": run.outcome, "failures": run.failures})
        elif was is False:
            log.warning("safety_canary_passing_again", extra={"duration_ms": run.duration_ms})

    # --- what operators read -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """``passing`` (None before the first run), the last run, the last failure, counts; probe ids only."""
        check = self.check()
        return {
            "enabled": True,
            # the check itself, not the fault wrapper around it
            "check": type(getattr(check, "inner", check)).__name__ if check is not None else None,
            "passing": None if self.last is None else self.last.passed,
            "interval_s": self.interval_s,
            "timeout_s": self.timeout_s,
            "probes": {e: sum(p.check == "input" and p.expect == e for p in self.probes) for e in ("crisis", "clear")},
            "answer_probes": {
                e: sum(p.check == "output" and p.expect == e for p in self.probes) for e in ("flagged", "clear")
            },
            "running": self._job.running,
            "last_run": self.last.to_dict() if self.last else None,
            "last_failure": self.last_failure.to_dict() if self.last_failure else None,
            "runs": dict(self.runs),
        }
