"""A narrow hook where a fault can be injected into a dependency at call time.

Why: drills and tests need the vector store and the embedder to fail for real, inside the
process, without patching code. A component owns one ``FaultPoint`` and calls ``check(op)``
before each operation; while a hook is set, a hook that returns a message makes that
operation fail with the component's own error type (so callers see exactly what a real
outage raises). With no hook set the check costs one attribute read.
"""

from __future__ import annotations

from collections.abc import Callable

FaultHook = Callable[[str], "str | None"]  # op name -> why it fails now, or None to let it pass


class FaultPoint:
    """One injectable hook; ``hook`` is set and cleared by the fault-injection owner."""

    __slots__ = ("hook",)

    def __init__(self) -> None:
        self.hook: FaultHook | None = None

    def failure(self, op: str) -> str | None:
        """Why ``op`` must fail now (an injected fault), or None."""
        hook = self.hook
        return None if hook is None else hook(op)
