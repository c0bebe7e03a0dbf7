"""BPOLLM: a LlamaIndex ``LLM`` that optimizes the user's words, then asks the LLM it wraps.

    Settings.llm = BPOLLM(llm=OpenAI(model="gpt-4o-mini"))       # every engine and agent now uses it
    index.as_query_engine().query("why exercise")                  # only query_str is optimized

What is rewritten, and what never is:

* ``chat``/``achat``/``stream_chat``/``astream_chat``: the text of the last user message (images and
  other blocks, system, assistant and tool messages untouched);
* ``predict``/``apredict``/``stream``/``astream`` (how query engines and synthesizers call the LLM):
  only the template variable ``query_key`` (``query_str``), whether passed as an argument or
  partially formatted into the template; retrieved context, chat history and tool descriptions
  are other variables and stay as they are;
* ``complete`` and friends pass through (an engine-built completion prompt holds context the
  optimizer must not touch); ``optimize_complete=True`` rewrites the whole prompt.

What BPO did: ``result_for(text)`` returns the :class:`~bpo_core.OptimizationResult` of a text it
optimized; chat responses carry it in ``additional_kwargs["bpo"]``; each rewrite emits a
:class:`BPORewriteEvent` to LlamaIndex instrumentation (``bpo.original``, ``bpo.optimized``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.types import TokenAsyncGen, TokenGen
from pydantic import Field, PrivateAttr

from bpo_core import BPOOptimizer, OptimizationResult
from bpo_core.cache import LRUCache
from bpo_core.optimizer import resolve_optimizer

dispatcher = get_dispatcher(__name__)


class BPORewriteEvent(BaseEvent):
    """One prompt optimized by BPO (seen by LlamaIndex event handlers and tracing integrations)."""

    original: str
    optimized: str
    fell_back: bool
    reason: str | None = None
    style: str | None = None

    @classmethod
    def class_name(cls) -> str:
        return "BPORewriteEvent"

    def metadata(self) -> dict[str, Any]:
        """The ``bpo.*`` keys tracing integrations show."""
        return {f"bpo.{k}": getattr(self, k) for k in ("original", "optimized", "fell_back", "reason", "style")}


class BPOLLM(LLM):
    """Wrap any LlamaIndex LLM so the user's words are BPO-optimized first (see the module docstring)."""

    llm: LLM = Field(description="The LLM that answers.")
    query_key: str = Field(default="query_str", description="The template variable holding the user's query.")
    optimize_complete: bool = Field(default=False, description="Also rewrite whole completion prompts.")
    style: str | None = Field(default=None, description="'augment' or 'rewrite' (None: the optimizer's own).")

    _optimizer: BPOOptimizer = PrivateAttr()
    _results: LRUCache = PrivateAttr()

    def __init__(self, llm: LLM, optimizer: BPOOptimizer | None = None, **kwargs: Any) -> None:
        super().__init__(llm=llm, **kwargs)
        self._optimizer = resolve_optimizer(optimizer, style=self.style)
        self._results = LRUCache(maxsize=512)

    @classmethod
    def class_name(cls) -> str:
        return "BPOLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    @property
    def optimizer(self) -> BPOOptimizer:
        return self._optimizer

    def result_for(self, text: str) -> OptimizationResult | None:
        """What BPO did with ``text`` (the user's original words), if it optimized them."""
        return self._results.get(text)

    # ------------------------------------------------------------------ rewriting
    def _record(self, result: OptimizationResult) -> str:
        self._results.put(result.original, result)
        dispatcher.event(
            BPORewriteEvent(
                original=result.original,
                optimized=result.optimized,
                fell_back=result.fell_back,
                reason=result.reason,
                style=result.style,
            )
        )
        return result.optimized

    def _optimize(self, text: str) -> str:
        return self._record(self._optimizer.rewrite(text))

    async def _aoptimize(self, text: str) -> str:
        return self._record(await self._optimizer.arewrite(text))

    @staticmethod
    def _last_user(messages: Sequence[ChatMessage]) -> int | None:
        return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == MessageRole.USER), None)

    @staticmethod
    def _replace_text(messages: Sequence[ChatMessage], index: int, new: list[str]) -> list[ChatMessage]:
        message = messages[index]
        texts = iter(new)
        blocks = [TextBlock(text=next(texts)) if isinstance(b, TextBlock) else b for b in message.blocks]
        out = list(messages)
        kwargs = {**message.additional_kwargs, "bpo_original_content": message.content}
        out[index] = message.model_copy(update={"blocks": blocks, "additional_kwargs": kwargs})
        return out

    def _user_texts(self, messages: Sequence[ChatMessage]) -> tuple[int | None, list[str]]:
        """The last user message's index and its text blocks."""
        index = self._last_user(messages)
        if index is None:
            return None, []
        return index, [b.text for b in messages[index].blocks if isinstance(b, TextBlock)]

    def _apply(
        self, messages: Sequence[ChatMessage], index: int | None, results: list[OptimizationResult]
    ) -> tuple[list[ChatMessage], list[OptimizationResult]]:
        for r in results:
            self._record(r)
        if index is None or not any(r.changed for r in results):
            return list(messages), results
        return self._replace_text(messages, index, [r.optimized for r in results]), results

    def _chat_messages(self, messages: Sequence[ChatMessage]) -> tuple[list[ChatMessage], list[OptimizationResult]]:
        index, texts = self._user_texts(messages)
        return self._apply(messages, index, self._optimizer.rewrite_batch(texts) if texts else [])

    async def _achat_messages(
        self, messages: Sequence[ChatMessage]
    ) -> tuple[list[ChatMessage], list[OptimizationResult]]:
        index, texts = self._user_texts(messages)
        return self._apply(messages, index, await self._optimizer.arewrite_batch(texts) if texts else [])

    @staticmethod
    def _tag(response: ChatResponse, results: list[OptimizationResult]) -> ChatResponse:
        if results:
            response.additional_kwargs["bpo"] = [r.to_dict() for r in results]
        return response

    def _query(self, prompt: BasePromptTemplate, args: dict[str, Any]) -> str | None:
        """The user's query: the ``query_key`` argument, or the value partially formatted into ``prompt``."""
        value = args.get(self.query_key, (getattr(prompt, "kwargs", None) or {}).get(self.query_key))
        return value if isinstance(value, str) else None

    def _with_query(
        self, prompt: BasePromptTemplate, args: dict[str, Any], new: str
    ) -> tuple[BasePromptTemplate, dict[str, Any]]:
        if self.query_key in args:
            return prompt, {**args, self.query_key: new}
        return prompt.partial_format(**{self.query_key: new}), args

    # ------------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        new, results = self._chat_messages(messages)
        return self._tag(self.llm.chat(new, **kwargs), results)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        new, results = await self._achat_messages(messages)
        return self._tag(await self.llm.achat(new, **kwargs), results)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        new, _ = self._chat_messages(messages)
        return self.llm.stream_chat(new, **kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        new, _ = await self._achat_messages(messages)
        return await self.llm.astream_chat(new, **kwargs)

    # ------------------------------------------------------------------ completion (pass-through by default)
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.llm.complete(
            self._optimize(prompt) if self.optimize_complete else prompt, formatted=formatted, **kwargs
        )

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        text = await self._aoptimize(prompt) if self.optimize_complete else prompt
        return await self.llm.acomplete(text, formatted=formatted, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._optimize(prompt) if self.optimize_complete else prompt
        return self.llm.stream_complete(text, formatted=formatted, **kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        text = await self._aoptimize(prompt) if self.optimize_complete else prompt
        return await self.llm.astream_complete(text, formatted=formatted, **kwargs)

    # ------------------------------------------------------------------ templates (query engines)
    def predict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        query = self._query(prompt, prompt_args)
        if query is not None:
            prompt, prompt_args = self._with_query(prompt, prompt_args, self._optimize(query))
        return self.llm.predict(prompt, **prompt_args)

    async def apredict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        query = self._query(prompt, prompt_args)
        if query is not None:
            prompt, prompt_args = self._with_query(prompt, prompt_args, await self._aoptimize(query))
        return await self.llm.apredict(prompt, **prompt_args)

    def stream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> TokenGen:
        query = self._query(prompt, prompt_args)
        if query is not None:
            prompt, prompt_args = self._with_query(prompt, prompt_args, self._optimize(query))
        return self.llm.stream(prompt, **prompt_args)

    async def astream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> TokenAsyncGen:
        query = self._query(prompt, prompt_args)
        if query is not None:
            prompt, prompt_args = self._with_query(prompt, prompt_args, await self._aoptimize(query))
        return await self.llm.astream(prompt, **prompt_args)
