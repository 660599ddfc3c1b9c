"""The extractive answer: the sentence that answers, from the best passage, once, cited, and said briefly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ragvigil.knowledge.chunking import chunk_text, split_sentences
from ragvigil.knowledge.tokenize import Tokenizer
from ragvigil.providers.extractive import NO_ANSWER, ExtractiveGenerator
from ragvigil.types import GenerationRequest, Hit, sentence_key

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "helpcentre"

AMARILLO = (
    "阿马里洛（Amarillo），美国德克萨斯州西北部潘汉德尔地区的一个城市。"
    "阿马里洛是波特县的县治，人口约二十万。"
    "这座城市最初名为昂查村，1888年因为附近的阿马里洛湖和阿马里洛溪的黄色河岸而改名为阿马里洛。"
    "阿马里洛在西班牙语中意为黄色。"
)


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> ExtractiveGenerator:
    return ExtractiveGenerator(Tokenizer(tmp_path_factory.mktemp("tok")))


def hit(text: str, i: int = 0, anchor: str = "") -> Hit:
    return Hit(i, f"doc{i}", f"doc{i}", f"doc{i}.md", anchor or f"doc{i}", text, 1.0 - i / 10, relevant=True)


def ask(gen: ExtractiveGenerator, question: str, *texts: str, language: str = "zh", **kw: object) -> str:
    passages = [hit(t, i) for i, t in enumerate(texts)]
    return gen.generate(GenerationRequest(question, passages, language=language, **kw)).text  # type: ignore[arg-type]


def body(answer: str) -> str:
    return re.sub(r"\s*\[\d+\]", "", answer).strip()


def test_a_rename_question_answers_with_the_reason_not_the_lead(generator: ExtractiveGenerator) -> None:
    answer = ask(generator, "阿马里洛是根据什么来改名的？", AMARILLO)
    assert "黄色河岸而改名" in answer
    assert "潘汉德尔地区的一个城市" not in answer


def test_a_title_with_an_exclamation_mark_stays_whole(generator: ExtractiveGenerator) -> None:
    text = "《大小姐×执事！》是南鸟所著的漫画。2009年改编为电视动画。"
    answer = ask(generator, "《大小姐×执事！》的作者是谁？", text)
    assert answer.startswith("《大小姐×执事！》是南鸟所著的漫画。")
    assert "执事！ [1]" not in answer


def test_an_abbreviation_does_not_cut_the_answer(generator: ExtractiveGenerator) -> None:
    text = "罗诉韦德案（Roe v. Wade）是美国最高法院1973年的判决。此案确立了隐私权。"
    answer = ask(generator, "罗诉韦德案是哪一年判决的？", text)
    assert "Roe v. Wade）是美国最高法院1973年的判决" in answer


def test_the_helpcentre_phone_question_answers_with_the_faq_answer_once(generator: ExtractiveGenerator) -> None:
    text = (SAMPLES / "zh-faq-contact-support.txt").read_text(encoding="utf-8")
    chunks = chunk_text(text, "zh-faq-contact-support")
    assert len(chunks) >= 2  # the question line ends one chunk and is repeated at the start of the next
    passages = [hit(c.text, i) for i, c in enumerate(chunks)]
    answer = generator.generate(GenerationRequest("你们的客服电话是多少", passages, language="zh")).text
    assert "预约电话支持" in answer
    assert "问：" not in answer and "可以通过电话联系客服吗" not in answer
    assert answer.count("预约电话支持") == 1


def test_an_faq_question_heading_leads_to_its_answer(generator: ExtractiveGenerator) -> None:
    passages = [hit("Open the app and tap the cloud icon. The icon turns green when done.", 0, "Sync > How do I sync?")]
    answer = generator.generate(GenerationRequest("How do I sync?", passages, language="en")).text
    assert answer.startswith("Open the app and tap the cloud icon.")
    assert "How do I sync" not in answer


@pytest.mark.parametrize(
    ("question", "text", "expected"),
    [
        ("这个城市有多少人口？", "上海是中国的一个城市，也是重要港口。上海的人口约为2400万人。", "2400万人"),
        ("上海港是什么时候开港的？", "上海港是中国的重要港口。上海港在1843年开港。", "1843年"),
        ("上海博物馆在哪里？", "上海博物馆是中国的大型博物馆。上海博物馆位于人民广场。", "人民广场"),
        ("为什么上海港很重要？", "上海港是中国的重要港口。上海港很重要，因为它连接长江和海洋。", "因为它连接"),
        (
            "《三体》是谁写的？",
            "《三体》是一部长篇科幻小说。《三体》由刘慈欣创作。",
            "由刘慈欣创作",
        ),
        (
            "How many users can join the Team plan?",
            "The Team plan is for companies. The Team plan allows up to 50 users.",
            "up to 50 users",
        ),
        (
            "When was the Team plan launched?",
            "The Team plan is for companies. The Team plan was launched in 2019.",
            "launched in 2019",
        ),
        (
            "Why is the Team plan cheaper per user?",
            "The Team plan is for companies. The Team plan is cheaper per user because billing is yearly.",
            "because billing is yearly",
        ),
    ],
)
def test_the_sentence_holding_the_asked_kind_wins(
    generator: ExtractiveGenerator, question: str, text: str, expected: str
) -> None:
    lang = "en" if question.isascii() else "zh"
    answer = ask(generator, question, text, language=lang)
    assert expected in answer
    assert len(split_sentences(body(answer))) == 1  # one sentence, not the lead with it


def test_a_sentence_vector_outranks_word_overlap(generator: ExtractiveGenerator) -> None:
    lexical = "Refunds for the refund policy are described in the refund section."
    semantic = "Money is returned within five working days."
    q = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    vectors = {
        sentence_key(lexical): np.array([0.0, 1.0, 0.0], dtype=np.float32),
        sentence_key(semantic): np.array([1.0, 0.0, 0.0], dtype=np.float32),
    }
    text = f"{lexical} {semantic}"
    without = ask(generator, "What happens to my refund?", text, language="en")
    with_vectors = ask(
        generator, "What happens to my refund?", text, language="en", query_vector=q, sentence_vectors=vectors
    )
    assert without.startswith("Refunds for the refund policy")
    assert with_vectors.startswith(semantic)


def test_the_best_passage_is_preferred_over_a_slightly_better_match_below(generator: ExtractiveGenerator) -> None:
    first = "专业版的价格是每月30元。"
    second = "专业版的价格每月是30元，年付更便宜。"
    answer = ask(generator, "专业版的价格是多少？", first, second)
    assert answer == f"{first} [1]"


def test_an_english_source_for_a_chinese_question_says_so(generator: ExtractiveGenerator) -> None:
    answer = ask(generator, "怎么导出笔记？", "To export notes, open File and choose Export.")
    assert answer.startswith("（以下内容来自英文资料）")
    assert "To export notes, open File and choose Export." in answer


def test_a_chinese_source_for_an_english_question_says_so(generator: ExtractiveGenerator) -> None:
    answer = ask(generator, "How do I delete my account?", "在设置中选择注销账号即可删除账号。", language="en")
    assert answer.startswith("(This is from a Chinese document.)")
    assert "在设置中选择注销账号即可删除账号。" in answer


def test_a_source_in_the_question_language_has_no_note(generator: ExtractiveGenerator) -> None:
    answer = ask(generator, "How do I export notes?", "To export notes, open File and choose Export.", language="en")
    assert answer == "To export notes, open File and choose Export. [1]"


def test_the_answer_is_only_the_passages_text_and_cited(generator: ExtractiveGenerator) -> None:
    answer = ask(generator, "阿马里洛是根据什么来改名的？", AMARILLO)
    assert re.search(r"\[1\]$", answer)
    assert body(answer) in AMARILLO


def test_no_passage_gives_the_honest_no_answer(generator: ExtractiveGenerator) -> None:
    out = generator.generate(GenerationRequest("退款要多久？", [], language="zh"))
    assert out.text == NO_ANSWER["zh"] and out.cited == []
    out = generator.generate(GenerationRequest("How long do refunds take?", [], language="en"))
    assert out.text == NO_ANSWER["en"]


PRICING = """云笺提供免费版、专业版、团队版和企业版四种套餐。

