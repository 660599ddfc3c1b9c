"""The intents file's validation: every problem at once, each with its location, every input bounded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ragvigil.chat.intent import DEFAULT_FILE, IntentFileError, Limits, load_file, parse
from ragvigil.config import Settings

BAD = """\
intents:
  - examples: [hello]
  - name: greeting
    examples: []
  - name: greeting
    action: dance
    examples: [hi, 42, ""]
  - name: Bad-Name
    examples: [x]
    colour: red
  - name: thanks
    examples: [thanks]
    replies: {fr: merci, en: ""}
threshold: 2
"""


def test_default_file_loads_with_every_intent_and_action() -> None:
    intents = load_file(DEFAULT_FILE)
    names = [i.name for i in intents.intents]
    assert names == [
        "product_inquiry",
        "pricing",
        "technical_support",
        "account_login",
        "billing_refund",
        "complaint",
        "human_request",
        "greeting",
        "thanks_goodbye",
        "chit_chat",
        "other",
    ]
    for spec in intents.intents:
        zh = [e for e in spec.examples if any("\u4e00" <= c <= "\u9fff" for c in e)]
        assert len(zh) >= 12 and len(spec.examples) - len(zh) >= 12, spec.name
    actions = {i.name: i.action for i in intents.intents if i.action}
    assert actions == {
        "complaint": "handoff",
        "human_request": "handoff",
        "greeting": "small_talk",
        "thanks_goodbye": "small_talk",
        "chit_chat": "small_talk",
    }
    assert all(set(intents.get(n).replies) == {"zh", "en"} for n in ("greeting", "thanks_goodbye", "chit_chat"))


def test_every_problem_is_listed_with_its_location() -> None:
    with pytest.raises(IntentFileError) as err:
        parse(BAD, "bad.yaml")
    problems = err.value.problems
    expected = [
        "intents[0].name: missing",
        "intents[1] (greeting).examples: missing or empty",
        "intents[2] (greeting).action: unknown action 'dance'",
        "intents[2] (greeting).examples[1]: not a string (int)",
        "intents[2] (greeting).examples[2]: empty",
        "intents[3]: unknown key(s) colour",
        "intents[3].name: 'Bad-Name' must be lowercase",
        "intents[4] (thanks).replies.fr: unknown language",
        "intents[4] (thanks).replies.en: not a non-empty string",
        "threshold: 2 is not a number in [0, 1]",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)
    assert len(problems) == len(expected)
    assert str(err.value).startswith("bad.yaml: 10 problem(s)")


def test_duplicate_names_are_reported_with_both_places() -> None:
    text = "intents:\n  - {name: a, examples: [x]}\n  - {name: b, examples: [y]}\n  - {name: a, examples: [z]}\n"
    with pytest.raises(IntentFileError) as err:
        parse(text)
    assert err.value.problems == ["intents[2].name: 'a' duplicates intents[0]"]


def test_a_yaml_error_names_its_line() -> None:
    with pytest.raises(IntentFileError) as err:
        parse("intents:\n  - name: a\n    examples: [x\n  - name: b\n")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("line 4, column")
    assert "YAML error" in err.value.problems[0]


@pytest.mark.parametrize(
    ("text", "limits", "problem"),
    [
        (
            "intents:\n" + "".join(f"  - {{name: i{n}, examples: [x]}}\n" for n in range(4)),
            Limits(max_intents=3),
            "intents: 4 intents, more than the 3 allowed",
        ),
        (
            "intents:\n  - {name: a, examples: [x, y, z]}\n",
            Limits(max_examples_per_intent=2),
            "intents[0] (a).examples: 3 examples, more than the 2 allowed",
        ),
        (
            "intents:\n  - {name: a, examples: [x, y]}\n  - {name: b, examples: [z]}\n",
            Limits(max_examples=2),
            "intents: 3 examples in all, more than the 2 allowed",
        ),
        (
            "intents:\n  - {name: a, examples: [abcdef]}\n",
            Limits(max_example_chars=5),
            "intents[0] (a).examples[0]: 6 characters, more than 5",
        ),
        ("intents:\n  - {name: a, examples: [x]}\n", Limits(max_bytes=10), "file: 38 bytes, more than the 10 allowed"),
        ("- just a list\n", Limits(), "file: expected a mapping with an `intents:` list"),
        ("intents: []\n", Limits(), "intents: missing or not a non-empty list"),
    ],
)
def test_every_input_is_bounded(text: str, limits: Limits, problem: str) -> None:
    with pytest.raises(IntentFileError) as err:
        parse(text, limits=limits)
    assert problem in err.value.problems


def test_a_file_over_the_byte_bound_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("intents:\n  - {name: a, examples: [" + "x, " * 200 + "x]}\n")
    with pytest.raises(IntentFileError) as err:
        load_file(path, Limits(max_bytes=100))
    assert err.value.problems[0].startswith("file: ") and "more than the 100 allowed" in err.value.problems[0]
    with pytest.raises(IntentFileError, match="cannot be read"):
        load_file(tmp_path / "missing.yaml")


def test_check_command_prints_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    out = subprocess.run(
        [sys.executable, "-m", "ragvigil.chat.intent", "check", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "10 problem(s)" in out.stdout and "intents[2] (greeting).action: unknown action 'dance'" in out.stdout
    ok = subprocess.run(
        [sys.executable, "-m", "ragvigil.chat.intent", "check", str(DEFAULT_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and "ok, 11 intents" in ok.stdout


def test_intents_file_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Settings(_env_file=None).intents_file is None  # type: ignore[call-arg]
    monkeypatch.setenv("RAGVIGIL_INTENTS_FILE", str(tmp_path / "mine.yaml"))
    assert Settings(_env_file=None).intents_file == tmp_path / "mine.yaml"  # type: ignore[call-arg]
