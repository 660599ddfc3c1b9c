"""The provider router: ordered providers, each behind retries and a circuit breaker, ending in extractive.

Why: with one provider and no breaker, an endpoint that hangs makes every turn wait out the whole
timeout before the fallback answers. Here a turn tries the providers in order; a provider whose
breaker is open, whose key was rejected or that is at its concurrency limit is skipped without a
call; each attempt gets only what is left of the turn's time (``GenerationRequest.timeout_s``), no
attempt starts once it is spent; and when no remote provider answers, ``extractive`` (which never
fails) answers at once with ``Generation.degraded_reason`` set. The router is a ``Generator``, so the
pipeline and the OpenAI-compatible API do not change.

Public face for operators, drills and remediation actions: ``status()``, ``force(name, state, by)``,
``is_open(name)`` and ``reset_key(name, by)``. ``share(store, replica)`` publishes every breaker
transition and force to a ``BreakerStateStore`` and skips a provider another replica has open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

import tenacity

from ragvigil.config import ProviderSettings, Settings
from ragvigil.ops import metrics
from ragvigil.ops.periodic import Periodic
from ragvigil.providers.base import Generation, GenerationRequest, Generator, ProviderContextTooLong, ProviderError
from ragvigil.providers.breaker import BreakerConfig, CircuitBreaker, State
from ragvigil.providers.breaker_store import BreakerRecord, BreakerStateStore, MemoryBreakerStore
from ragvigil.providers.context import fit, trim_hard
from ragvigil.providers.metered import MeteredGenerator
from ragvigil.providers.openai_compat import OpenAIGenerator
from ragvigil.providers.retry_policy import ProviderSkipped, decide

log = logging.getLogger(__name__)
MIN_ATTEMPT_S = 0.05  # an attempt with less time than this left is not started


class UnknownProvider(KeyError):
    """No configured provider has that name (the API answers 404)."""


@dataclass
class Route:
    """One configured provider and its state."""

    settings: ProviderSettings
    generator: Generator
    breaker: CircuitBreaker | None  # None for extractive: it never fails
    slots: threading.BoundedSemaphore
    key_bad: bool = False
    opened_at: float | None = None  # wall clock of the last opening, for people
    forced_by: str | None = None
    in_flight: int = 0  # calls holding a slot now
    followed_at: float = 0.0  # the newest other replica's record this one has followed (its wall-clock ``at``)
    shown: State | None = None  # the state ``ragvigil_provider_breaker_state`` shows for it on this replica
    listeners: list[Callable[[Route], None]] = field(default_factory=list)  # after each breaker transition
    _count_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.settings.name

    def take_slot(self) -> bool:
        if not self.slots.acquire(blocking=False):
            return False
        with self._count_lock:
            self.in_flight += 1
        return True

    def give_slot(self) -> None:
        with self._count_lock:
            self.in_flight -= 1
        self.slots.release()


def provider_list(settings: Settings) -> list[ProviderSettings]:
    """``[[providers]]`` as configured, or the old ``generator`` + ``[openai]`` as a one-provider list;
    ``extractive`` is appended when the list does not end with it."""
    providers = list(settings.providers)
    if not providers and settings.generator == "openai":
        providers = [ProviderSettings(name="openai", **settings.openai.model_dump())]
    if not providers or providers[-1].kind != "extractive":
        providers.append(ProviderSettings(name="extractive", kind="extractive", model="extractive"))
    return providers


def build_router(
    settings: Settings,
    extractive: Generator,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wrap: Callable[[Generator], Generator] | None = None,
) -> ProviderRouter:
    """The router for ``settings``' providers; ``extractive`` is the (metered) last resort.

    ``clock`` and ``sleep`` drive breakers, budgets and backoff (a test passes its own)."""
    routes = [_route(p, extractive, clock, wrap) for p in provider_list(settings)]
    return ProviderRouter(routes, clock=clock, sleep=sleep)


def _route(
    p: ProviderSettings,
    extractive: Generator,
    clock: Callable[[], float] = time.monotonic,
    wrap: Callable[[Generator], Generator] | None = None,
) -> Route:
    if p.kind == "extractive":
        return Route(p, extractive, None, threading.BoundedSemaphore(p.max_concurrency))
    b = p.breaker
    client: Generator = OpenAIGenerator(p, name=p.name)
    config = BreakerConfig(
        b.window_size, b.minimum_calls, b.failure_rate, b.slow_call_rate, b.slow_call_s, b.open_s, b.half_open_calls
    )
    route = Route(
        p,
        # inside the meter: a fault's failure is counted as the provider's, as a real one would be
        MeteredGenerator(wrap(client) if wrap is not None else client, p.model),
        None,
        threading.BoundedSemaphore(p.max_concurrency),
    )
    route.breaker = CircuitBreaker(config, clock=clock, on_transition=lambda a, z: _transitioned(route, a, z))
    metrics.PROVIDER_BREAKER_STATE.labels(p.name).set(State.CLOSED)
    metrics.PROVIDER_KEY_REJECTED.labels(p.name).set(0)
    return route


def _transitioned(route: Route, before: State, after: State) -> None:
    route.shown = after
    metrics.PROVIDER_BREAKER_STATE.labels(route.name).set(after)
    metrics.PROVIDER_BREAKER_TRANSITIONS.labels(route.name, before.label, after.label).inc()
    if after is State.OPEN:
        route.opened_at = time.time()
    log.warning("provider_breaker", extra={"provider": route.name, "from": before.label, "to": after.label})
    for listener in route.listeners:
        listener(route)


class ProviderRouter:
    name = "router"

    def __init__(
        self,
        routes: list[Route],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not routes or routes[-1].settings.kind != "extractive":
            raise ValueError("the provider list must end with extractive")
        self.routes = routes
        self.remote = routes[:-1]
        self.extractive = routes[-1].generator
        self._clock = clock
        self._sleep = sleep
        self.model = self.remote[0].settings.model if self.remote else "extractive"
        self.store: BreakerStateStore = MemoryBreakerStore()
        self.replica = ""
        # counts a call as slow once it has run slow_call_s (a hanging endpoint trips its breaker then)
        slowest = min((r.breaker.config.slow_call_s for r in self.remote if r.breaker is not None), default=1.0)
        self.overdue_watch = Periodic("breaker-overdue", min(1.0, max(0.1, slowest / 4)), self.count_overdue)

    def share(self, store: BreakerStateStore, replica: str) -> None:
        """Publish this router's breaker transitions to ``store`` as ``replica``, and skip a provider that
        another replica's record says is open (in its cool-down) or forced open."""
        self.store, self.replica = store, replica
        for route in self.remote:
            route.listeners.append(self._publish)

    def _publish(self, route: Route) -> None:
        assert route.breaker is not None
        snap = route.breaker.snapshot()
        state = str(snap["state"])
        forced = snap["forced"] if snap["forced"] in ("open", "closed") else None
        record = BreakerRecord(
            state,
            route.opened_at if state == "open" else None,
            forced,  # type: ignore[arg-type]
            route.breaker.config.open_s,
            self.replica,
            time.time(),
        )
        self.store.publish(route.name, record)

    def shared_open(self, route: Route) -> BreakerRecord | None:
        """Another replica's record that makes this one skip ``route`` now, if any (a cheap, cached read).

        Reading it also keeps this replica in line with the others: an operator's forced close (or its
        hand-back to automatic) made on another replica is applied to this one's breaker, and the
        breaker gauge shows the provider open here while it is skipped because of another replica, so
        ``ProviderBreakerOpen`` fires on every replica that fails over, not only on the one that opened it.
        """
        if route.breaker is None or not self.replica:
            return None
        record = self.store.read(route.name)
        if record is None or record.replica == self.replica:
            self._show(route, None)
            return None
        self._follow_force(route, record)
        skipping = record if record.skips(time.time()) else None
        self._show(route, skipping)
        return skipping

    def _follow_force(self, route: Route, record: BreakerRecord) -> None:
        """Apply another replica's forced close, or its return to automatic after a force we followed."""
        assert route.breaker is not None
        if record.at <= route.followed_at:
            return
        route.followed_at = record.at
        followed = route.forced_by is not None and route.forced_by.startswith("replica ")
        if record.forced == "closed" and route.breaker.snapshot()["forced"] != "closed":
            route.breaker.force("closed")
            route.forced_by = f"replica {record.replica}"
            if route.key_bad:
                self._mark_key(route, False)  # as a forced close here does: the operator says it works
            log.warning(
                "provider_breaker_followed", extra={"provider": route.name, "state": "closed", "by": record.replica}
            )
        elif record.forced is None and followed:
            route.breaker.force("auto")
            route.forced_by = None
            log.warning(
                "provider_breaker_followed", extra={"provider": route.name, "state": "auto", "by": record.replica}
            )

    def _show(self, route: Route, skipping: BreakerRecord | None) -> None:
        assert route.breaker is not None
        state = State.OPEN if skipping is not None else route.breaker.state
        if state is not route.shown:
            route.shown = state
            metrics.PROVIDER_BREAKER_STATE.labels(route.name).set(state)

    # --- Generator ----------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> Generation:
        deadline = None if request.timeout_s is None else self._clock() + request.timeout_s
        reasons: list[str] = []
        for route in self.remote:
            try:
                out = self._try(route, request, deadline)
            except ProviderError as exc:
                self._failed_over(route, exc, reasons)
                continue
            out.provider = route.name
            return out
        out = self.extractive.generate(request)
        out.provider = self.routes[-1].name
        if self.remote:
            out.degraded_reason = f"{', '.join(reasons)}; answered by {out.provider}"
        return out

    def stream(self, request: GenerationRequest) -> RoutedStream:
        return RoutedStream(self, request)

    def count_overdue(self) -> None:
        """Count each call in flight past its breaker's ``slow_call_s`` as slow now, not when it ends."""
        for route in self.remote:
            if route.breaker is not None:
                route.breaker.count_overdue()

    def check(self) -> None:
        """Fails when no remote provider can answer now (answers come from extractive, degraded): each is
        asked in order (breaker and key first, then its endpoint) until one passes."""
        errors = []
        for r in self.remote:
            try:
                self.health_check(r.name)()
                return
            except Exception as exc:  # a check reports; any failure of one provider means: try the next
                errors.append(str(exc)[:200])
        if errors:
            raise ProviderSkipped("unavailable", "every provider is failing or open: " + "; ".join(errors))

    def close(self) -> None:
        for route in self.remote:
            close = getattr(route.generator, "close", None)
            if close is not None:
                close()

    # --- operators, drills, remediation -------------------------------------------------------
    def status(self) -> list[dict[str, object]]:
        out = []
        for r in self.routes:
            snap = r.breaker.snapshot() if r.breaker is not None else {}
            remote = self.shared_open(r)
            out.append(
                {
                    "name": r.name,
                    "kind": r.settings.kind,
                    "model": r.settings.model,
                    "timeout_s": r.settings.timeout_s,
                    "max_concurrency": r.settings.max_concurrency,
                    # what trips the breaker on slowness (a drill sizes its slow calls and traffic by them)
                    "slow_call_s": r.breaker.config.slow_call_s if r.breaker is not None else None,
                    "slow_call_rate": r.breaker.config.slow_call_rate if r.breaker is not None else None,
                    "window_size": r.breaker.config.window_size if r.breaker is not None else None,
                    # open here, or open on another replica (then skipped here too: see breaker_source)
                    "breaker": "open" if remote is not None else snap.get("state", "closed"),
                    "breaker_source": f"replica {remote.replica}" if remote is not None else "local",
                    "forced": snap.get("forced"),
                    "forced_by": r.forced_by,
                    "failure_rate": snap.get("failure_rate", 0.0),
                    "slow_rate": snap.get("slow_rate", 0.0),
                    "window_calls": snap.get("window_calls", 0),
                    "calls": snap.get("calls", 0),
                    "opened_at": datetime.fromtimestamp(r.opened_at, UTC).isoformat() if r.opened_at else None,
                    "key_bad": r.key_bad,
                    "in_flight": r.in_flight,
                    "breaker_sharing": self.store.status() if r.breaker is not None else None,
                }
            )
        return out

    def force(self, name: str, state: Literal["open", "closed", "auto"], by: str) -> dict[str, object]:
        """Pin a provider's breaker open or closed, or hand it back to automatic; closed/auto also clear
        ``key_bad`` (the operator says the key was fixed). Returns the provider's status."""
        route = self._route(name)
        if route.breaker is None:
            raise ValueError("the extractive provider has no breaker: it never fails")
        before, after = route.breaker.force(state)
        route.forced_by = None if state == "auto" else by
        if before is after and route.listeners:  # no transition, but the forced flag changed: tell the others
            for listener in route.listeners:
                listener(route)
        if state != "open" and route.key_bad:
            self._mark_key(route, False)
        route.shown = after
        metrics.PROVIDER_BREAKER_STATE.labels(name).set(after)
        log.warning("provider_breaker_forced", extra={"provider": name, "state": state, "by": by})
        return next(s for s in self.status() if s["name"] == name) | {"before": before.label}

    def is_open(self, name: str) -> bool:
        """True while calls to ``name`` are refused (breaker open and cooling, forced open, or key bad)."""
        route = self._route(name)
        return route.breaker is not None and not self._callable(route)

    def names(self) -> list[str]:
        return [r.name for r in self.routes]

    def longest_timeout_s(self) -> float:
        """The longest single wait a remote provider may legitimately take (0 with extractive alone)."""
        return max((r.settings.timeout_s for r in self.remote), default=0.0)

    def health_check(self, name: str) -> Callable[[], None]:
        """A /health check for one provider: its breaker and key first, then the endpoint itself."""
        route = self._route(name)

        def check() -> None:
            if route.key_bad:
                raise ProviderSkipped("key_rejected", f"{name}: its API key was rejected (401/403)")
            if route.breaker is not None and route.breaker.state is State.OPEN:
                raise ProviderSkipped("breaker_open", f"{name}: circuit breaker open")
            if (remote := self.shared_open(route)) is not None:
                raise ProviderSkipped("breaker_open", f"{name}: circuit breaker open on replica {remote.replica}")
            route.generator.check()

        return check

    # --- inside -------------------------------------------------------------------------------
    def _route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise UnknownProvider(name)

    def _callable(self, route: Route) -> bool:
        if route.key_bad or (route.breaker is not None and self.shared_open(route) is not None):
            return False
        return route.breaker is None or route.breaker.would_permit()

    def _left(self, deadline: float | None) -> float | None:
        return None if deadline is None else deadline - self._clock()

    def _mark_key(self, route: Route, bad: bool) -> None:
        route.key_bad = bad
        metrics.PROVIDER_KEY_REJECTED.labels(route.name).set(1 if bad else 0)
        if bad:
            log.error("provider_key_rejected", extra={"provider": route.name})

    def _failed_over(self, route: Route, exc: ProviderError, reasons: list[str]) -> None:
        reasons.append(f"{route.name} {'skipped' if isinstance(exc, ProviderSkipped) else 'failed'} ({exc.kind})")
        metrics.PROVIDER_FAILOVERS.labels(route.name, exc.kind).inc()
        log.warning("provider_failed_over", extra={"provider": route.name, "kind": exc.kind, "error": str(exc)})

    def _skip(self, route: Route, deadline: float | None) -> ProviderSkipped | None:
        if route.key_bad:
            return ProviderSkipped("key_rejected", f"{route.name}: key rejected")
        left = self._left(deadline)
        if left is not None and left < MIN_ATTEMPT_S:
            return ProviderSkipped("no_time", f"{route.name}: the turn's time is spent")
        if (remote := self.shared_open(route)) is not None:
            return ProviderSkipped("breaker_open", f"{route.name}: circuit breaker open on replica {remote.replica}")
        return None

    def _try(self, route: Route, request: GenerationRequest, deadline: float | None) -> Generation:
        if skip := self._skip(route, deadline):
            raise skip
        s = route.settings
        request, _ = fit(request, s.context_tokens, s.max_tokens)
        try:
            return self._with_retries(route, request, deadline)
        except ProviderContextTooLong:
            metrics.PROVIDER_RETRIES.labels(route.name, "context_too_long").inc()
            return self._with_retries(route, trim_hard(request), deadline)  # once: a second refusal fails over

    def _with_retries(self, route: Route, request: GenerationRequest, deadline: float | None) -> Generation:
        s = route.settings
        jitter = tenacity.wait_random_exponential(multiplier=s.backoff_initial_s, max=s.backoff_max_s)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            asked = decide(exc, s.retry_after_max_s).wait_s if isinstance(exc, ProviderError) else None
            return asked if asked is not None else jitter(state)

        def out_of_time(state: tenacity.RetryCallState) -> bool:
            left = self._left(deadline)
            return left is not None and left - state.upcoming_sleep < MIN_ATTEMPT_S

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            metrics.PROVIDER_RETRIES.labels(route.name, getattr(exc, "kind", "error")).inc()

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(1 + s.retries) | out_of_time,
            wait=wait,
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, ProviderError) and decide(e, s.retry_after_max_s).retry
            ),
            before_sleep=before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._attempt, route, request, deadline)

    def _attempt(self, route: Route, request: GenerationRequest, deadline: float | None) -> Generation:
        """One call, under the breaker and the concurrency limit, cut to the turn's time left."""
        assert route.breaker is not None
        if skip := self._skip(route, deadline):
            raise skip
        permit = route.breaker.acquire()
        if permit is None:
            raise ProviderSkipped("breaker_open", f"{route.name}: circuit breaker open")
        if not route.take_slot():
            route.breaker.release(permit)
            raise ProviderSkipped("busy", f"{route.name}: {route.settings.max_concurrency} calls in flight")
        started = self._clock()
        try:
            out = route.generator.generate(replace(request, timeout_s=self._left(deadline)))
        except ProviderError as exc:
            d = decide(exc, route.settings.retry_after_max_s)
            route.breaker.record(permit, not d.failure, self._clock() - started)
            if d.key_bad:
                self._mark_key(route, True)
            raise
        except BaseException:
            route.breaker.release(permit)
            raise
        finally:
            route.give_slot()
        route.breaker.record(permit, True, self._clock() - started)
        return out