| 项目 | 免费版 | 专业版 | 团队版 |
| --- | --- | --- | --- |
| 人民币价格 | ¥0 | ¥28/月 | ¥48/人/月 |
| 可同步设备数 | 3 台 | 不限 | 不限 |
"""


def test_a_table_row_names_its_columns_and_answers_alone(generator: ExtractiveGenerator) -> None:
    texts = [c.text for c in chunk_text(PRICING, "套餐", max_chars=500)]
    assert "人民币价格：免费版 ¥0，专业版 ¥28/月，团队版 ¥48/人/月。" in split_sentences(" ".join(texts))
    answer = body(ask(generator, "团队版多少钱？", *texts))
    assert "¥48/人/月" in answer and "|" not in answer and "可同步设备数" not in answer


def test_a_follow_up_is_ranked_with_the_query_retrieval_resolved_and_its_own_words_first(
    generator: ExtractiveGenerator,
) -> None:
    texts = [c.text for c in chunk_text(PRICING, "套餐", max_chars=500)]
    resolved = body(ask(generator, "团队版呢？", *texts, search_query="团队版呢？ 团队版多少钱？ 专业版多少钱？"))
    assert "¥48/人/月" in resolved
    install = "To install the app, download the app installer for Windows and run it."
    mobile = "On mobile, get NimbusNote from the App Store or Google Play."
    query = "and on mobile? mobile How do I install the app?"
    assert body(ask(generator, "and on mobile?", install, mobile, language="en", search_query=query)) == mobile
