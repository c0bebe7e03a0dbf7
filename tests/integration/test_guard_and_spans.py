"""The drift guard, segmentation and assembly (pure logic, plus properties checked with hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bpo_core.guard import GuardConfig, check, protected_phrases
from bpo_core.rewrite.assemble import append_addition, replace_instruction
from bpo_core.rewrite.segment import segment


def test_accepts_a_faithful_rewrite():
    v = check(
        "Give two good examples of customer service.", "Give two specific examples of outstanding customer service."
    )
    assert v.ok and v.reason is None


def test_rejects_empty_and_answers():
    assert check("Explain gravity.", "  ").reason == "empty rewrite"
    v = check("how can I create a profile on Facebook?", "Sure! To create a Facebook profile, go to facebook.com ...")
    assert not v.ok and "answer" in v.reason


def test_length_filter_with_short_prompt_floor():
    assert "too short" in check("Write a long detailed story about a dragon and a knight", "Story.").reason
    assert check(
        "why exercise", "Explain why regular exercise matters for physical and mental health, with examples."
    ).ok
    long = "Explain why exercise matters " + "and more detail " * 20
    assert "too long" in check("why exercise", long).reason
    assert check("why exercise", long, GuardConfig(max_length_ratio=100)).ok


def test_rejects_dropped_keywords_and_changed_quotes():
    assert (
        "drops key words" in check("Translate the menu of the Italian restaurant", "Write a poem about the sea.").reason
    )
    v = check('Translate "bonjour le monde" into English', "Translate the French phrase bonjour le monde into English")
    assert not v.ok and "quoted" in v.reason


def test_guard_can_be_disabled_but_not_for_empty():
    cfg = GuardConfig(enabled=False)
    assert check("x y z", "completely different", cfg).ok
    assert not check("x y z", "", cfg).ok


def test_segment_finds_material_after_before_and_around_the_instruction():
    after = segment("Summarize this text:\n\nThe cat sat on the mat. It was a sunny day.\nThe dog barked at the cat.\n")
    assert after.instruction == "Summarize this text:"
    assert after.materials == ["The cat sat on the mat. It was a sunny day.\nThe dog barked at the cat."]
    assert after.view() == "Summarize this text:\n\n[pasted text]"
    code = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))"
    before = segment(f"```python\n{code}\n```\n\nWhat does this code print?")
    assert (
        before.instruction == "What does this code print?"
        and before.view() == "[pasted code]\n\nWhat does this code print?"
    )
    plain = segment("how can I create a profile on Facebook?")
    assert not plain.has_material and plain.view() == "how can I create a profile on Facebook?"


def test_rewrite_assembly_puts_material_back_byte_for_byte():
    prompt = "  Fix the bug:\n\n```js\nconst x = 1;;\nconsole.log(x)\n```\n"
    seg = segment(prompt)
    assert seg.materials == ["```js\nconst x = 1;;\nconsole.log(x)\n```"]
    new = replace_instruction(seg, "Find and fix the bug in this code:\n[pasted code]")
    assert new == "  Find and fix the bug in this code:\n```js\nconst x = 1;;\nconsole.log(x)\n```\n"
    assert replace_instruction(seg, "Fix the bug.") is None  # the material's place was lost
    assert replace_instruction(seg, "[pasted code] and [pasted code]") is None


def test_addition_keeps_the_prompt_verbatim():
    assert append_addition("Explain gravity.", "Use an example.") == "Explain gravity.\n\nUse an example."
    assert append_addition("Explain gravity.\n", "Use an example.") == "Explain gravity.\n\nUse an example."
    assert append_addition("Explain gravity.\n\n", "Use an example.") == "Explain gravity.\n\nUse an example."


def test_protected_phrases():
    assert protected_phrases('Say "hello world" and `rm -rf` now') == ['"hello world"', "`rm -rf`"]


@given(st.text().filter(lambda t: "[pasted" not in t))
def test_segmentation_roundtrip_is_lossless(text):
    seg = segment(text)
    assert [(a.end, b.start) for a, b in zip(seg.spans, seg.spans[1:])] == [(a.end, a.end) for a in seg.spans[:-1]]
    assert seg.spans[0].start == 0 and seg.spans[-1].end == len(text)
    assert replace_instruction(seg, seg.view()) == text
    assert all(m == m.strip() and m in text for m in seg.materials)


@given(st.text(min_size=1), st.text())
def test_guard_never_raises(original, rewrite):
    v = check(original, rewrite)
    assert isinstance(v.ok, bool) and (v.ok or v.reason)
