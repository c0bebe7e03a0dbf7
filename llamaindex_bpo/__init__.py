"""LlamaIndex face of bpo-prompt: a query transform, an agent wrapper and a chat engine."""

from llamaindex_bpo.agents import BPOAgent, BPOCondensePlusContextChatEngine
from llamaindex_bpo.chat import LlamaIndexChat, as_chat_model
from llamaindex_bpo.query_transform import BPOQueryTransform

__all__ = ["BPOQueryTransform", "BPOAgent", "BPOCondensePlusContextChatEngine", "as_chat_model", "LlamaIndexChat"]
