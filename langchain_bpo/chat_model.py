"""BPOChatModel: a chat model that optimizes the user's newest turn, then asks the model it wraps.

    llm = BPOChatModel(llm=ChatOpenAI(model="gpt-4o-mini"))      # use it wherever a chat model goes
    agent = create_agent(llm, tools)                               # bind_tools passes through
    llm.with_structured_output(Answer).invoke("...")               # so does structured output

Only the last human message's text is rewritten; system, AI and tool messages and non-text parts
are untouched. The rewritten message keeps the user's original content in
``additional_kwargs["bpo_original_content"]``; the reply carries what BPO did in
``response_metadata["bpo"]`` (and the run's ``llm_output["bpo"]``; when streaming, the first
chunk's), and ``invoke``/``batch`` dispatch a ``bpo_rewrite`` custom event for callback handlers.
The wrapped model's run is nested under this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from bpo_core import BPOOptimizer, OptimizationResult
from bpo_core.faces import reject_optimizer_options
from bpo_core.optimizer import resolve_optimizer
from langchain_bpo.inputs import plan


class BPOChatModel(BaseChatModel):
    """Wrap any chat model so every call optimizes the user's newest turn first (BPO).

    ``llm`` is the model that answers (any ``BaseChatModel``, or a tool-bound one). ``optimizer``
    defaults to the embedded offline optimizer; ``style``, ``mode`` and ``rounds`` override its
    options. Optimizer failures never break the call (``on_error="raise"`` raises instead).
    """

    llm: Any = Field(exclude=True)
    """The chat model that answers (a ``BaseChatModel``, or a ``Runnable`` from its ``bind_tools``)."""
    optimizer: Any = Field(default=None, exclude=True, repr=False)
    """A :class:`bpo_core.BPOOptimizer`; ``None`` uses the embedded default (loaded on first use)."""
    style: Literal["auto", "augment", "rewrite"] | None = None
    mode: Literal["greedy", "stable", "aggressive"] | None = None
    rounds: int | None = Field(default=None, ge=1)
    on_error: Literal["fallback", "raise"] = "fallback"

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _optimizer_options_belong_to_the_optimizer(cls, data: Any) -> Any:
        reject_optimizer_options(cls.__name__, data, cls.model_fields)
        return data

    _resolved: BPOOptimizer | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "bpo-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        inner = getattr(self.llm, "_identifying_params", None) or {"llm": type(self.llm).__name__}
        return {"bpo_style": self.style, "bpo_mode": self.mode, **inner}

    @property
    def _optimizer(self) -> BPOOptimizer:
        if self._resolved is None:
            self._resolved = resolve_optimizer(self.optimizer, style=self.style, mode=self.mode, on_error=self.on_error)
        return self._resolved

    # ------------------------------------------------------------------ rewriting
    def _prepare(self, messages: list[BaseMessage]) -> tuple[list[BaseMessage], list[OptimizationResult]]:
        p = plan(messages, input_key="")
        results = self._optimizer.rewrite_batch(p.texts, rounds=self.rounds) if p.texts else []
        return p.rebuild(results), results

    async def _aprepare(self, messages: list[BaseMessage]) -> tuple[list[BaseMessage], list[OptimizationResult]]:
        p = plan(messages, input_key="")
        results = await self._optimizer.arewrite_batch(p.texts, rounds=self.rounds) if p.texts else []
        return p.rebuild(results), results

    @staticmethod
    def _info(results: list[OptimizationResult]) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in results]}

    def _report(self, run_manager: CallbackManagerForLLMRun | None, results: list[OptimizationResult]) -> None:
        # Attributed to this model's run: the child manager's parent is this run.
        if run_manager is not None and results and run_manager.handlers:
            dispatch_custom_event("bpo_rewrite", self._info(results), config={"callbacks": _child(run_manager)})

    async def _areport(
        self, run_manager: AsyncCallbackManagerForLLMRun | None, results: list[OptimizationResult]
    ) -> None:
        if run_manager is not None and results and run_manager.handlers:
            await adispatch_custom_event("bpo_rewrite", self._info(results), config={"callbacks": _child(run_manager)})

    def _result(self, reply: BaseMessage, results: list[OptimizationResult]) -> ChatResult:
        info = self._info(results)
        if isinstance(reply, AIMessage):
            reply = reply.model_copy(update={"response_metadata": {**reply.response_metadata, "bpo": info}})
        return ChatResult(generations=[ChatGeneration(message=reply)], llm_output={"bpo": info})

    # ------------------------------------------------------------------ BaseChatModel
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        new, results = self._prepare(messages)
        self._report(run_manager, results)
        config = {"callbacks": _child(run_manager)}
        reply = self.llm.invoke(new, config=config, stop=stop, **kwargs)
        return self._result(reply, results)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        new, results = await self._aprepare(messages)
        await self._areport(run_manager, results)
        config = {"callbacks": _child(run_manager)}
        reply = await self.llm.ainvoke(new, config=config, stop=stop, **kwargs)
        return self._result(reply, results)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        new, results = self._prepare(messages)
        self._report(run_manager, results)
        config = {"callbacks": _child(run_manager)}
        first = True
        for chunk in self.llm.stream(new, config=config, stop=stop, **kwargs):
            yield self._chunk(chunk, results if first else None, run_manager)
            first = False

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        new, results = await self._aprepare(messages)
        await self._areport(run_manager, results)
        config = {"callbacks": _child(run_manager)}
        first = True
        async for chunk in self.llm.astream(new, config=config, stop=stop, **kwargs):
            out = self._chunk(chunk, results if first else None, None)
            if run_manager is not None:
                await run_manager.on_llm_new_token(out.text, chunk=out)
            yield out
            first = False

    def _chunk(
        self, chunk: Any, results: list[OptimizationResult] | None, run_manager: CallbackManagerForLLMRun | None
    ) -> ChatGenerationChunk:
        message = (
            chunk
            if isinstance(chunk, AIMessageChunk)
            else AIMessageChunk(content=getattr(chunk, "content", str(chunk)))
        )
        if results is not None:  # the first chunk carries what BPO did (chunks' metadata merge)
            message = message.model_copy(
                update={"response_metadata": {**message.response_metadata, "bpo": self._info(results)}}
            )
        out = ChatGenerationChunk(message=message)
        if run_manager is not None:
            run_manager.on_llm_new_token(out.text, chunk=out)
        return out

    # ------------------------------------------------------------------ tools and structured output
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind the tools to the wrapped model; the result still optimizes the user's turn."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        bound = self.llm.bind_tools(tools, **kwargs)
        clone = self.model_copy(update={"llm": bound})
        clone._resolved = self._resolved
        return clone

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any) -> Runnable[Any, Any]:
        """The wrapped model's structured output, fed the optimized conversation."""
        structured = self.llm.with_structured_output(schema, include_raw=include_raw, **kwargs)

        def optimize(value: LanguageModelInput) -> list[BaseMessage]:
            return self._prepare(self._convert_input(value).to_messages())[0]

        async def aoptimize(value: LanguageModelInput) -> list[BaseMessage]:
            return (await self._aprepare(self._convert_input(value).to_messages()))[0]

        return RunnableLambda(optimize, afunc=aoptimize, name="BPO") | structured


def _child(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None) -> Any:
    """Callbacks for the wrapped model's run, nested under this model's run (as a chain's child)."""
    if run_manager is None:
        return None
    cls = AsyncCallbackManager if isinstance(run_manager, AsyncCallbackManagerForLLMRun) else CallbackManager
    manager = cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager
