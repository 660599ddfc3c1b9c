"""Sentence splitting: titles, quotes, brackets, decimals, abbreviations, URLs and ellipses stay whole."""

from __future__ import annotations

import pytest

from ragvigil.knowledge.chunking import split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("《大小姐×执事！》是一部漫画。作者是南鸟。", ["《大小姐×执事！》是一部漫画。", "作者是南鸟。"]),
        ("她问「为什么？」没有回答。", ["她问「为什么？」", "没有回答。"]),
        ("他说：“我不去了。”然后走了。", ["他说：“我不去了。”", "然后走了。"]),
        ("价格（约3元！不含税）很低。", ["价格（约3元！不含税）很低。"]),
        ("见【注意！】一节。", ["见【注意！】一节。"]),
        (
            "The case Roe v. Wade was decided in 1973. It is famous.",
            ["The case Roe v. Wade was decided in 1973.", "It is famous."],
        ),
        ("Mr. Smith paid $3.5 million. He left.", ["Mr. Smith paid $3.5 million.", "He left."]),
        ("Use e.g. this one. Then stop.", ["Use e.g. this one.", "Then stop."]),
        ("It was made in the U.S. Army labs. Done.", ["It was made in the U.S. Army labs.", "Done."]),
        ("J. K. Rowling wrote it. Yes.", ["J. K. Rowling wrote it.", "Yes."]),
        ("See https://example.com/a?b=1 for more. Next.", ["See https://example.com/a?b=1 for more.", "Next."]),
        ("Mail a.b@c.example.com! Then wait.", ["Mail a.b@c.example.com!", "Then wait."]),
        ("Wait... then it stopped. Really... Yes.", ["Wait... then it stopped.", "Really...", "Yes."]),
        ("版本 v2.0 已发布……请更新。", ["版本 v2.0 已发布……请更新。"]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("1. Open settings\n2. Tap sync.", ["1. Open settings", "2. Tap sync."]),
        ("真的吗？！”他笑了。", ["真的吗？！”", "他笑了。"]),
    ],
)
def test_split_keeps_whole_what_is_one_sentence(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_an_opener_never_closed_does_not_hold_every_split_back() -> None:
    text = "《未闭合的书名。" + "第二句。" * 100
    assert len(split_sentences(text)) == 101


def test_sentences_come_back_stripped() -> None:
    assert split_sentences("  一句。  Two here.  ") == ["一句。", "Two here."]
