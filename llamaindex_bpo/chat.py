"""A LlamaIndex LLM as a ``bpo_core`` chat model: the optimizer, teacher, target or judge.

>>> from llamaindex_bpo import as_chat_model
>>> from bpo_core import BPOOptimizer
>>> optimizer = BPOOptimizer.from_chat_model(as_chat_model(Settings.llm))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import LLM

from bpo_core.chat import Message, message_text, model_name

_ROLES = {"system": MessageRole.SYSTEM, "user": MessageRole.USER, "assistant": MessageRole.ASSISTANT}


class LlamaIndexChat:
    """Sends ``(role, content)`` messages through ``llm.chat``/``llm.achat``."""

    def __init__(self, llm: LLM, name: str | None = None) -> None:
        if not isinstance(llm, LLM):
            raise TypeError(f"expected a LlamaIndex LLM, got {type(llm).__name__}")
        self.llm = llm
        self.name = name or model_name(llm)

    @staticmethod
    def _messages(messages: Sequence[Message]) -> list[ChatMessage]:
        out = []
        for role, content in messages:
            if role not in _ROLES:
                raise ValueError(f"unknown chat role {role!r}; expected system, user or assistant")
            out.append(ChatMessage(role=_ROLES[role], content=content))
        return out

    def complete(self, messages: Sequence[Message]) -> str:
        return message_text(self.llm.chat(self._messages(messages)).message.content or "")

    async def acomplete(self, messages: Sequence[Message]) -> str:
        return message_text((await self.llm.achat(self._messages(messages))).message.content or "")


def as_chat_model(llm: LLM, name: str | None = None) -> LlamaIndexChat:
    """Wrap a LlamaIndex LLM for ``BPOOptimizer.from_chat_model`` and the construct/eval pipeline."""
    return LlamaIndexChat(llm, name)
