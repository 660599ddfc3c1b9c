"""Importing a library that would pull in setuptools' ``pkg_resources`` only to find its own data file.

jieba and zhconv both try ``import pkg_resources`` for ``resource_stream`` and, when it is missing,
open the same file next to their own module: the same bytes. Importing ``pkg_resources`` scans every
installed distribution (11 MB of RSS imported alone, ~5 MB in a server that loads the rest anyway;
~0.2 s; a deprecation warning), so these two are imported with it hidden. A process that imported
``pkg_resources`` already has paid for it, and then nothing is hidden.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

__all__ = ["import_without_pkg_resources"]

_LOCK = threading.Lock()


def import_without_pkg_resources(name: str) -> ModuleType:
    """``import name`` with ``import pkg_resources`` failing meanwhile (a ``None`` entry in ``sys.modules``)."""
    with _LOCK:
        if name in sys.modules or "pkg_resources" in sys.modules:
            return importlib.import_module(name)
        sys.modules["pkg_resources"] = None  # type: ignore[assignment]  # `import pkg_resources` → ImportError
        try:
            return importlib.import_module(name)
        finally:
            if sys.modules.get("pkg_resources", 0) is None:
                del sys.modules["pkg_resources"]
