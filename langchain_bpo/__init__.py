"""LangChain face of bpo-prompt: ``prompt | BPORunnable() | llm``."""

from langchain_bpo.inputs import ORIGINAL_KEY
from langchain_bpo.runnable import BPORunnable

__all__ = ["BPORunnable", "ORIGINAL_KEY"]
