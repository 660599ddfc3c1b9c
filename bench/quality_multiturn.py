"""Multi-turn quality: follow-ups on the sample help centre answered from the document they are about.

The conversations are ``bench/data/multiturn_helpcentre.yaml`` (written for this benchmark). The
sample help centre is ingested into a temporary data dir with every vector filled, and each
conversation goes through ``POST /api/v1/chat`` in process (the embedded default: no LLM, the
extractive generator answers) keeping its session id, so a turn sees the session's real history.

Reported, for the service as it is and with the ``contextual_search`` feature shed (each question
searched alone, what the service does under load):

* follow-up turns whose first source is the expected document (target ≥ 0.90);
* new-topic turns not contaminated by the old topic: first source the expected document, or the
  no-answer where the knowledge base has nothing (target ≥ 0.90);
* answers holding the turn's ``expect_text`` (no target: the generator's share of the work).

Run: ``python bench/quality_multiturn.py``; ``run(data_dir)`` is imported by ``bench/answer_quality.py``
(``data_dir`` is the shared datasets folder; nothing of it is read here).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from _common import REPO_ROOT, Report, Row, console, temp_data_dir
from ragvigil.api.server import create_app
from ragvigil.app import Runtime, sample_kb_path
from ragvigil.config import Settings
from ragvigil.knowledge.loaders import discover
from ragvigil.providers.extractive import NO_ANSWER

SECTION = "multi-turn"
CONVERSATIONS = REPO_ROOT / "bench" / "data" / "multiturn_helpcentre.yaml"
TARGET = 0.90
MAX_CONVERSATIONS = 200  # the file is ours, but every input has a bound
MAX_TURNS = 8
UNLIMITED = {"per_key": None, "per_user": None}  # one caller asks every turn, twice: no rate limit
NONE = "none"  # expect_source of a turn the knowledge base cannot answer


@dataclass
class TurnCase:
    ask: str
    expect_source: str
    expect_text: str | None = None
    new_topic: bool = False
    first: bool = False


@dataclass
class Outcome:
    """What one mode got right, per kind of turn."""

    followup: list[bool] = field(default_factory=list)
    new_topic: list[bool] = field(default_factory=list)
    first: list[bool] = field(default_factory=list)
    text: list[bool] = field(default_factory=list)
    answered: list[bool] = field(default_factory=list)  # follow-ups with an expected phrase: source and phrase right
    misses: list[str] = field(default_factory=list)


def load_conversations(path: Path = CONVERSATIONS) -> list[tuple[str, list[TurnCase]]]:
    """The conversations of ``path``: (id, turns), each turn checked for the fields the bench reads."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    out: list[tuple[str, list[TurnCase]]] = []
    for conv in data["conversations"][:MAX_CONVERSATIONS]:
        turns = []
        for i, t in enumerate(conv["turns"][:MAX_TURNS]):
            if not t.get("ask") or not t.get("expect_source"):
                raise ValueError(f"{conv['id']} turn {i + 1}: ask and expect_source are required")
            turns.append(
                TurnCase(t["ask"], t["expect_source"], t.get("expect_text"), bool(t.get("new_topic")), first=i == 0)
            )
        out.append((conv["id"], turns))
    return out


def _first_source(body: dict[str, Any]) -> str:
    """The file name of the answer's first source, or ``none`` for the no-answer."""
    if body.get("answer", "").strip() in NO_ANSWER.values() or not body.get("sources"):
        return NONE
    return Path(body["sources"][0]["source"]).name


