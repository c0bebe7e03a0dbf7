"""Deterministic LangChain fake chat models standing in for the paid APIs in pipeline tests.

They are real LangChain chat models (``SimpleChatModel``), so they go through the same wrapping
as ChatOpenAI would. The CLI loads them with specs such as ``pipeline_fakes:Teacher``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

from langchain_core.language_models.chat_models import SimpleChatModel
from langchain_core.messages import BaseMessage

_INSTRUCTION = re.compile(r'^instruction: "(.*?)"\n', re.S)
_ANSWER_A = re.compile(r"\[The Start of Assistant A's Answer\]\n(.*?)\n\[The End of Assistant A's Answer\]", re.S)
_ANSWER_B = re.compile(r"\[The Start of Assistant B's Answer\]\n(.*?)\n\[The End of Assistant B's Answer\]", re.S)

CALLS: dict[str, int] = {}
FLAKY_SEEN: set[str] = set()
_LOCK = threading.Lock()


def count(name: str) -> None:
    with _LOCK:
        CALLS[name] = CALLS.get(name, 0) + 1


class Teacher(SimpleChatModel):
    """Answers the authors' construction prompt in their format; malformed for some instructions.

    With ``malformed_every=k``, instructions whose length in characters is divisible by k get an
    answer without ``Optimized Instruction:`` (chosen by content, so it is deterministic).
    ``BPO_TEST_TEACHER_DELAY`` (seconds) slows each call, for the kill-and-resume test.
    """

    malformed_every: int = 0

    @property
    def _llm_type(self) -> str:
        return "fake-teacher"

    def _call(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        count("teacher")
        delay = float(os.environ.get("BPO_TEST_TEACHER_DELAY", "0"))
        if delay:
            time.sleep(delay)
        prompt = messages[-1].content
        match = _INSTRUCTION.match(prompt)
        assert match, "the teacher must get the authors' construction prompt"
        instruction = match.group(1)
        if self.malformed_every and len(instruction) % self.malformed_every == 0:
            return "I think the good response is better because it is more detailed."
        return (
            "Detailed Comparison Result: The good response is more helpful and harmless.\n"
            f'Optimized Instruction: "{instruction} Please give a clear, detailed and safe answer." [END]'
        )


class FlakyTeacher(Teacher):
    """Fails the first call for every instruction (a transient API error), then answers."""

    def _call(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        key = messages[-1].content
        with _LOCK:
            first = key not in FLAKY_SEEN
            FLAKY_SEEN.add(key)
        if first:
            count("flaky-failure")
            raise ConnectionError("503 Service Unavailable")
        return super()._call(messages, stop, run_manager, **kwargs)


class Target(SimpleChatModel):
    """Answers with as many words as the prompt has: a longer, more specific prompt gets more."""

    @property
    def _llm_type(self) -> str:
        return "fake-target"

    def _call(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        count("target")
        words = messages[-1].content.split()
        return "Here is my answer: " + " ".join(w.lower().strip("?.,!") for w in words)


class LengthJudge(SimpleChatModel):
    """Prefers the longer answer and ends with the pair-v2 verdict format."""

    @property
    def _llm_type(self) -> str:
        return "fake-length-judge"

    def _call(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        count("judge")
        assert messages[0].content.startswith("Please act as an impartial judge")
        user = messages[-1].content
        a, b = _ANSWER_A.search(user).group(1), _ANSWER_B.search(user).group(1)
        verdict = "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"
        return f"Assistant answers differ in detail.\n\n{verdict}"


class FirstJudge(SimpleChatModel):
    """A maximally position-biased judge: always prefers the first answer shown."""

    @property
    def _llm_type(self) -> str:
        return "fake-first-judge"

    def _call(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        count("judge")
        return "Assistant A is better.\n\n[[A]]"


class Rewriter(SimpleChatModel):
    """A chat-model optimizer: turns the last 'Instruction to optimize' into a fuller request."""

    @property
    def _llm_type(self) -> str:
        return "fake-rewriter"

    def _call(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        count("rewriter")
        prompt = messages[-1].content.split("Instruction to optimize:\n", 1)[1]
        return f"{prompt.rstrip('?.!')}? Please explain step by step with examples."


def malformed_teacher() -> Teacher:
    return Teacher(malformed_every=3)


class BrokenTeacher(SimpleChatModel):
    """An API that is down."""

    @property
    def _llm_type(self) -> str:
        return "fake-broken"

    def _call(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
        count("broken")
        raise ConnectionError("connection refused")
