"""Intent per turn with the real e5 embedder: the default intents, out of scope, reloads, the vector cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ragvigil.chat.intent import (
    DEFAULT_FILE,
    ExampleIntentClassifier,
    ExampleVectors,
    IntentFileError,
    build_intent_classifier,
    load_file,
)
from ragvigil.config import Settings
from ragvigil.knowledge.embeddings import E5Embedder

CUSTOM = """\
threshold: 0.8
intents:
  - name: shipping
    examples: [where is my parcel, 我的快递到哪了, when will my order arrive, 什么时候发货]
  - name: greeting
    action: small_talk
    replies: {en: Ahoy!, zh: 哈喽！}
    examples: [hello, hi, 你好, 您好]
"""


class Counting:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: E5Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    def embed_query(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        self.calls += 1
        return self.inner.embed_query(text, timeout_s)


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    return E5Embedder()


@pytest.fixture(scope="module")
def default(e5: E5Embedder, tmp_path_factory: pytest.TempPathFactory) -> ExampleIntentClassifier:
    return ExampleIntentClassifier(load_file(DEFAULT_FILE), e5, tmp_path_factory.mktemp("iv") / "v.npz")


@pytest.fixture
def counting(e5: E5Embedder) -> Iterator[Counting]:
    yield Counting(e5)


TURNS = [
    ("你好", "zh", "greeting", "small_talk"),
    ("嗨，请问有人吗", "zh", "greeting", "small_talk"),
    ("hello", "en", "greeting", "small_talk"),
    ("hey, good morning!", "en", "greeting", "small_talk"),
    ("谢谢你的帮助，再见", "zh", "thanks_goodbye", "small_talk"),
    ("thanks so much, bye", "en", "thanks_goodbye", "small_talk"),
    ("你们的客服太差劲了，我要投诉", "zh", "complaint", "handoff"),
    ("I'm extremely unhappy with this awful service", "en", "complaint", "handoff"),
    ("我要转人工客服", "zh", "human_request", "handoff"),
    ("please let me speak to a real person", "en", "human_request", "handoff"),
]


@pytest.mark.parametrize(("text", "lang", "name", "action"), TURNS)
def test_default_intents_classify_turns_in_both_languages(
    default: ExampleIntentClassifier, e5: E5Embedder, text: str, lang: str, name: str, action: str
) -> None:
    intent = default.classify(text, e5.embed_query(text), lang)
    assert (intent.name, intent.action) == (name, action)
    assert 0.5 < intent.confidence <= 1.0


def test_small_talk_gets_a_reply_in_the_turn_language(default: ExampleIntentClassifier, e5: E5Embedder) -> None:
    hello = default.classify("您好", e5.embed_query("您好"), "zh")
    assert default.reply_for(hello, "zh") == default.intents.get("greeting").replies["zh"]
    assert default.reply_for(hello, "en").startswith("Hello!")
    assert default.reply_for("complaint", "zh") is None  # a hand-off, not small talk
    assert default.reply_for("no_such_intent", "en") is None


@pytest.mark.parametrize(
    "text", ["asdkjh qwpoeiru zmxncb", "光合作用的化学方程式是什么", "who painted the Mona Lisa?", "ываыва фывфыв"]
)
def test_out_of_scope_is_other(default: ExampleIntentClassifier, e5: E5Embedder, text: str) -> None:
    assert default.classify(text, e5.embed_query(text), "en").name == "other"


def test_without_a_vector_the_turn_is_other_and_nothing_is_embedded(
    default: ExampleIntentClassifier, counting: Counting
) -> None:
    clf = ExampleIntentClassifier(default.intents, counting, vectors=default.example_vectors)
    before = counting.calls
    intent = clf.classify("转人工", None, "zh")  # the turn found no free engine in its budget
    assert (intent.name, intent.confidence) == ("other", 0.0) and counting.calls == before


def unshipped(embedder: Counting, path: Path) -> ExampleVectors:
    """The data dir's cache alone, without the vectors shipped for the default file."""
    return ExampleVectors(embedder, path, shipped=None)


