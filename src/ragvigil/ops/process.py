"""What one runtime sets for the whole process, made explicit, and undone when it closes.

Why process-wide at all: the instrumentation switch, the span-contents switch, the OTLP exporters,
the host collector's data dir and the health collector's checks are read where no runtime is at
hand (middleware, span builders, a Prometheus scrape of the one ``metrics.REGISTRY``). So only one
runtime's choices can be in force at a time. ``install_process_globals`` applies a runtime's and
remembers what they replaced; ``ProcessGlobals.undo`` puts that back. Installs form a stack: undoing
one that is not the newest only hands what it replaced to the install above it, so two runtimes in
one process (tests, a CLI command next to a server) never leave each other's settings behind, in
whatever order they close.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ragvigil.config import Settings
from ragvigil.ops import instrumentation, metrics, semconv, tracing
from ragvigil.ops.health import HEALTH_COLLECTOR, HealthChecks
from ragvigil.ops.system import register_system_collectors


@dataclass(frozen=True)
class _Values:
    instrumentation: bool
    capture_contents: bool
    health: HealthChecks | None
    data_dir: Path
    otlp: frozenset[str]


def _current() -> _Values:
    host = register_system_collectors(metrics.REGISTRY, Path("."))  # already registered by the install
    return _Values(
        instrumentation.enabled,
        semconv.contents_captured(),
        HEALTH_COLLECTOR.checks,
        host.data_dir,
        tracing.otlp_endpoints(),
    )


def _apply(v: _Values) -> None:
    instrumentation.configure(v.instrumentation)
    semconv.capture_contents(v.capture_contents)  # conversation text on spans only when kept
    HEALTH_COLLECTOR.checks = v.health  # health as metrics, for the alert rules and Prometheus
    register_system_collectors(metrics.REGISTRY, v.data_dir).data_dir = v.data_dir
    for endpoint in v.otlp - tracing.otlp_endpoints():
        tracing.enable_otlp(endpoint)
    for endpoint in tracing.otlp_endpoints() - v.otlp:
        tracing.disable_otlp(endpoint)


_lock = threading.Lock()
_stack: list[ProcessGlobals] = []


class ProcessGlobals:
    """One runtime's process-wide settings while in force; ``undo`` (idempotent) takes them back."""

    def __init__(self, previous: _Values) -> None:
        self._previous = previous

    @property
    def active(self) -> bool:
        return self in _stack

    def undo(self) -> None:
        with _lock:
            if self not in _stack:
                return
            i = _stack.index(self)
            if i == len(_stack) - 1:
                _apply(self._previous)
            else:  # newer installs stay in force; the next one restores what this one replaced
                _stack[i + 1]._previous = self._previous
            _stack.pop(i)


def install_process_globals(settings: Settings, health: HealthChecks) -> ProcessGlobals:
    """Put ``settings``' process-wide choices and ``health`` in force; undo with the handle's ``undo``."""
    with _lock:
        register_system_collectors(metrics.REGISTRY, settings.data_dir)  # once per process, with this data dir
        previous = _current()
        otlp = previous.otlp | ({settings.otlp_endpoint.get_secret_value()} if settings.otlp_endpoint else set())
        _apply(_Values(settings.instrumentation, settings.log_message_contents, health, settings.data_dir, otlp))
        handle = ProcessGlobals(previous)
        _stack.append(handle)
        return handle
