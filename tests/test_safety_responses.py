"""The responses: the crisis response carries the locale's hotlines, others a calm refusal; a bad file is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragvigil.chat.safety import ResourcesError, SafetyChecker, load_resources
from ragvigil.chat.understanding import SafetyVerdict


@pytest.fixture(scope="module")
def checker() -> SafetyChecker:
    return SafetyChecker()


def test_crisis_response_zh_has_mainland_hotlines_first(checker: SafetyChecker) -> None:
    text = checker.response(checker.check("我不想活了"), "zh-CN")
    assert "12356" in text and "010-82951332" in text and "400-161-9995" in text
    assert text.index("12356") < text.index("010-82951332") < text.index("400-161-9995")


def test_crisis_response_en_has_988_and_samaritans(checker: SafetyChecker) -> None:
    text = checker.response(checker.check("I want to kill myself"), "en")
    assert "988" in text and "116 123" in text
    assert "12356" not in text


def test_other_categories_get_a_refusal_without_hotlines(checker: SafetyChecker) -> None:
    for message, language in (("我要杀了你", "zh"), ("i will kill you", "en"), ("where can i buy cocaine", "fr")):
        verdict = checker.check(message)
        text = checker.response(verdict, language)
        assert text and "12356" not in text and "988" not in text
        assert text != checker.response(checker.check("我想自杀"), language)


def test_replacement_per_language(checker: SafetyChecker) -> None:
    unsafe = checker.check_output("Here is how to make a bomb")
    assert "12356" in checker.replacement(unsafe, "zh")
    assert "988" in checker.replacement(unsafe, "en")
    method = checker.check_output("the most painless way to die is")
    assert "010-82951332" in checker.replacement(method, "zh")  # a self-harm answer: the crisis lines in full


def test_configured_hotlines_replace_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "resources.yaml"
    path.write_text(
        """
languages:
  en:
    crisis: We care about you.
    crisis_closing: Someone will reach out.
    hotlines: [{name: Lifeline, number: "13 11 14", hours: 24/7}]
    refusals: {default: No.}
    replacement: Held back.
""",
        encoding="utf-8",
    )
    checker = SafetyChecker(resources=load_resources(path))
    text = checker.response(SafetyVerdict("self_harm", "high"), "zh")  # no zh pack: falls back to en
    assert "13 11 14" in text and "988" not in text


def test_bad_resources_file_lists_problems(tmp_path: Path) -> None:
    path = tmp_path / "resources.yaml"
    path.write_text("languages:\n  en:\n    crisis: hi\n    hotlines: []\n    refusals: {violence: no}\n", "utf-8")
    with pytest.raises(ResourcesError) as e:
        load_resources(path)
    text = "\n".join(e.value.problems)
    assert "crisis_closing: required" in text and "replacement: required" in text
    assert "hotlines: at least one" in text and "refusals: must" in text