class RoutedStream:
    """The deltas of the first provider that starts answering; iterate once.

    A provider failing before its first delta is failed over; one failing after it raises (the
    ``Generate`` stage then appends the fallback's answer). After iteration ``provider``, ``model``
    and ``degraded_reason`` say who answered and why it was a fallback. Slowness of a stream is its
    time to the first delta.
    """

    def __init__(self, router: ProviderRouter, request: GenerationRequest) -> None:
        self.router = router
        self.request = request
        self.provider: str | None = None
        self.model: str | None = None
        self.degraded_reason: str | None = None

    def __iter__(self) -> Iterator[str]:
        return self._run()

    def _run(self) -> Iterator[str]:
        r = self.router
        deadline = None if self.request.timeout_s is None else r._clock() + self.request.timeout_s
        reasons: list[str] = []
        for route in r.remote:
            try:
                yield from self._one(route, deadline)
                return
            except _FailedBeforeFirstDelta as failed:
                r._failed_over(route, failed.error, reasons)
        last = r.routes[-1]
        self.provider, self.model = last.name, last.settings.model
        if r.remote:
            self.degraded_reason = f"{', '.join(reasons)}; answered by {last.name}"
        yield from r.extractive.stream(self.request)

    def _one(self, route: Route, deadline: float | None) -> Iterator[str]:
        r = self.router
        assert route.breaker is not None
        if skip := r._skip(route, deadline):
            raise _FailedBeforeFirstDelta(skip)
        permit = route.breaker.acquire()
        if permit is None:
            raise _FailedBeforeFirstDelta(ProviderSkipped("breaker_open", f"{route.name}: circuit breaker open"))
        if not route.take_slot():
            route.breaker.release(permit)
            raise _FailedBeforeFirstDelta(ProviderSkipped("busy", f"{route.name}: at max concurrency"))
        s = route.settings
        request, _ = fit(self.request, s.context_tokens, s.max_tokens)
        started = r._clock()
        first_after: float | None = None
        try:
            for delta in route.generator.stream(replace(request, timeout_s=r._left(deadline))):
                if first_after is None:
                    first_after = r._clock() - started
                    route.breaker.answering(permit)  # a long stream after its first delta is not slow
                    self.provider, self.model = route.name, s.model
                yield delta
        except ProviderError as exc:
            d = decide(exc, s.retry_after_max_s)
            route.breaker.record(permit, not d.failure, r._clock() - started)
            if d.key_bad:
                r._mark_key(route, True)
            if first_after is None:
                raise _FailedBeforeFirstDelta(exc) from exc
            raise
        except BaseException:  # the consumer went away (GeneratorExit): says nothing about the provider
            route.breaker.release(permit)
            raise
        finally:
            route.give_slot()
        if self.provider is None:  # an empty answer is still this provider's
            self.provider, self.model = route.name, s.model
        route.breaker.record(permit, True, first_after if first_after is not None else r._clock() - started)


class _FailedBeforeFirstDelta(Exception):
    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error
