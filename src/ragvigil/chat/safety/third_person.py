"""Is a text a factual question about *someone else's* death ("刘七是怎么死的？", "who killed Lincoln?")?

Why: reading-comprehension and history questions name deaths all the time; the crisis probe reads "death"
and "how" and fires on them, sending a person who asked about an emperor the self-harm reply and a
priority-1 hand-off. The check is deliberately narrow: it needs a death-as-fact cue (past tense, cause of
death, a killer, war or disease vocabulary) and the absence of every first- or second-person marker, so
"我想知道怎么死最快" and "how do I die painlessly" (method-seeking about oneself, the most dangerous class)
and generic "how do you die" questions never qualify. The same first-person markers guard the lexicon's
benign contexts for these questions (``lexicon.yaml``, entries ``self_harm.indirect`` / ``want_to_die``).
"""

from __future__ import annotations

import re

from .normalize import Normalized

__all__ = ["FIRST_PERSON_ZH", "third_person_death_fact"]

# The writer (or a generic "you"): any of these keeps the crisis check as it is.
FIRST_PERSON_ZH = re.compile(r"我|自己|咱|俺|本人|你|您")
_FIRST_PERSON_EN = re.compile(r"\b(?:i|me|my|mine|myself|im|ive|id|ill|you|your|yours|yourself|u|ur)\b")

# A death told as a fact about someone: how they died, of what, by whom, the cause, the toll.
_FACT_ZH = re.compile(
    r"(?:怎么|怎样|如何|为何|为什么)(?:而)?死的|是(?:怎么|怎样|如何)死|死于|死因|死亡原因|死亡人数|死伤|"
    r"被(?:谁)?(?:所)?(?:杀|害|刺|毒|处)|(?:杀|害|毒|处|刺)(?:死|害)了?|病死|战死|阵亡|驾崩|去世|逝世|遇害|遇刺|"
    r"处死|处决|殉(?:国|职|难)|之死"
)
_FACT_EN = re.compile(
    r"\b(?:how|why|when|where) did (?:[a-z]+ ){1,5}(?:die|pass away|get killed|want to die)\b|"
    r"\bwho (?:killed|murdered|assassinated|shot)\b|\bcause of (?:his |her |their |the )?death\b|"
    r"\b(?:died|perished) (?:of|from|in|on|at|after|during)\b|\b(?:was|were|got) (?:killed|murdered|assassinated)\b|"
    r"\bdeath toll\b|\bkilled in (?:the |a )?(?:war|battle|attack|crash|accident|earthquake)\b"
)
# A death word next to history, war or disease vocabulary: an account, not a wish.
_DEATH_ZH = re.compile(r"死|杀")
_CONTEXT_ZH = re.compile(r"战争|战役|战斗|王朝|皇帝|国王|将军|士兵|军队|疾病|瘟疫|病毒|历史|朝代|起义|屠杀")
_DEATH_EN = re.compile(r"\b(?:die|died|dies|death|deaths|dead|kill|killed)\b")
_CONTEXT_EN = re.compile(
    r"\b(?:war|battle|army|soldiers?|emperor|king|queen|dynasty|empire|disease|plague|epidemic|pandemic|history)\b"
)


# A question, as reading-comprehension and history questions are: a statement of a death is where grief is told.
_QUESTION_ZH = re.compile(r"[?？]|吗|什么|谁|哪|怎么|怎样|如何|为什么|为何|几|多少|多久")
_QUESTION_EN = re.compile(r"\?|\b(?:how|who|whom|what|why|when|where|which)\b")
# A wish, a plan or the words of despair anywhere ("妈妈死于癌症，怎么才能去陪她？", "奶奶去世了，不知道以后还有什么
# 意义", "I want to join him"): grief that may be a crisis, left to the usual rule.
_WISH_ZH = re.compile(
    r"想|要去|打算|准备|陪|一起走|跟着|去找|随(?:他|她|他们)|意义|意思|活着|活下去|解脱|撑不|熬不|没用|累"
)
_WISH_EN = re.compile(
    r"\b(?:want|wants|wanna|wish|join|joining|follow|going to|plan|planning|ready to|point|meaning|alive|living|go on)\b"
)


def third_person_death_fact(n: Normalized) -> bool:
    """True when ``n`` asks about a death as a fact about someone else, naming nobody as the writer or "you",
    with no wish or plan in it (bereavement with a wish to follow is left to the usual rule)."""
    if FIRST_PERSON_ZH.search(n.compact) or _FIRST_PERSON_EN.search(n.words):
        return False
    if _WISH_ZH.search(n.compact) or _WISH_EN.search(n.words):
        return False
    if not (_QUESTION_ZH.search(n.text) or _QUESTION_EN.search(n.text)):
        return False
    if _FACT_ZH.search(n.compact) or _FACT_EN.search(n.words):
        return True
    zh = _DEATH_ZH.search(n.compact) and _CONTEXT_ZH.search(n.compact)
    en = _DEATH_EN.search(n.words) and _CONTEXT_EN.search(n.words)
    return bool(zh or en)