def ask_all(client: TestClient, conversations: list[tuple[str, list[TurnCase]]]) -> Outcome:
    """Every conversation through the chat API, one session each; what was right per turn."""
    got = Outcome()
    for conv_id, turns in conversations:
        session: str | None = None
        for n, case in enumerate(turns, 1):
            body: dict[str, Any] = {"message": case.ask, "kb": "default"}
            if session:
                body["session_id"] = session
            resp = client.post("/api/v1/chat", json=body)
            resp.raise_for_status()
            answer = resp.json()
            session = answer["session_id"]
            first = _first_source(answer)
            right = first == case.expect_source
            kind = got.first if case.first else got.new_topic if case.new_topic else got.followup
            kind.append(right)
            if case.expect_text:
                got.text.append(case.expect_text in answer["answer"])
                if not case.first and not case.new_topic:
                    got.answered.append(right and got.text[-1])
                if not got.text[-1]:
                    got.misses.append(f"{conv_id}#{n} {case.ask!r}: answer lacks {case.expect_text!r}")
            if not right:
                got.misses.append(f"{conv_id}#{n} {case.ask!r}: {first} (expected {case.expect_source})")
    return got


def _share(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def run(data_dir: Path | None = None, keep: bool = False) -> list[Row]:
    """The rows of this benchmark (``data_dir`` unused: the conversations and the KB are the project's own)."""
    with temp_data_dir("multiturn", keep=keep) as d:
        rt = Runtime(Settings(_env_file=None, data_dir=d, admission=UNLIMITED))  # type: ignore[call-arg]
        try:
            for f in discover([sample_kb_path()]):
                rt.ingestor.ingest_bytes("default", f"helpcentre/{f.name}", f.read_bytes())
            t = time.perf_counter()
            rt.filler.drain()
            console.print(f"[dim]sample help centre embedded in {time.perf_counter() - t:.0f} s[/dim]")
            return measure(rt)
        finally:
            rt.close()


def measure(rt: Runtime) -> list[Row]:
    """Every conversation with the follow-up search on, then shed, on a runtime holding the sample KB."""
    conversations = load_conversations()
    with TestClient(create_app(runtime=rt), client=("127.0.0.1", 50000)) as client:
        new = ask_all(client, conversations)
        rt.features.shed("contextual_search", "benchmark: each question alone", by="bench")
        try:
            alone = ask_all(client, conversations)
        finally:
            rt.features.restore("contextual_search", by="bench")
    return rows(new, alone, len(conversations))


def rows(new: Outcome, alone: Outcome, conversations: int) -> list[Row]:
    base = "contextual search off"
    out = [
        Row(
            SECTION,
            f"follow-up turns: first source on topic (n={len(new.followup)})",
            _share(new.followup),
            target=f"≥ {TARGET:.2f}",
            passed=(_share(new.followup) or 0) >= TARGET,
            baseline_name=base,
            baseline=_share(alone.followup),
            digits=3,
            note=f"{conversations} conversations, zh + en",
        ),
        Row(
            SECTION,
            f"new-topic turns not contaminated (n={len(new.new_topic)})",
            _share(new.new_topic),
            target=f"≥ {TARGET:.2f}",
            passed=(_share(new.new_topic) or 0) >= TARGET,
            baseline_name=base,
            baseline=_share(alone.new_topic),
            digits=3,
            note="first source expected, or the no-answer off the KB",
        ),
        Row(
            SECTION,
            f"follow-up turns answered: source and expected phrase (n={len(new.answered)})",
            _share(new.answered),
            baseline_name=base,
            baseline=_share(alone.answered),
            digits=3,
            note="the phrase depends on the extractive generator too",
        ),
        Row(
            SECTION,
            f"first turns: first source right (n={len(new.first)})",
            _share(new.first),
            baseline_name=base,
            baseline=_share(alone.first),
            digits=3,
        ),
        Row(
            SECTION,
            f"answers holding the expected phrase (n={len(new.text)})",
            _share(new.text),
            baseline_name=base,
            baseline=_share(alone.text),
            digits=3,
            note="the extractive generator's part",
        ),
    ]
    out[0].extra = {"misses": len(new.misses)}
    for miss in new.misses:
        console.print(f"[dim]miss: {miss}[/dim]")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "datasets")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()
    started = time.perf_counter()
    report = Report("multi-turn follow-ups on the sample help centre (through /api/v1/chat)")
    for row in run(args.data, keep=args.keep):
        report.add(row)
    report.finish(started, args.json)


if __name__ == "__main__":
    main()
