"""BPOMiddleware: optimize the user's newest turn before a LangChain 1.x agent starts.

    agent = create_agent(model, tools, middleware=[BPOMiddleware()])

``before_agent`` runs once per invocation, before the model/tool loop, so the prompt is
rewritten once, not on every tool round trip. System prompts, AI messages, tool calls and tool
results are never touched.
"""

from __future__ import annotations

from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState
from langchain_core.messages import BaseMessage

from bpo_core import BPOOptimizer, OptimizationResult
from bpo_core.faces import ORIGINAL_KEY, resolve_optimizer
from langchain_bpo.inputs import Plan, plan


class BPOMiddleware(AgentMiddleware):
    """Rewrite the newest human message with a BPO optimizer, once per agent invocation.

    The rewritten message keeps its id (so the message list's reducer replaces it in place) and
    carries the user's original content in ``additional_kwargs["bpo_original_content"]``.
    A message that already carries that key is not rewritten again.
    """

    def __init__(
        self,
        optimizer: BPOOptimizer | None = None,
        *,
        mode: str | None = None,
        rounds: int | None = None,
        style: str | None = None,
        history_turns: int = 0,
    ):
        """``history_turns``: give the optimizer this many earlier human/AI turns as context;
        ``style``: ``"augment"`` or ``"rewrite"`` (``None``: the optimizer's own setting)."""
        super().__init__()
        self.history_turns = history_turns
        self.optimizer = resolve_optimizer(optimizer)
        if style is not None:
            self.optimizer = self.optimizer.with_options(style=style)
        self.mode = mode
        self.rounds = rounds

    @property
    def name(self) -> str:
        return "BPOMiddleware"

    def _plan(self, state: AgentState) -> tuple[Plan, list[BaseMessage]] | None:
        messages = list(state.get("messages") or [])
        humans = [m for m in messages if m.type == "human"]
        if not humans or ORIGINAL_KEY in humans[-1].additional_kwargs:
            return None
        return plan(messages, input_key=""), messages

    def _update(self, messages: list[BaseMessage], new: list[BaseMessage]) -> dict[str, Any] | None:
        changed = [n for o, n in zip(messages, new) if o is not n]
        return {"messages": changed} if changed else None

    def _optimizer_for(self, messages: list[BaseMessage]) -> BPOOptimizer:
        if not self.history_turns:
            return self.optimizer
        last_human = max(i for i, m in enumerate(messages) if m.type == "human")
        earlier = [(m.type, m.text) for m in messages[:last_human] if m.type in ("human", "ai") and m.text]
        turns = earlier[-self.history_turns :]
        return self.optimizer.with_options(fmt=self.optimizer.fmt.with_history(turns)) if turns else self.optimizer

    def before_agent(self, state: AgentState, runtime: Any) -> dict[str, Any] | None:
        planned = self._plan(state)
        if planned is None:
            return None
        p, messages = planned
        optimizer = self._optimizer_for(messages)
        results: list[OptimizationResult] = optimizer.rewrite_batch(p.texts, mode=self.mode, rounds=self.rounds)
        return self._update(messages, p.rebuild(results))

    async def abefore_agent(self, state: AgentState, runtime: Any) -> dict[str, Any] | None:
        planned = self._plan(state)
        if planned is None:
            return None
        p, messages = planned
        optimizer = self._optimizer_for(messages)
        results = await optimizer.arewrite_batch(p.texts, mode=self.mode, rounds=self.rounds)
        return self._update(messages, p.rebuild(results))
