"""LangChain face of bpo-prompt: ``prompt | BPORunnable() | llm``, ``BPOChatModel(llm=...)`` and ``BPOMiddleware`` for agents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_bpo.chat_model import BPOChatModel
from langchain_bpo.inputs import ORIGINAL_KEY
from langchain_bpo.runnable import BPORunnable

if TYPE_CHECKING:
    from langchain_bpo.middleware import BPOMiddleware

__all__ = ["BPORunnable", "BPOChatModel", "BPOMiddleware", "ORIGINAL_KEY"]


def __getattr__(name: str) -> Any:
    # BPOMiddleware needs the `langchain` package (extra [agents]); import it only when asked.
    if name == "BPOMiddleware":
        from langchain_bpo.middleware import BPOMiddleware

        return BPOMiddleware
    raise AttributeError(name)
