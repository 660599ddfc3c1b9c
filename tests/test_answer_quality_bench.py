"""The answer-quality bench's own measures: span containment after width and whitespace normalisation,
the answer length without citations, the passage-vector cache; and the chat load bench's server is not
rate-limited by its own load while admission's concurrency gate stays on."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from ragvigil.config import AdmissionSettings, Settings

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench_module(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[f"bench_{name}"] = mod  # dataclasses look their module up there
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def aq() -> ModuleType:
    return _bench_module("answer_quality")


def test_citations_and_the_lead_are_stripped_before_the_length_is_counted(aq: ModuleType) -> None:
    assert aq.strip_citations("根据知识库：阿马里洛因铁路而得名。 [1]") == "阿马里洛因铁路而得名。"
    assert aq.strip_citations("根据知识库：第一句。 [1]第二句。 [2]") == "第一句。第二句。"
    assert aq.strip_citations("From the knowledge base: Export from Settings. [1] Then pick PDF. [3]") == (
        "Export from Settings. Then pick PDF."
    )
    # only the generator's lead at the start, and only digits in square brackets, are citations
    assert aq.strip_citations("见[注]：根据知识库：x [12]") == "见[注]：根据知识库：x"
    assert len(aq.strip_citations("根据知识库：踢爆。 [1]")) == 3


def test_a_span_is_found_across_full_width_and_whitespace_differences(aq: ModuleType) -> None:
    # full-width digits and letters in the answer, half-width in the gold span (and the other way round)
    assert aq.contains_span("根据知识库：成立于１９９８年，总部在ＮＹ。 [1]", ["1998年"])
    assert aq.contains_span("根据知识库：成立于1998年。 [1]", ["１９９８年"])
    # whitespace inside the answer or the span does not matter
    assert aq.contains_span("From the knowledge base: New   York\ncity [1]", ["New York city"])
    assert aq.contains_span("根据知识库：《大小姐×执事！》 [1]", [" 大小姐×执事！ "])
    # any one of the gold spans is enough; none of them is a miss
    assert aq.contains_span("根据知识库：踢爆 [1]", ["被踢爆", "踢爆"])
    assert not aq.contains_span("根据知识库：阿马里洛（Amarillo），美国德克萨斯州的一个城市。 [1]", ["铁路", "黄色"])
    # a span split by a citation marker still counts: the marker is not part of what the reader reads
    assert aq.contains_span("根据知识库：他生于北京 [1]，长于上海。 [2]", ["北京，长于上海"])
    # an empty gold span never counts as contained
    assert not aq.contains_span("根据知识库：任何回答 [1]", ["", "  "])


def test_the_cmrc_spans_line_up_with_the_shared_loader(aq: ModuleType, tmp_path: Path) -> None:
    import json

    data = {
        "data": [
            {
                "paragraphs": [
                    {"context": "甲。", "qas": [{"question": "q1", "answers": [{"text": "甲", "answer_start": 0}]}]},
                    {
                        "context": "乙。",
                        "qas": [
                            {"question": "q2", "answers": [{"text": "乙", "answer_start": 0}]},
                            {"question": "q3", "answers": [{"text": "乙。", "answer_start": 0}, {"text": "乙"}]},
                        ],
                    },
                ]
            }
        ]
    }
    path = tmp_path / "cmrc.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    ds = aq.load_cmrc(path, None)
    spans = aq.cmrc_spans(path, None)
    assert [q for q, _ in spans] == [q for q, _ in ds.queries] == ["q1", "q2", "q3"]
    assert spans[2][1] == ["乙。", "乙"]
    assert [q for q, _ in aq.cmrc_spans(path, 1)] == [q for q, _ in aq.load_cmrc(path, 1).queries] == ["q1"]


class _CountingEmbedder:
    name = "test-embedder"
    dim = 3

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return np.asarray([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        return np.asarray([0.0, 0.0, 1.0], dtype=np.float32)


def test_passage_vectors_are_embedded_once_and_then_read_from_the_cache(aq: ModuleType, tmp_path: Path) -> None:
    inner = _CountingEmbedder()
    cache = aq.CachedPassageEmbedder(inner, tmp_path / "cache.sqlite")
    first = cache.embed_passages(["ab", "abc"])
    cache.close()
    again = aq.CachedPassageEmbedder(inner, tmp_path / "cache.sqlite")  # a second run, a new process
    second = again.embed_passages(["abc", "ab", "abcd"])
    assert inner.embedded == ["ab", "abc", "abcd"]  # only the new text was embedded the second time
    assert np.array_equal(second[:2], first[::-1])
    assert (again.hits, again.misses) == (2, 1)
    # the query side is the inner embedder's own, never served from the passage cache
    assert np.array_equal(again.embed_query("ab"), [0.0, 0.0, 1.0])
    again.close()


def test_the_chat_bench_server_has_no_rate_limit_but_keeps_the_concurrency_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = _bench_module("chat")
    env = chat.server_env(tmp_path, tmp_path / "data", 1)
    for key in [k for k in os.environ if k.startswith("RAGVIGIL_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("RAGVIGIL_"):
            monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.admission.per_key is None and settings.admission.per_user is None
    defaults = AdmissionSettings()
    assert defaults.per_key is not None  # production has a per-key limit: the bench turns it off
    assert settings.admission.enabled
    assert settings.admission.max_limit == defaults.max_limit
    assert settings.admission.queue_size == defaults.queue_size
    assert settings.data_dir == tmp_path / "data"


def test_rows_of_the_other_quality_benches_are_appended_when_they_exist(
    aq: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "quality_multiturn.py").write_text(
        "from __future__ import annotations\n\nfrom dataclasses import dataclass\n\nfrom _common import Row\n\n\n@dataclass\nclass Turn:\n    ask: str = ''\n\n\n"
        "def run(data_dir):\n"
        "    return [Row('multi-turn', 'follow-ups on topic', 0.5, note=str(data_dir))]\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(aq, "BENCH", tmp_path)
    report = aq.Report("t")
    aq.optional_rows(report, tmp_path / "data")
    assert [(r.section, r.name, r.value, r.note) for r in report.rows] == [
        ("multi-turn", "follow-ups on topic", 0.5, str(tmp_path / "data"))
    ]
    assert "quality_crosslingual.py not found: its rows are skipped" in report.notes


def test_a_small_run_asks_every_question_through_chat_and_reports_each_measure(
    aq: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    data = tmp_path / "datasets"
    (data / "retrieval").mkdir(parents=True)
    cmrc = [
        (
            "阿马里洛是美国德克萨斯州西北部的一个城市。这座城市因附近湖泊的黄色而得名。",
            "阿马里洛是根据什么来改名的？",
            "黄色",
        ),
        ("尤金袋鼠是袋鼠科中细小的成员。成年的尤金袋鼠约只有8公斤重。", "尤金袋鼠的体重大约是多少？", "8公斤"),
        (
            "《大小姐×执事！》是一部日本轻小说。作者是竹井10日，插画由葵季结衣担任。",
            "大小姐×执事的作者是谁？",
            "竹井10日",
        ),
    ]
    squad = {
        "data": [
            {
                "paragraphs": [
                    {"context": c, "qas": [{"question": q, "answers": [{"text": a, "answer_start": c.find(a)}]}]}
                    for c, q, a in cmrc
                ]
                # the trial set holds blank questions: the API refuses them (422), the bench does not ask them
                + [{"context": "空白问题的段落。", "qas": [{"question": "", "answers": [{"text": "空白"}]}]}]
            }
        ]
    }
    (data / "retrieval" / "cmrc2018_trial.json").write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    faq = {
        "root": {
            "qapair": [
                {
                    "question": "How do I export my notes to PDF?",
                    "answer": ["Open the note, choose File, then Export as PDF."],
                    "rephr": ["export a note as pdf", "*"],
                },
                {
                    "question": "Why does my laptop battery drain so fast?",
                    "answer": ["Lower the screen brightness and close background apps to save battery."],
                    "rephr": ["battery drains quickly on my laptop"],
                },
            ]
        }
    }
    (data / "retrieval" / "stackfaq_en.json").write_text(json.dumps(faq), encoding="utf-8")
    monkeypatch.setenv("RAGVIGIL_BENCH_CACHE", str(tmp_path / "cache.sqlite"))
    out = tmp_path / "report.json"
    assert aq.main(["--data", str(data), "--no-optional", "--show-misses", "3", "--json", str(out)]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    rows = {(r["section"], r["name"]): r for r in written["rows"]}
    assert "cmrc2018: 1 blank questions in the data are not asked" in written["notes"]
    assert not any("failed requests" in n for n in written["notes"])
    contained = rows[("cmrc2018 (zh)", "answer contains a gold span")]
    assert contained["note"].startswith(f"{round(3 * contained['value'])} of 3;")
    assert rows[("cmrc2018 (zh)", "passage recall@1 (first source)")]["value"] == 1.0
    assert rows[("cmrc2018 (zh)", "passage recall@1 (first source)")]["note"].startswith("3 of 3;")
    assert rows[("cmrc2018 (zh)", "… gold passage first")]["note"] == "3 questions"
    length = rows[("cmrc2018 (zh)", "median answer length without citations")]
    assert 0 < length["value"] <= max(len(c) for c, _, _ in cmrc)  # no lead, no markers: at most one passage
    assert rows[("stackfaq (en)", "answer drawn from the gold thread (first source)")]["value"] == 1.0
    assert (tmp_path / "cache.sqlite").exists()
    misses = json.loads(out.with_suffix(".misses.json").read_text(encoding="utf-8"))
    assert len(misses) == round(3 * (1 - contained["value"]))


def test_the_bench_leaves_logging_as_it_found_it(aq: ModuleType) -> None:
    """It silences warnings while it runs; run inside a test process, the tests after it must still see logs."""
    import logging

    with pytest.raises(SystemExit):
        aq.main(["--sets", "nope"])
    assert logging.root.manager.disable == logging.NOTSET
