"""A lexicon file with problems: every one listed with its location, and a reload keeps the previous lexicon."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragvigil.chat.safety import LexiconError, SafetyChecker, load_lexicon, reload_lexicon

GOOD = """
entries:
  - id: custom.crisis
    category: self_harm
    severity: high
    terms: {zh: [不想再撑了], en: [cannot hold on]}
"""

BAD = """
entries:
  - id: ok.one
    category: self_harm
    severity: high
    terms: {en: [fine]}
  - id: Bad Id
    category: selfharm
    severity: extreme
    terms: {en: [x]}
  - id: ok.one
    category: violence
    severity: low
    patterns: ['(unclosed']
  - id: empty.entry
    category: illegal
    severity: low
    colour: red
"""


def test_every_problem_listed_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    path.write_text(BAD, encoding="utf-8")
    with pytest.raises(LexiconError) as e:
        load_lexicon(path)
    problems = e.value.problems
    text = "\n".join(problems)
    assert "line 7: entries[1]" in text and "id: required" in text
    assert "category: 'selfharm' is not one of" in text
    assert "severity: 'extreme' is not one of" in text
    assert "line 11: entries[2] (ok.one): id 'ok.one' is used twice" in text
    assert "patterns[0]: not a valid regular expression" in text
    assert "line 15: entries[3] (empty.entry): unknown field 'colour'" in text
    assert "entries[3] (empty.entry): needs at least one term or pattern" in text
    assert len(problems) == 7


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    path.write_text("entries: [unclosed", encoding="utf-8")
    with pytest.raises(LexiconError, match="not valid YAML"):
        load_lexicon(path)
    path.write_text("- just a list", encoding="utf-8")
    with pytest.raises(LexiconError, match="must be a mapping"):
        load_lexicon(path)
    with pytest.raises(LexiconError, match="cannot read"):
        load_lexicon(tmp_path / "missing.yaml")


def test_reload_keeps_the_previous_lexicon_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    path.write_text(GOOD, encoding="utf-8")
    checker = SafetyChecker(lexicon=load_lexicon(path), lexicon_path=path)
    assert checker.check("我真的不想再撑了").crisis
    assert not checker.check("我想自杀").flagged  # the custom file is the whole lexicon

    path.write_text(BAD, encoding="utf-8")
    problems = checker.reload()
    assert len(problems) == 7
    assert checker.check("我真的不想再撑了").crisis  # previous lexicon still in force

    path.write_text(GOOD.replace("不想再撑了", "撑不住了"), encoding="utf-8")
    assert checker.reload() == []
    assert checker.check("我撑不住了").crisis
    assert not checker.check("我真的不想再撑了").flagged


def test_reload_function_returns_previous(tmp_path: Path) -> None:
    previous = load_lexicon()
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    lexicon, problems = reload_lexicon(path, previous)
    assert lexicon is previous and problems


def test_shipped_lexicon_loads_every_category() -> None:
    lexicon = load_lexicon()
    categories = {e.category for e in lexicon.entries}
    assert categories == {"self_harm", "violence", "harassment", "sexual_minors", "illegal"}
    assert lexicon.for_scope("output") and lexicon.for_scope("input")
