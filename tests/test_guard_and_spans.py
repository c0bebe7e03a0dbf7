"""The drift guard and protected spans (pure logic, plus properties checked with hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bpo_core.guard import GuardConfig, check
from bpo_core.spans import protected_phrases, split_prompt


def test_accepts_a_faithful_rewrite():
    v = check("Give two good examples of customer service.", "Give two specific examples of outstanding customer service.")
    assert v.ok and v.reason is None


def test_rejects_empty_and_answers():
    assert check("Explain gravity.", "  ").reason == "empty rewrite"
    v = check("how can I create a profile on Facebook?", "Sure! To create a Facebook profile, go to facebook.com ...")
    assert not v.ok and "answer" in v.reason


def test_length_filter_with_short_prompt_floor():
    assert "too short" in check("Write a long detailed story about a dragon and a knight", "Story.").reason
    assert check("why exercise", "Explain why regular exercise matters for physical and mental health, with examples.").ok
    long = "Explain why exercise matters " + "and more detail " * 20
    assert "too long" in check("why exercise", long).reason
    assert check("why exercise", long, GuardConfig(max_length_ratio=100)).ok


def test_rejects_dropped_keywords_and_changed_quotes():
    assert "drops key words" in check("Translate the menu of the Italian restaurant", "Write a poem about the sea.").reason
    v = check('Translate "bonjour le monde" into English', "Translate the French phrase bonjour le monde into English")
    assert not v.ok and "quoted" in v.reason


def test_guard_can_be_disabled_but_not_for_empty():
    cfg = GuardConfig(enabled=False)
    assert check("x y z", "completely different", cfg).ok
    assert not check("x y z", "", cfg).ok


def test_split_prompt_layouts():
    s = split_prompt("  Summarize this:\n\nLine one.\nLine two.\n")
    assert (s.prefix, s.instruction, s.separator, s.context) == ("  ", "Summarize this:", "\n\n", "Line one.\nLine two.\n")
    assert s.with_instruction("Summarize this text briefly:") == "  Summarize this text briefly:\n\nLine one.\nLine two.\n"
    one = split_prompt("Just one line  ")
    assert one.instruction == "Just one line" and one.context == "" and one.original == "Just one line  "


def test_protected_phrases():
    assert protected_phrases('Say "hello world" and `rm -rf` now') == ['"hello world"', "`rm -rf`"]


@given(st.text())
def test_split_roundtrip_is_lossless(text):
    s = split_prompt(text)
    assert s.original == text
    assert "\n" not in s.instruction
    assert s.with_instruction(s.instruction) == text


@given(st.text(min_size=1), st.text())
def test_guard_never_raises(original, rewrite):
    v = check(original, rewrite)
    assert isinstance(v.ok, bool) and (v.ok or v.reason)
