from __future__ import annotations

import io
import itertools

import pytest

from ragvigil.knowledge.chunking import chunk_text, split_sentences
from ragvigil.knowledge.loaders import LoadError, load_bytes

ZH = "# 会员说明\n星河会员的年费是 388 元，可以在每年 3 月 1 日前免费取消自动续费。退款将在 7 个工作日内到账。"


def test_utf8_chinese_decoded_as_cp1252_is_repaired() -> None:
    import ftfy.bad_codecs  # noqa: F401  registers "sloppy-windows-1252", how Windows tools decode

    mojibake = ZH.encode("utf-8").decode("sloppy-windows-1252")
    assert "会员" not in mojibake
    doc = load_bytes(mojibake.encode("utf-8"), "faq.md")
    assert "星河会员的年费是 388 元，可以在每年" in doc.text
    assert "，" in doc.text  # full-width CJK punctuation kept (fix_character_width=False)
    assert doc.title == "会员说明"
    assert not any("remains" in w for w in doc.warnings)
    assert any("repaired" in w for w in doc.warnings)


def test_partial_repair_carries_a_quality_warning() -> None:
    # strict cp1252 has no character for bytes such as 0x8F: those bytes are lost for good
    damaged = ZH.encode("utf-8").decode("cp1252", errors="replace")
    assert "\ufffd" in damaged
    doc = load_bytes(damaged.encode("utf-8"), "faq.md")
    assert "星河会员的年费是 388 元" in doc.text  # the part that survived is repaired
    assert any("encoding damage remains" in w for w in doc.warnings), doc.warnings


def test_clean_text_has_no_warnings() -> None:
    doc = load_bytes(ZH.encode("utf-8"), "faq.md")
    assert doc.warnings == []
    assert doc.text.startswith("# 会员说明")


def test_gb18030_file_is_decoded() -> None:
    doc = load_bytes(ZH.encode("gb18030"), "faq.txt")
    assert "星河会员" in doc.text


def test_html_drops_scripts_and_navigation_and_keeps_headings() -> None:
    html = """<html><head><title>T</title><script>var secret = 1;</script></head><body>
    <nav>Home | Pricing</nav><h1>Mobile app</h1><p>Scan documents with the camera.</p>
    <h2>Widgets</h2><ul><li>Quick note widget</li></ul><footer>© Nimbus</footer></body></html>"""
    doc = load_bytes(html.encode(), "mobile.html")
    assert "secret" not in doc.text and "Pricing" not in doc.text and "©" not in doc.text
    assert "# Mobile app" in doc.text and "## Widgets" in doc.text and "- Quick note widget" in doc.text
    assert doc.title == "Mobile app"


def test_pdf_text_is_extracted() -> None:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 720, "Refunds are processed within 14 days of the request.")
    c.showPage()
    c.save()
    doc = load_bytes(buf.getvalue(), "refunds.pdf")
    assert "Refunds are processed within 14 days" in doc.text


@pytest.mark.parametrize(
    ("raw", "name", "reason"),
    [
        (b"", "empty.md", "empty"),
        (b"   \n\t", "blank.txt", "empty"),
        (b"data", "image.png", "unsupported file type"),
        (b"%PDF-1.4 garbage", "broken.pdf", "PDF"),
    ],
)
def test_bad_files_are_refused_with_a_reason(raw: bytes, name: str, reason: str) -> None:
    with pytest.raises(LoadError, match=reason):
        load_bytes(raw, name)


def test_cjk_sentence_splitting() -> None:
    parts = split_sentences("今天天气很好。你要去哪里？“我去公司！”好的；再见。Then we left. OK!")
    assert parts == ["今天天气很好。", "你要去哪里？", "“我去公司！”", "好的；", "再见。", "Then we left.", "OK!"]


def test_chunks_respect_headings_size_and_overlap() -> None:
    body = "".join(f"第{i}句话讲的是退款规则的第{i}条细节。" for i in range(40))
    text = f"# 退款\n## 年付\n{body}\n## 月付\n月付订单不支持退款。"
    chunks = chunk_text(text, "退款", max_chars=120, overlap=40)
    assert all(len(c.text) <= 120 for c in chunks)
    assert {c.anchor for c in chunks} == {"退款 > 年付", "退款 > 月付"}
    yearly = [c for c in chunks if c.anchor.endswith("年付")]
    assert len(yearly) > 3
    # consecutive chunks share their boundary sentence(s)
    for a, b in itertools.pairwise(yearly):
        first_of_next = split_sentences(b.text)[0]
        assert first_of_next in split_sentences(a.text)[-2:]
    assert chunks[-1].text == "月付订单不支持退款。"
    # nothing is lost: every sentence appears in some chunk
    for i in range(40):
        assert any(f"第{i}句话" in c.text for c in yearly)


def test_overlong_sentence_is_hard_split() -> None:
    chunks = chunk_text("无" * 1000, "t", max_chars=300, overlap=0)
    assert [len(c.text) for c in chunks] == [300, 300, 300, 100]
