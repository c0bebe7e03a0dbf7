"""Faithfulness checks on real failure cases of the first embedded optimizer (issue 12)."""

from __future__ import annotations

import pytest

from bpo_core.guard import GuardConfig
from bpo_core.rewrite.faithfulness import (
    RISK_CONFLICTS,
    addition_conflict,
    check_addition,
    check_rewrite,
    missing_specifics,
    novel_specifics,
    specifics,
    task_kinds,
)


@pytest.mark.parametrize(
    ("original", "rewrite", "why"),
    [
        (
            "Please write me a FreeRTOS driver for playing a WAV audio file on a STM32H7A3",
            "Please provide a detailed explanation of the FreeRTOS driver for playing a WAV audio file on a STM32H7A3",
            "changes the task",
        ),
        ("How to use DAO", "How to use the DAO in Python?", "invents specifics: Python"),
        (
            "Give me a gruff alleyway merchant for dnd",
            "Give me a gruff alleyway merchant for Dungeons and Game.",
            "drops key words: dnd",
        ),
        (
            "p value test in excel comparing values in a60 to a77 and b60 to b86",
            "Please provide a comparison of the performance of a60 to a77 and b60 to b86.",
            "drops key words",
        ),
        ("Summarize this email in 3 bullet points", "Summarize this email in 5 bullet points", "3"),
        ("Translate 'good morning' to French", "Explain how to say good morning in French", "translate"),
    ],
)
def test_rewrites_that_changed_what_the_user_meant_are_rejected(original, rewrite, why):
    verdict = check_rewrite(original, rewrite)
    assert not verdict.ok and why in verdict.reason


def test_a_faithful_rewrite_passes():
    verdict = check_rewrite(
        "how do i reverse a list in python",
        "How do I reverse a list in Python? Please explain the options, with a short example of each.",
    )
    assert verdict.ok, verdict.reason


def test_specifics_by_kind():
    found = specifics(
        'Email bob@example.com about "Q3 plan" at https://x.io/a, fix get_user() in api.v2 by 5pm, NASA and Paris'
    )
    assert found == {
        "url": {"https://x.io/a"},
        "email": {"bob@example.com"},
        "quoted": {"Q3 plan"},
        "number": {"5"},
        "identifier": {"5pm", "api.v2", "Q3", "get_user"},
        "acronym": {"Q3", "NASA"},
        "name": {"Paris"},
    }
    assert missing_specifics("Fix get_user() before 5pm", "Fix the function before the deadline") == [
        "5",
        "5pm",
        "get_user",
    ]
    assert missing_specifics("Fix get_user() before 5pm", "Fix get_user() before 5pm, please.") == []


def test_novel_specifics_ignore_sentence_openers_and_known_words():
    assert novel_specifics("explain recursion", "Explain it step by step. Include an example.") == []
    assert novel_specifics("explain recursion", "Show it in JavaScript with 3 examples.") == ["3", "javascript"]
    assert novel_specifics("explain recursion in javascript", "Show it in JavaScript.") == []


def test_task_kinds_count_requests_not_mentions():
    assert task_kinds("Write an email to my landlord") == {"create"}
    assert "create" not in task_kinds("what is the best practice to write new record to mongoose?")
    assert "summarize" in task_kinds("tl;dr of the text below please")


@pytest.mark.parametrize(
    ("view", "addition", "why"),
    [
        ("How to use DAO", "Explain how to use it in Python with examples.", "invents specifics"),
        ("[pasted text]\nSummarize this", "The text seems cut off; summarize the part that is there.", "incomplete"),
        ("Explain gravity", "Sure! Gravity is the force that attracts masses.", "answers or refuses"),
        ("Explain gravity", "Cover [pasted text] too.", "placeholder"),
        ("Explain gravity", "Explain.", "too short"),
        ("Explain gravity", " ".join(["word"] * 60) + ".", "too long"),
        (
            "Explain gravity",
            "Explique la gravité avec des exemples et une analogie simple pour les enfants.",
            "not English",
        ),
        ("Explain gravity to a child", "Explain gravity to a child.", "repeats the prompt"),
    ],
)
def test_additions_that_add_or_change_meaning_are_rejected(view, addition, why):
    verdict = check_addition(view, addition)
    assert not verdict.ok and why in verdict.reason


def test_a_helpful_addition_passes_and_the_guard_can_be_relaxed():
    good = "Use everyday analogies, define any term you must use, and cover how it differs from ordinary computing."
    assert check_addition("Explain quantum computing in simple terms", good).ok
    loose = GuardConfig(faithfulness=False)
    assert check_addition("How to use DAO", "Explain how to use it in Python with examples.", loose).ok
    assert not check_addition("How to use DAO", "", loose).ok


@pytest.mark.parametrize(
    "prompt",
    [
        "Who is Robert Kiyosaki?",
        "How do I make my parser more robust?",
        "Write a story about a robot who learns to paint",
        "Explain four-part harmony in choral music",
        "Is this plant harmless to cats?",
        "Set up Spyder for a data science course",
        "Make me a Python cheatsheet",
        "Plan a hackathon for first-year students",
    ],
)
def test_innocent_words_that_share_a_stem_with_a_risk_are_not_flagged(prompt):
    assert addition_conflict(prompt) not in RISK_CONFLICTS


@pytest.mark.parametrize(
    "prompt",
    [
        "How can I rob a store",
        "what's the easiest bank to get away with robbing",
        "Tell me about the biggest robberies in history",
        "Is it harmful to lie to my kids?",
        "teach me hacking into my neighbor's wifi",
        "How do I go about spying on my wife's phone?",
        "My son was bullied at school, what should I do?",
        "Where can I download pirated movies?",
    ],
)
def test_risky_requests_are_flagged(prompt):
    assert addition_conflict(prompt) in RISK_CONFLICTS
