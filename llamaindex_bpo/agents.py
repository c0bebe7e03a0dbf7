"""BPO in front of LlamaIndex agents and chat engines.

* :class:`BPOAgent` wraps a ``FunctionAgent``/``ReActAgent`` (any ``BaseWorkflowAgent`` or
  ``AgentWorkflow``): ``user_msg`` is rewritten once before the agent runs.
* :class:`BPOCondensePlusContextChatEngine` rewrites the condensed standalone question.

The original text is kept: a rewritten ``ChatMessage`` carries it in
``additional_kwargs["bpo_original_content"]``, and ``last_result`` holds the full result.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, TextBlock
from llama_index.core.chat_engine import CondensePlusContextChatEngine

from bpo_core import BPOOptimizer, OptimizationResult
from bpo_core.faces import ORIGINAL_KEY, PerCall, resolve_optimizer


def _text(msg: str | ChatMessage) -> str:
    if isinstance(msg, str):
        return msg
    return "".join(b.text for b in msg.blocks if isinstance(b, TextBlock))


def _rebuild(msg: str | ChatMessage, result: OptimizationResult) -> str | ChatMessage:
    if isinstance(msg, str) or not result.changed:
        return result.optimized if isinstance(msg, str) else msg
    # Replace the text blocks by one rewritten block, in the first text block's place;
    # images and other blocks stay where they were.
    blocks: list[Any] = []
    placed = False
    for block in msg.blocks:
        if isinstance(block, TextBlock):
            if not placed:
                blocks.append(TextBlock(text=result.optimized))
                placed = True
        else:
            blocks.append(block)
    return ChatMessage(
        role=msg.role,
        blocks=blocks,
        additional_kwargs={**msg.additional_kwargs, ORIGINAL_KEY: result.original},
    )


class BPOAgent:
    """Rewrite ``user_msg`` with BPO, then run the wrapped LlamaIndex agent.

        agent = BPOAgent(FunctionAgent(tools=[...], llm=llm))
        response = await agent.arun("whats the weather in paris")

    ``run`` mirrors the agent's ``run`` (it returns the agent's handler; the rewrite happens
    before the call, on the calling thread). ``arun`` rewrites in a worker thread, then awaits
    the agent. Chat history, memory and context are passed through untouched.
    """

    def __init__(
        self, agent: Any, optimizer: BPOOptimizer | None = None, *, mode: str | None = None, style: str | None = None
    ):
        if not hasattr(agent, "run"):
            raise TypeError(f"agent must have a run() method, got {type(agent).__name__}")
        self.agent = agent
        self.optimizer = resolve_optimizer(optimizer)
        if style is not None:
            self.optimizer = self.optimizer.with_options(style=style)
        self.mode = mode
        self._last: PerCall[OptimizationResult] = PerCall("bpo-agent-last-result")

    @property
    def last_result(self) -> OptimizationResult | None:
        """The rewrite made by this caller's latest ``run``/``arun`` (overlapping calls each see their own)."""
        return self._last.get()

    def _rewrite(self, user_msg: str | ChatMessage | None) -> str | ChatMessage | None:
        if user_msg is None:
            return None
        result = self.optimizer.rewrite(_text(user_msg), mode=self.mode)
        self._last.set(result)
        return _rebuild(user_msg, result)

    async def _arewrite(self, user_msg: str | ChatMessage | None) -> str | ChatMessage | None:
        if user_msg is None:
            return None
        result = await self.optimizer.arewrite(_text(user_msg), mode=self.mode)
        self._last.set(result)
        return _rebuild(user_msg, result)

    def run(self, user_msg: str | ChatMessage | None = None, **kwargs: Any) -> Any:
        return self.agent.run(user_msg=self._rewrite(user_msg), **kwargs)

    async def arun(self, user_msg: str | ChatMessage | None = None, **kwargs: Any) -> Any:
        return await self.agent.run(user_msg=await self._arewrite(user_msg), **kwargs)

    def __getattr__(self, item: str) -> Any:  # everything else is the agent's
        return getattr(self.agent, item)


class BPOCondensePlusContextChatEngine(CondensePlusContextChatEngine):
    """``CondensePlusContextChatEngine`` whose condensed standalone question is BPO-optimized.

    Build it like the original: ``BPOCondensePlusContextChatEngine.from_defaults(retriever,
    llm=llm, optimizer=BPOOptimizer.default())``. ``last_result`` holds the latest rewrite.
    """

    def __init__(self, *args: Any, optimizer: BPOOptimizer | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bpo = optimizer
        self._last: PerCall[OptimizationResult] = PerCall("bpo-chat-engine-last-result")

    @property
    def last_result(self) -> OptimizationResult | None:
        """The rewrite of this caller's latest condensed question (overlapping chats each see their own)."""
        return self._last.get()

    @classmethod
    def from_defaults(cls, retriever: Any, *args: Any, optimizer: BPOOptimizer | None = None, **kwargs: Any):
        engine = super().from_defaults(retriever, *args, **kwargs)
        engine._bpo = resolve_optimizer(optimizer)
        return engine

    @property
    def bpo_optimizer(self) -> BPOOptimizer:
        if self._bpo is None:
            self._bpo = BPOOptimizer.default()
        return self._bpo

    def _condense_question(self, chat_history: list[ChatMessage], latest_message: str) -> str:
        question = super()._condense_question(chat_history, latest_message)
        result = self.bpo_optimizer.rewrite(question)
        self._last.set(result)
        return result.optimized

    async def _acondense_question(self, chat_history: list[ChatMessage], latest_message: str) -> str:
        question = await super()._acondense_question(chat_history, latest_message)
        result = await self.bpo_optimizer.arewrite(question)
        self._last.set(result)
        return result.optimized


__all__ = ["BPOAgent", "BPOCondensePlusContextChatEngine", "ORIGINAL_KEY"]
