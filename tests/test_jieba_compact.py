"""jieba's dictionary in compact form segments exactly as jieba's own dict, and its files are rebuilt when stale."""

from __future__ import annotations

import json
from pathlib import Path

import jieba
import pytest

from ragvigil.knowledge import jieba_dict
from ragvigil.knowledge.jieba_dict import FREQ_FILE, TRIE_FILE, CompactFreq, load_compact

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "samples" / "helpcentre").rglob("*.md"))


@pytest.fixture(scope="module")
def reference() -> jieba.Tokenizer:
    """A jieba tokenizer with its own dict of strings, built from the same dictionary file."""
    ref = jieba.Tokenizer()
    ref.FREQ, ref.total = ref.gen_pfdict(ref.get_dict_file())
    ref.initialized = True
    return ref


@pytest.fixture(scope="module")
def compact(reference: jieba.Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> jieba.Tokenizer:
    seg = jieba.Tokenizer()
    seg.FREQ, seg.total = load_compact(seg, tmp_path_factory.mktemp("jieba"))
    seg.initialized = True
    return seg


def test_lookups_answer_as_the_dict_does(reference: jieba.Tokenizer, compact: jieba.Tokenizer) -> None:
    assert isinstance(compact.FREQ, CompactFreq) and compact.total == reference.total
    assert len(compact.FREQ) == len(reference.FREQ)
    for key in ("退款", "退", "申请", "中华人民共和国", "退款申", "zzz", "", "𠀀"):  # word, prefix-only, absent
        assert (key in compact.FREQ) == (key in reference.FREQ), key
        assert compact.FREQ.get(key) == reference.FREQ.get(key), key
        assert compact.FREQ.get(key, "none") == reference.FREQ.get(key, "none"), key
        if key in reference.FREQ:
            assert compact.FREQ[key] == reference.FREQ[key], key
        else:
            with pytest.raises(KeyError):
                compact.FREQ[key]
    assert reference.FREQ["退款"] > 0 and reference.FREQ.get("中华人民共") == 0  # both kinds were tried


def test_segmentation_is_the_same_on_the_sample_help_centre(
    reference: jieba.Tokenizer, compact: jieba.Tokenizer
) -> None:
    lines = [line for p in SAMPLES for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) > 100
    for line in lines:
        assert compact.lcut_for_search(line) == reference.lcut_for_search(line), line
        assert compact.lcut(line, HMM=True) == reference.lcut(line, HMM=True), line


def test_kept_files_are_read_back_and_a_stale_or_torn_pair_is_rebuilt(tmp_path: Path) -> None:
    seg = jieba.Tokenizer()
    first, total = load_compact(seg, tmp_path)
    trie_mtime = (tmp_path / TRIE_FILE).stat().st_mtime_ns
    again, total_again = load_compact(seg, tmp_path)  # read, not rebuilt
    assert (tmp_path / TRIE_FILE).stat().st_mtime_ns == trie_mtime
    assert total_again == total and len(again) == len(first) and again.get("退款") == first.get("退款")

    raw = (tmp_path / FREQ_FILE).read_bytes()
    header, _, counts = raw.partition(b"\n")
    stale = json.loads(header) | {"fingerprint": "another dictionary"}
    (tmp_path / FREQ_FILE).write_bytes(json.dumps(stale).encode() + b"\n" + counts)
    assert jieba_dict._read(tmp_path, jieba_dict._fingerprint(seg)) is None
    (tmp_path / FREQ_FILE).write_bytes(header + b"\n" + counts[:-4])  # one count short: a torn pair
    assert jieba_dict._read(tmp_path, jieba_dict._fingerprint(seg)) is None
    rebuilt, _ = load_compact(seg, tmp_path)
    assert rebuilt.get("退款") == first.get("退款")
    assert jieba_dict._read(tmp_path, jieba_dict._fingerprint(seg)) is not None


def test_an_unwritable_directory_only_costs_a_rebuild(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    freq, total = load_compact(jieba.Tokenizer(), blocker / "cache")
    assert freq.get("退款") and total > 0
