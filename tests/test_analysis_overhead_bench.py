"""The analysis-overhead bench measures the checkers a served turn really has: built by the runtime's
own ``build_understanding``, all three of them, on the runtime's query embedder."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ragvigil.app import Runtime
from ragvigil.chat.emotion.offline import OfflineEmotionAnalyzer
from ragvigil.chat.intent.classifier import ExampleIntentClassifier
from ragvigil.chat.safety import SafetyChecker
from tests.conftest import make_settings

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench_module():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("analysis_overhead", BENCH / "analysis_overhead.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_the_bench_builds_every_real_checker_as_the_runtime_does(tmp_path: Path) -> None:
    bench = _bench_module()
    settings = make_settings(tmp_path / "data")
    rt = Runtime(settings)
    try:
        found, skipped = bench.real_checkers(settings, rt)
        assert skipped == []
        assert isinstance(found["safety"], SafetyChecker)
        assert isinstance(found["emotion"], OfflineEmotionAnalyzer)
        assert isinstance(found["intent"], ExampleIntentClassifier)
        # the same kinds of checker the runtime serves turns with
        assert {k: type(v) for k, v in found.items()} == {
            "safety": type(rt.understanding.safety),
            "emotion": type(rt.emotion),
            "intent": type(rt.intents),
        }
    finally:
        rt.close()
