"""Follow-up questions resolved against the conversation, so retrieval searches what the user means.

"专业版多少钱？ → 那学生呢？ → 认证有效期多久？ → 团队版呢？": the last question is about the team plan's
*price*, two turns back, not about the certification asked just before. Joining a follow-up with the
previous question alone loses that, so the resolver reads the session's recent turns (user and
assistant messages, oldest first) and decides, without an LLM:

- whether the new question is a follow-up (ellipsis: "那…呢", "and on mobile?", "what about X?";
  a pronoun with nothing it could refer to in the question itself: "它", "这个", "that plan", "it";
  a question of one word; or, checked by the caller, one that finds nothing relevant on its own)
  or a new topic, which is searched alone;
- what to search for a follow-up: a slot substituted into the earlier question it parallels
  ("团队版呢？" + "专业版多少钱？" → "团队版多少钱？"), else the question plus the topic of the most
  recent on-topic turn (turns answered with the no-answer are off topic and carry nothing), with an
  older topic after it, cut to a few hundred characters.

The earlier turns are resolved the same way, oldest first, so a chain of follow-ups keeps its topic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragvigil.knowledge.tokenize import is_cjk
from ragvigil.providers.extractive import NO_ANSWER

__all__ = ["FollowupResolver", "Resolution"]

# a question opening like this leans on what came before ("那学生呢？", "and on mobile?")
_ZH_OPENERS = ("那么", "那", "还有", "另外", "那如果", "如果是", "换成", "换作")
_EN_OPENERS = ("and ", "what about ", "how about ", "what if ", "also ", "and what about ", "same for ", "then ")
_ZH_ELLIPSIS_END = re.compile(r"呢\s*[？?。!！]*\s*$")
# pronouns that need an antecedent; Chinese ones at the start or as the subject/object of a short question
_ZH_PRONOUNS = ("它们", "它", "这个", "那个", "这些", "那些", "这种", "那种", "该功能", "该套餐", "此功能")
_EN_PRONOUNS = re.compile(r"\b(it|its|that|this|they|them|those|these|there|one)\b", re.IGNORECASE)
# "that plan", "this feature": a demonstrative before a noun always points back
_EN_DEMONSTRATIVE = re.compile(r"\b(that|this|those|these)\s+(?!is\b|are\b|was\b|were\b)[a-z]", re.IGNORECASE)
# "delete a note ... restore it": an article or possessive before the pronoun gives it an antecedent
_EN_ANTECEDENT = re.compile(r"\b(a|an|the|my|your|our|their)\s+[A-Za-z]", re.IGNORECASE)
_EN_BARE = re.compile(r"\b(it|its|they|them|one)\b", re.IGNORECASE)
_EN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'+-]*")
_CODE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{0,4}\d{2,}[A-Za-z0-9]*(?![A-Za-z0-9])")  # E2031, RF20240518001
_PUNCT = "？?。.!！，,、；;：: "
_NO_ANSWERS = frozenset(NO_ANSWER.values())
# words a Chinese slot is not (a substitution of "团队版" for "专业版" is fine, of "呢" for anything is not)
_ZH_FUNCTION = frozenset("的了吗呢吧啊是在有和与及或也都还就")


@dataclass(frozen=True)
class Resolution:
    """What to search for a question, and why: ``followup`` False means the question alone."""

    query: str
    followup: bool
    reason: str  # "first turn", "new topic", "ellipsis", "pronoun", "short", "nothing relevant"
    topic: str = ""  # the topic carried from earlier turns ("" for a new topic)


class FollowupResolver:
    """Decide follow-up or new topic from the recent turns, and build the retrieval query.

    ``tokens`` is retrieval's tokenizer (content words only). Bounded: the last ``max_turns`` user
    turns are read, each cut to ``max_chars``, and the query's carried context is ``max_chars`` at most.
    """

    def __init__(self, tokens: Callable[[str], list[str]], max_turns: int = 4, max_chars: int = 300) -> None:
        self.tokens = tokens
        self.max_turns = max_turns
        self.max_chars = max_chars

    def resolve(
        self, message: str, history: Sequence[tuple[str, str]], relevant_alone: bool | None = None
    ) -> Resolution:
        """The query for ``message`` after ``history`` ((role, content), oldest first).

        ``relevant_alone`` says whether the question found relevant passages on its own (None: not
        searched yet); a question that found nothing may still be a follow-up ("认证呢" -> "那怎么办"),
        which the caller checks against what the contextual search finds.
        """
        pairs = _pairs(history)[-self.max_turns :]
        if not pairs:
            return Resolution(message, False, "first turn")
        topics: list[str] = []  # resolved queries of the on-topic turns, oldest first
        carried: set[str] = set()  # those of them that already carry the topics before them (follow-ups)
        asked: list[str] = []  # the user's own questions, oldest first
        for question, answer in pairs:
            question = question[: self.max_chars]
            past = self._decide(question, asked, topics, None, carried)
            if answer is not None and answer.strip() in _NO_ANSWERS:
                asked.append(question)
                continue  # off the knowledge base: it carries no topic ("明天会下雨吗")
            topics.append(past.query if past.followup else question)
            if past.followup:
                carried.add(past.query)
            asked.append(question)
        return self._decide(message, asked, topics, relevant_alone, carried)

    def _decide(
        self,
        message: str,
        asked: list[str],
        topics: list[str],
        relevant_alone: bool | None,
        carried: set[str] | None = None,
    ) -> Resolution:
        if not asked:
            return Resolution(message, False, "first turn")
        reason = self._followup_reason(message, relevant_alone)
        if reason is None or not topics:
            return Resolution(message, False, "new topic")
        core = _core(message)
        substituted = _substitute(core, asked[::-1], self.max_chars) if core else None
        if substituted is not None:
            frame, filled = substituted
            # the filled question first; the one it parallels keeps the kind of answer in view, except
            # for a code, where the old one would pull its own answer back ("E2031" for "E2010")
            topic = filled if _CODE.fullmatch(core) else f"{filled} {_bounded(frame, self.max_chars // 2)}"
            return Resolution(_join(message, topic, self.max_chars), True, reason, topic)
        topic = _bounded(topics[-1], self.max_chars)
        if reason == "ellipsis" and core:
            # the new slot is what is asked ("and on mobile?"): said twice, it outweighs the carried frame
            topic = f"{core} {topic}"
        # a resolved follow-up carries what came before it already; a standalone question gets the older topic
        older = [] if topics[-1] in (carried or ()) else [t for t in topics[:-1] if t != topics[-1]]
        if older and len(topic) < self.max_chars:
            # an older topic after the most recent one: its words only, what room is left
            words = " ".join(dict.fromkeys(self.tokens(older[-1])))
            topic = f"{topic} {_bounded(words, self.max_chars - len(topic))}".strip()
        return Resolution(_join(message, topic, self.max_chars), True, reason, topic)

    def _followup_reason(self, message: str, relevant_alone: bool | None) -> str | None:
        """Why ``message`` leans on earlier turns, or None when it stands alone."""
        text = message.strip()
        lower = text.lower()
        if _ZH_ELLIPSIS_END.search(text) or text.startswith(_ZH_OPENERS) or lower.startswith(_EN_OPENERS):
            return "ellipsis"
        words = set(self.tokens(text))
        if is_cjk(text):
            if any(p in text for p in _ZH_PRONOUNS) and len(text) <= 16:
                return "pronoun"
        elif len(words) <= 4 and (_EN_DEMONSTRATIVE.search(text) or _unbound_pronoun(text)):
            return "pronoun"
        if len(words) <= 1:
            return "short"
        if relevant_alone is False:
            return "nothing relevant"
        return None


def _unbound_pronoun(text: str) -> bool:
    """An "it"/"they" with no article-led noun before it in the question ("How do I fix it?", not
    "If I delete a note, can I restore it?")."""
    m = _EN_BARE.search(text)
    return m is not None and _EN_ANTECEDENT.search(text[: m.start()]) is None


def _pairs(history: Sequence[tuple[str, str]]) -> list[tuple[str, str | None]]:
    """(user question, the assistant's answer to it or None), oldest first."""
    out: list[tuple[str, str | None]] = []
    for role, content in history:
        if role == "user":
            out.append((content, None))
        elif role == "assistant" and out and out[-1][1] is None:
            out[-1] = (out[-1][0], content)
    return out


def _core(message: str) -> str:
    """The question without its follow-up cues: "那团队版呢？" -> "团队版", "What about the Team plan?" -> "Team plan"."""
    text = _ZH_ELLIPSIS_END.sub("", message.strip()).strip(_PUNCT)
    for opener in sorted(_ZH_OPENERS, key=len, reverse=True):
        if text.startswith(opener):
            text = text[len(opener) :]
            break
    lower = text.lower()
    for opener in sorted(_EN_OPENERS, key=len, reverse=True):
        if lower.startswith(opener):
            text = text[len(opener) :]
            break
    text = re.sub(r"^(the|a|an|on|in|for)\s+", "", text.strip(_PUNCT), flags=re.IGNORECASE)
    return text.strip(_PUNCT)


def _substitute(core: str, asked_recent_first: list[str], max_chars: int) -> tuple[str, str] | None:
    """The earlier question ``core`` fills a slot of, and that question with the slot filled.

    "团队版" parallels "专业版" in "专业版多少钱？" (the same head, 版) -> "团队版多少钱？"; "Team plan"
    parallels "Pro plan" in "How much is the Pro plan?" -> "How much is the Team plan?".
    """
    for question in asked_recent_first:
        q = question[:max_chars]
        filled = _substitute_code(core, q)
        if filled is None:
            filled = _substitute_zh(core, q) if is_cjk(core) else _substitute_en(core, q)
        if filled is not None:
            return q, filled
    return None


def _shape(word: str) -> str:
    """A code's form: "E2031" and "E2010" are both "A9999"."""
    return "".join("9" if c.isdigit() else "A" if c.isupper() else "a" if c.isalpha() else c for c in word)


def _substitute_code(core: str, question: str) -> str | None:
    """An error code in place of another of the same form: "What about E2031?" after "What does E2010 mean?"."""
    if not _CODE.fullmatch(core):
        return None
    for m in _CODE.finditer(question):
        if m.group() != core and _shape(m.group()) == _shape(core):
            return question[: m.start()] + core + question[m.end() :]
    return None


def _substitute_zh(core: str, question: str) -> str | None:
    if not 2 <= len(core) <= 8 or not all(is_cjk(c) for c in core):
        return None
    head = core[-1]
    if head in _ZH_FUNCTION:
        return None
    for m in re.finditer(re.escape(head), question):
        start = m.end() - len(core)
        if start < 0:
            continue
        slot = question[start : m.end()]
        if slot != core and all(is_cjk(c) for c in slot):
            return question[:start] + core + question[m.end() :]
    return None


def _substitute_en(core: str, question: str) -> str | None:
    words = _EN_WORD.findall(core)
    if not 2 <= len(words) <= 4:
        return None
    head = words[-1].lower()
    if _EN_PRONOUNS.fullmatch(words[0]):
        return None  # "that plan" refers to the plan asked about: context, not a new slot
    pattern = re.compile(r"\b([A-Za-z][A-Za-z0-9'+-]*)\s+(" + re.escape(head) + r")\b", re.IGNORECASE)
    m = pattern.search(question)
    if m is None or m.group(1).lower() == words[-2].lower():
        return None
    return question[: m.start()] + " ".join(words) + question[m.end() :]


def _bounded(text: str, limit: int) -> str:
    return text[:limit] if limit > 0 else ""


def _join(message: str, topic: str, max_chars: int) -> str:
    """The question first (it is what is asked), then the carried topic, within the bound."""
    room = max_chars - len(message) - 1
    return f"{message} {topic[:room]}" if room > 0 and topic else message
