"""jieba's dictionary is loaded once per process, however many runtimes (and tokenizers) it builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ragvigil.knowledge.tokenize import Tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_tokenizer_reuses_the_loaded_dictionary(tmp_path: Path) -> None:
    first, second = Tokenizer(tmp_path / "a"), Tokenizer(tmp_path / "b")
    words = first.tokens("如何导出我的笔记 export notes")
    assert second.tokens("如何导出我的笔记 export notes") == words
    assert "导出" in words and "export" in words
    assert second._jieba.FREQ is first._jieba.FREQ  # the same dictionary object: not loaded again
    assert not (tmp_path / "b" / "jieba.marisa").exists()  # nor read from (or written to) its own cache


def test_the_first_tokenizer_of_a_process_keeps_its_cache_file_in_the_data_dir(tmp_path: Path) -> None:
    code = (
        "import pathlib, sys; from ragvigil.knowledge.tokenize import Tokenizer; "
        "print(Tokenizer(pathlib.Path(sys.argv[1])).tokens('退款政策'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT / "src")},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "退款" in done.stdout
    assert (tmp_path / "jieba.marisa").is_file() and (tmp_path / "jieba.freq").is_file()