def test_example_vectors_are_cached_on_disk_across_loads(counting: Counting, tmp_path: Path) -> None:
    path = tmp_path / "cache" / "intent_vectors.npz"
    intents = load_file(DEFAULT_FILE)
    n = len(intents.examples)
    ExampleIntentClassifier(intents, counting, vectors=unshipped(counting, path))
    assert counting.calls == n and path.exists()
    again = ExampleIntentClassifier(intents, counting, vectors=unshipped(counting, path))  # a restart
    assert counting.calls == n and again.example_vectors.embedded == 0
    edited = tmp_path / "edited.yaml"
    edited.write_text(
        DEFAULT_FILE.read_text(encoding="utf-8").replace("      - 多少钱？\n", "      - 多少钱？\n      - 贵不贵？\n")
    )
    ExampleIntentClassifier(load_file(edited), counting, vectors=unshipped(counting, path))
    assert counting.calls == n + 1  # only the new example
    with np.load(path) as z:
        assert len(z["keys"]) == n + 1  # the cache holds the current examples only: bounded by the file


def test_an_unreadable_cache_is_rebuilt(counting: Counting, tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    path.write_bytes(b"not a zip")
    intents = load_file(DEFAULT_FILE)
    clf = ExampleIntentClassifier(intents, counting, vectors=unshipped(counting, path))
    assert clf.example_vectors.embedded == len(intents.examples)
    assert ExampleIntentClassifier(intents, counting, vectors=unshipped(counting, path)).example_vectors.embedded == 0


def test_the_shipped_vectors_cover_the_default_file_and_are_the_models_own(
    counting: Counting, e5: E5Embedder, tmp_path: Path
) -> None:
    intents = load_file(DEFAULT_FILE)
    clf = ExampleIntentClassifier(intents, counting, tmp_path / "fresh" / "intent_vectors.npz")
    assert counting.calls == 0 and clf.example_vectors.embedded == 0  # a first start embeds none of them
    text = intents.examples[0][1]
    shipped = ExampleVectors(counting, None).vectors([text])[0]
    assert float(np.dot(shipped, e5.embed_query(text))) > 0.999  # stale vectors (an edited file) would fail here


def test_a_bad_reload_keeps_the_previous_intents(e5: E5Embedder, tmp_path: Path) -> None:
    path = tmp_path / "intents.yaml"
    path.write_text(CUSTOM)
    clf = ExampleIntentClassifier(load_file(path), e5, tmp_path / "v.npz")
    q = "我的包裹什么时候能到"
    assert clf.classify(q, e5.embed_query(q), "zh").name == "shipping"
    path.write_text("intents:\n  - name: broken\n    examples: []\n  - examples: [x]\n")
    with pytest.raises(IntentFileError) as err:
        clf.reload(path)
    assert len(err.value.problems) == 2
    assert [i.name for i in clf.intents.intents] == ["shipping", "greeting"]
    assert clf.classify(q, e5.embed_query(q), "zh").name == "shipping"
    clf.reload(DEFAULT_FILE)  # a good file does replace them
    assert clf.classify(q, e5.embed_query(q), "zh").name != "shipping"
    assert clf.intents.get("shipping") is None


def test_the_intents_file_setting_picks_a_custom_file(
    monkeypatch: pytest.MonkeyPatch, e5: E5Embedder, tmp_path: Path
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(CUSTOM)
    monkeypatch.setenv("RAGVIGIL_INTENTS_FILE", str(path))
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]
    clf = build_intent_classifier(settings, e5)
    assert clf.intents.source == str(path)
    hello = clf.classify("hi there", e5.embed_query("hi there"), "en")
    assert hello.name == "greeting" and clf.reply_for(hello, "en") == "Ahoy!"
    assert (tmp_path / "data" / "cache" / "intent_vectors.npz").exists()
    monkeypatch.delenv("RAGVIGIL_INTENTS_FILE")
    dflt = build_intent_classifier(Settings(_env_file=None, data_dir=tmp_path / "d2"), e5)  # type: ignore[call-arg]
    assert dflt.intents.source == str(DEFAULT_FILE)
