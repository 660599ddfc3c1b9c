"""Question types and the kinds of content that answer them: a 谁 question wants a name, a 多少 one a number.

Cue words, not a model: the extractive generator must answer with no model at all, and these few
patterns are what lifts the sentence holding the asked-for kind above the one that only repeats the
question's entity (the lead or definition sentence of an article)."""

from __future__ import annotations

import re

__all__ = ["QUESTION_WORDS", "kinds_in", "question_kind"]

_NUM = r"[0-9０-９]+(?:[.,][0-9]+)?|[零〇一二三四五六七八九十百千万亿两半几数]+"
_UNIT = (
    r"(?:%|％|‰|个|位|名|次|年|月|日|天|周|小时|分钟|分|秒|元|美元|欧元|英镑|日元|港元|块|角|米|厘米|毫米|公分|英尺|英寸|公里|千米|"
    r"英里|平方|公顷|亩|公斤|千克|克|斤|吨|升|毫升|倍|种|部|集|章|卷|话|人|户|家|座|所|层|岁|届|支|款|项|台|辆|架|艘|"
    r"条|张|本|首|场|局|件|册|页|字|GB|MB|TB|KB|kg|km|cm|mm|m)"
)
_KIND_PATTERNS: dict[str, re.Pattern[str]] = {
    "number": re.compile(
        rf"(?:{_NUM})\s*{_UNIT}|\b\d+(?:\.\d+)?\s*(?:%|percent|hours?|minutes?|days?|weeks?|months?|years?|"
        r"times|people|users|members|GB|MB|TB|USD|dollars?|euros?|yuan)\b|[$€£¥]\s?\d|\b\d{2,}\b|\d",
        re.I,
    ),
    "date": re.compile(
        r"\d{1,4}\s*年|[0-9一二三四五六七八九十]{1,3}\s*月|\d{1,2}\s*[日号]|[一二三四五六七八九十]+世纪|\d+\s*世纪|"
        r"年代|朝|时期|期间|之后|之前|以后|以前|春|夏|秋|冬|凌晨|早上|上午|中午|下午|晚上|\d{1,2}[:：]\d{2}|星期|周[一二三四五六日末]|"
        r"工作日|节假日|\b(?:1[0-9]|20)\d{2}\b|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b|"
        r"\b(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|daily|weekly|monthly|yearly|"
        r"before|after|within|until|am|pm)\b",
        re.I,
    ),
    "place": re.compile(
        r"位于|坐落|地处|在.{1,12}?(?:省|市|县|区|镇|乡|村|州|国|岛|洲|山|河|湖|海|街|路|大学|中心|页面|菜单|设置|版块)|"
        r"(?:半岛|盆地|平原|山脉|地区|首都|首府|境内|附近|页面|菜单|版块|目录|[省州]境)|"
        r"\b(?:in|at|located|near|from|under|on the)\s+(?:the\s+)?[A-Z]|\b(?:page|menu|folder|settings|tab)\b",
    ),
    "person": re.compile(
        r"由|被|作者|导演|主演|创办|创立|创建|发明|提出|担任|饰演|配音|设计|演唱|作曲|作词|编剧|主持|领导|率领|"
        r"总统|主席|国王|皇帝|教授|博士|先生|女士|联系|负责|管理员|客服|经理|团队|"
        r"\bby\s+[A-Z]|\b[A-Z][a-z]+\s+[A-Z][a-z]+\b|\b(?:admin|administrator|owner|support|team|manager)\b",
    ),
    "reason": re.compile(
        r"因为|由于|因此|所以|为了|原因|之所以|导致|因而|以便|源于|源自|得名|命名|取自|来自|来源|根据|依据|以免|否则|目的|"
        r"\b(?:because|due to|since|so that|as a result|reason|caused|in order to|otherwise|prevents?)\b",
        re.I,
    ),
    "steps": re.compile(
        r"点击|打开|选择|进入|设置|首先|然后|接着|最后|步骤|→|>|填写|输入|登录|前往|访问|提交|下载|安装|扫码|"
        r"\b(?:click|open|select|choose|go to|tap|press|enter|then|first|next|finally|navigate|install|sign in)\b",
        re.I,
    ),
}
# (question cue, kind asked for): first match wins, so the longer, more specific cues come first
_QUESTION_CUES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"为什么|为何|什么原因|原因|怎么会|何故|根据什么|依据什么|因为什么|由于什么|目的|\bwhy\b|\breason", re.I
        ),
        "reason",
    ),
    (
        re.compile(
            r"什么时候|何时|哪一年|哪年|几月|几号|哪天|哪一天|多久以前|什么时间|\bwhen\b|\bwhat time\b|\bwhat year\b",
            re.I,
        ),
        "date",
    ),
    (
        re.compile(
            r"多少|几[个位名次年天岁种部集人家座层届支款项台条张本首场件倍]?|多大|多长|多久|多高|多远|多重|多深|多宽|"
            r"\bhow (?:many|much|long|old|big|large|far|often)\b",
            re.I,
        ),
        "number",
    ),
    (re.compile(r"哪里|哪儿|在哪|何处|何地|哪个(?:国家|城市|地方|省|州)|\bwhere\b", re.I), "place"),
    (re.compile(r"谁|哪位|何人|\bwho\b|\bwhom\b", re.I), "person"),
    (re.compile(r"怎么|如何|怎样|步骤|\bhow (?:do|can|to|should|does)\b|\bhow\b", re.I), "steps"),
]
# words of the question that ask rather than say what it is about: no sentence is chosen for holding them
QUESTION_WORDS = frozenset(
    "谁 哪位 哪里 哪儿 在哪 何时 什么 时候 什么时候 哪一年 哪年 几月 多少 几 多大 多长 多久 为什么 为何 原因 怎么 如何 怎样 "
    "哪 哪个 哪些 是否 是不是 有没有 可以 能否 能不能 吗 呢 请问 一下 who when where what which why how many much long".split()
)


def question_kind(question: str) -> str | None:
    """The kind of content ``question`` asks for (``person``, ``place``, ``date``, ``number``, ``reason``,
    ``steps``), or None for a question that names no kind (什么是…, what is…)."""
    for pattern, kind in _QUESTION_CUES:
        if pattern.search(question):
            return kind
    return None


def kinds_in(sentence: str) -> frozenset[str]:
    """The kinds of content ``sentence`` holds."""
    return frozenset(kind for kind, pattern in _KIND_PATTERNS.items() if pattern.search(sentence))
