"""What understanding a turn costs: the analysis beyond the shared query embedding, and embeddings per turn.

Runs real chat turns (the sample help centre, extractive answers) through the pipeline of a real
runtime, three ways: without any checker (the turn as before), with the test stand-ins (rule-based
safety, keyword intents, a fixed-vector emotion), and with the real checkers built exactly as the
runtime builds them (``chat.build.build_understanding(settings, embedder)``: the shipped safety lexicon
and probes, the offline emotion analyzer, the default intents over their e5 examples). The messages are public labelled texts (BANKING77 and
ChnSentiCorp, ``--data``), each asked once, so every first embedding is a real one. Counted per turn:
the calls that reached the e5 engine (must be 1: retrieval reuses the understanding's vector).

    python bench/analysis_overhead.py [--turns 120] [--data ../shared/datasets] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _datasets
from _common import Report, Row, machine_line, percentiles_ms, temp_data_dir
from ragvigil.app import Runtime, sample_kb_path
from ragvigil.chat.build import build_understanding
from ragvigil.chat.pipeline import Turn
from ragvigil.config import Settings
from ragvigil.knowledge.loaders import discover

TARGET_P50_MS = 5.0
REAL_PARTS = ("safety", "emotion", "intent")


class Counting:
    """Counts the query embeddings that reach the engine (past the shared cache)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0
        self.dim, self.name = inner.dim, inner.name

    def embed_query(self, text: str, timeout_s: float | None = None) -> Any:
        self.calls += 1
        return self.inner.embed_query(text, timeout_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def real_checkers(settings: Settings, rt: Runtime) -> tuple[dict[str, Any], list[str]]:
    """The real checkers, built exactly as the runtime builds them (``build_understanding``), and what is off.

    Built on the runtime's own query embedder, so the intent examples' vectors and every turn's
    embedding go through the same shared cache a served turn uses.
    """
    u = build_understanding(settings, rt.embedder, rt.generator)
    found = {k: v for k, v in (("safety", u.safety), ("emotion", u.emotion), ("intent", u.intent)) if v is not None}
    skipped = [f"{part}: not configured in these settings" for part in REAL_PARTS if part not in found]
    return found, skipped


def run_turns(rt: Runtime, messages: list[str]) -> dict[str, list[float]]:
    """Each message one turn; per turn the analysis' cost, the turn's latency and the engine's embeddings."""
    counting = Counting(rt.embedder.inner)
    rt.embedder.inner = counting
    rt.embedder.clear()
    out: dict[str, list[float]] = {"analysis": [], "turn": [], "embeddings": []}
    try:
        for text in messages:
            before = counting.calls
            turn = Turn(message=text, kb="default")
            start = time.perf_counter()
            rt.pipeline.run(turn)
            out["turn"].append(time.perf_counter() - start)
            out["embeddings"].append(counting.calls - before)
            if turn.analysis is not None:
                out["analysis"].append(sum(turn.analysis.ms.values()) / 1000)
                for part, ms in turn.analysis.ms.items():
                    out.setdefault(f"part:{part}", []).append(ms / 1000)
    finally:
        rt.embedder.inner = counting.inner
    return out


def configure(rt: Runtime, checkers: dict[str, Any]) -> None:
    rt.safety, rt.emotion, rt.intents = checkers.get("safety"), checkers.get("emotion"), checkers.get("intent")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=120, help="turns per configuration (half en, half zh)")
    ap.add_argument("--data", type=Path, default=_datasets.DEFAULT_DATA)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    half = max(1, args.turns // 2)
    en = [e.text for e in _datasets.banking77(args.data)]
    zh = [e.text[:200] for e in _datasets.chnsenticorp(args.data)]

    def batch(i: int) -> list[str]:  # distinct messages for every configuration: no warm cache between them
        return en[i * half : (i + 1) * half] + zh[i * half : (i + 1) * half]

    from tests.understand_standins import KeywordIntents, RuleSafety, VectorEmotion

    report = Report(f"Analysis overhead per turn ({machine_line()})")
    with temp_data_dir("analysis-overhead") as d:
        settings = Settings(_env_file=None, data_dir=d, background_embedding=False)  # type: ignore[call-arg]
        rt = Runtime(settings)
        try:
            for f in discover([sample_kb_path()]):
                rt.ingestor.ingest_bytes("default", f"helpcentre/{f.name}", f.read_bytes())
            # no vectors filled: what a turn costs beside its embedding does not depend on the index's contents
            run_turns(rt, batch(9)[:4])  # warm-up: engines loaded, jieba dictionary read
            real, skipped = real_checkers(settings, rt)
            configs: list[tuple[str, dict[str, Any]]] = [
                ("none (as before)", {}),
                ("stand-ins", {"safety": RuleSafety(), "emotion": VectorEmotion(), "intent": KeywordIntents()}),
            ]
            if real:
                configs.append((f"real ({', '.join(sorted(real))})", real))
            baseline: dict[str, float] | None = None
            for i, (name, checkers) in enumerate(configs):
                configure(rt, checkers)
                got = run_turns(rt, batch(i))
                turn = percentiles_ms(got["turn"])
                embeds = got["embeddings"]
                one = all(n == 1 for n in embeds)
                report.add(
                    Row(
                        name,
                        "embeddings per turn",
                        max(embeds),
                        "",
                        target="1",
                        passed=one,
                        digits=0,
                        note=f"min {min(embeds)}, max {max(embeds)} over {len(embeds)} turns",
                    )
                )
                if got["analysis"]:
                    a = percentiles_ms(got["analysis"])
                    report.add(
                        Row(
                            name,
                            "analysis p50",
                            a["p50"],
                            "ms",
                            target=f"≤ {TARGET_P50_MS:g} ms",
                            digits=3,
                            passed=a["p50"] <= TARGET_P50_MS,
                        )
                    )
                    report.add(Row(name, "analysis p95", a["p95"], "ms", digits=3))
                    for key in sorted(k for k in got if k.startswith("part:")):
                        p = percentiles_ms(got[key])
                        report.add(
                            Row(name, f"{key[5:]} p50 / p95", p["p50"], "ms", digits=3, note=f"p95 {p['p95']:.3f} ms")
                        )
                for q in ("p50", "p95"):
                    report.add(
                        Row(
                            name,
                            f"turn {q}",
                            turn[q],
                            "ms",
                            baseline=baseline[q] if baseline else None,
                            baseline_name="no analysis" if baseline else "",
                            digits=1,
                        )
                    )
                baseline = baseline or turn
            for reason in skipped:
                report.note(f"real checker skipped: {reason}")
            report.note("analysis = safety + emotion + intent as timed in TurnAnalysis.ms (the embedding excluded)")
        finally:
            rt.close()
    return report.finish(started, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
