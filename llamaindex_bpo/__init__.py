"""LlamaIndex face of bpo-prompt: an LLM wrapper, a query transform, an agent wrapper and a chat engine."""

from llamaindex_bpo.agents import BPOAgent, BPOCondensePlusContextChatEngine
from llamaindex_bpo.chat import LlamaIndexChat, as_chat_model
from llamaindex_bpo.llm import BPOLLM, BPORewriteEvent
from llamaindex_bpo.query_transform import BPOQueryTransform

__all__ = [
    "BPOLLM",
    "BPORewriteEvent",
    "BPOQueryTransform",
    "BPOAgent",
    "BPOCondensePlusContextChatEngine",
    "as_chat_model",
    "LlamaIndexChat",
]
