"""Finding the user's words in LangChain inputs and putting rewrites back.

Only the text a user wrote is rewritten: the last human message of a conversation (its text
parts only; images and other parts stay), a plain string, a string prompt value, or one key of
a dict. Everything else passes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue

from bpo_core import InvalidPromptError, OptimizationResult
from bpo_core.faces import ORIGINAL_KEY

#: Key under a rewritten message's ``additional_kwargs`` holding the user's original content.


@dataclass
class Plan:
    """The texts to optimize in one input, and how to rebuild the input from their results."""

    texts: list[str]
    rebuild: Callable[[list[OptimizationResult]], Any]


def plan(value: Any, input_key: str) -> Plan:
    """Build the rewrite plan of one input, or raise :class:`InvalidPromptError` naming the problem."""
    if isinstance(value, str):
        return Plan([value], lambda r: r[0].optimized)
    if isinstance(value, StringPromptValue):
        return Plan([value.text], lambda r: StringPromptValue(text=r[0].optimized))
    if isinstance(value, ChatPromptValue):
        inner = _plan_messages(list(value.messages))
        return Plan(inner.texts, lambda r: ChatPromptValue(messages=inner.rebuild(r)))
    if isinstance(value, dict):
        return _plan_dict(value, input_key)
    if isinstance(value, Sequence) and value and all(isinstance(m, BaseMessage) for m in value):
        return _plan_messages(list(value))
    if isinstance(value, Sequence) and not value:
        return Plan([], lambda r: value)
    raise InvalidPromptError(
        "BPORunnable input must be a str, a PromptValue, a list of messages or a dict; "
        f"got {type(value).__name__}: {value!r:.80}"
    )


def _plan_dict(value: dict[str, Any], input_key: str) -> Plan:
    if input_key not in value:
        raise InvalidPromptError(
            f"BPORunnable got a dict without the key {input_key!r} (keys: {sorted(value)}); "
            f"set input_key= to the key holding the user's prompt"
        )
    text = value[input_key]
    if not isinstance(text, str):
        raise InvalidPromptError(f"BPORunnable: value of {input_key!r} must be a str, got {type(text).__name__}")
    return Plan([text], lambda r: {**value, input_key: r[0].optimized})


def _plan_messages(messages: list[BaseMessage]) -> Plan:
    index = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].type == "human"), None)
    if index is None:
        return Plan([], lambda r: messages)
    message = messages[index]
    content = message.content
    if isinstance(content, str):
        slots = [None]
        texts = [content]
    else:
        slots = [i for i, part in enumerate(content) if _text_of(part) is not None]
        texts = [_text_of(content[i]) for i in slots]  # type: ignore[misc]

    def rebuild(results: list[OptimizationResult]) -> list[BaseMessage]:
        if not any(r.changed for r in results):
            return messages
        if isinstance(content, str):
            new_content: Any = results[0].optimized
        else:
            new_content = list(content)
            for slot, res in zip(slots, results):
                new_content[slot] = _with_text(content[slot], res.optimized)  # type: ignore[index]
        kwargs = {**message.additional_kwargs, ORIGINAL_KEY: content}
        out = list(messages)
        out[index] = message.model_copy(update={"content": new_content, "additional_kwargs": kwargs})
        return out

    return Plan(texts, rebuild)


def _text_of(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    return None


def _with_text(part: Any, text: str) -> Any:
    return text if isinstance(part, str) else {**part, "text": text}
