"""Talking to any chat model (LangChain, LlamaIndex, a plain function) without importing a framework.

The data-construction teacher, the evaluation target and judge, and the chat-model optimizer all
need "send these messages, get text back". :func:`as_chat_model` turns what a user has into a
:class:`ChatModel`:

* a LangChain chat model or any Runnable that takes a message list (duck-typed on
  ``invoke``/``ainvoke``; messages go in as ``(role, content)`` tuples, which LangChain accepts);
* a LlamaIndex LLM, after ``llamaindex_bpo.as_chat_model(llm)``;
* a function ``fn(messages) -> str`` (sync or async), messages as ``(role, content)`` tuples.

:func:`resolve_chat_model` turns a command-line spec into one (``module:attribute``, a file
``path.py:attribute``, or ``provider:model`` handled by an installed plugin such as
``langchain_bpo``, which uses LangChain's ``init_chat_model``).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

#: One chat message: ``(role, content)`` with role ``"system"``, ``"user"`` or ``"assistant"``.
Message = tuple[str, str]

#: Entry-point group for plugins that build chat models from ``provider:model`` specs.
RESOLVER_GROUP = "bpo_prompt.chat_models"


@runtime_checkable
class ChatModel(Protocol):
    """Minimal chat interface the pipeline needs."""

    #: Identifies the model (reports, cache keys).
    name: str

    def complete(self, messages: Sequence[Message]) -> str:
        """Answer ``messages``; return the reply text."""

    async def acomplete(self, messages: Sequence[Message]) -> str:
        """Async :meth:`complete`."""


def message_text(reply: Any) -> str:
    """Text of a chat reply: a str, or a message whose ``content`` is a str or a list of parts."""
    if isinstance(reply, str):
        return reply
    content = getattr(reply, "content", reply)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
        return "".join(parts)
    message = getattr(reply, "message", None)  # LlamaIndex ChatResponse
    if message is not None:
        return message_text(message)
    raise TypeError(f"cannot read text from a chat reply of type {type(reply).__name__}")


def model_name(obj: Any) -> str:
    """A readable id for a model object (its model name when it has one)."""
    for attr in ("model_name", "model", "model_id", "name"):
        value = getattr(obj, attr, None)
        if isinstance(value, str) and value:
            return f"{type(obj).__name__}:{value}"
    return type(obj).__name__


class LangChainChat:
    """A LangChain chat model (or message-taking Runnable) as a :class:`ChatModel`."""

    def __init__(self, runnable: Any, name: str | None = None) -> None:
        self.runnable = runnable
        self.name = name or model_name(runnable)
        self._sync_only = False

    def complete(self, messages: Sequence[Message]) -> str:
        return message_text(self.runnable.invoke(list(messages)))

    async def acomplete(self, messages: Sequence[Message]) -> str:
        if not self._sync_only:
            try:
                return message_text(await self.runnable.ainvoke(list(messages)))
            except NotImplementedError:
                # Some models (e.g. HuggingFacePipeline) have no async path: use a worker thread.
                self._sync_only = True
        return message_text(await asyncio.to_thread(self.runnable.invoke, list(messages)))


class FunctionChat:
    """A function ``fn(messages) -> str`` (sync or async) as a :class:`ChatModel`."""

    def __init__(self, fn: Callable[[list[Message]], str | Awaitable[str]], name: str | None = None) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__qualname__", type(fn).__name__))
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)

    def complete(self, messages: Sequence[Message]) -> str:
        if self._is_async:
            return message_text(asyncio.run(self.fn(list(messages))))  # type: ignore[arg-type]
        return message_text(self.fn(list(messages)))

    async def acomplete(self, messages: Sequence[Message]) -> str:
        if self._is_async:
            return message_text(await self.fn(list(messages)))  # type: ignore[misc]
        return message_text(await asyncio.to_thread(self.fn, list(messages)))


def as_chat_model(obj: Any, name: str | None = None) -> ChatModel:
    """Wrap a LangChain chat model, a :class:`ChatModel` or a function as a :class:`ChatModel`."""
    if hasattr(obj, "invoke") and hasattr(obj, "ainvoke"):
        return LangChainChat(obj, name)
    if hasattr(obj, "chat") and hasattr(obj, "achat") and hasattr(obj, "metadata"):
        raise TypeError("this looks like a LlamaIndex LLM; wrap it with llamaindex_bpo.as_chat_model(llm) first")
    if isinstance(obj, ChatModel):
        return obj
    if callable(obj):
        return FunctionChat(obj, name)
    raise TypeError(
        f"expected a chat model (LangChain chat model, llamaindex_bpo.as_chat_model(llm), or a function "
        f"messages -> str), got {type(obj).__name__}"
    )


def resolve_chat_model(spec: str) -> ChatModel:
    """Build a chat model from a spec.

    * ``package.module:attribute`` or ``path/to/file.py:attribute``: the attribute is a chat model,
      or a zero-argument factory (a function or class) that returns one;
    * ``provider:model`` (``openai:gpt-4o-mini``, ``anthropic:claude-sonnet-4-5``, ``ollama:llama3``):
      built by a plugin registered under the ``bpo_prompt.chat_models`` entry point
      (``langchain_bpo`` registers one that calls LangChain's ``init_chat_model``).
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"chat model spec must look like 'module:attribute' or 'provider:model', got {spec!r}")
    obj = _import_spec(spec)
    if obj is None:
        obj = _plugin_model(spec)
    return as_chat_model(obj, name=spec)


def _import_spec(spec: str) -> Any | None:
    """The object named by ``module:attr`` / ``file.py:attr``; ``None`` if the spec is not one."""
    where, _, attr = spec.rpartition(":")
    if not all(part.isidentifier() for part in attr.split(".")):
        return None
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"chat model spec {spec!r}: no such file {path}")
        module_name = f"_bpo_spec_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        if not all(part.isidentifier() for part in where.split(".")):
            return None
        try:
            module = importlib.import_module(where)
        except ImportError:
            return None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    if inspect.isclass(obj) or (inspect.isfunction(obj) and not _takes_messages(obj)):
        obj = obj()
    return obj


def _takes_messages(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` wants an argument (then it is a chat function, not a factory)."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return bool(params)


def _plugin_model(spec: str) -> Any:
    from importlib.metadata import entry_points

    plugins = list(entry_points(group=RESOLVER_GROUP))
    errors = []
    for plugin in plugins:
        try:
            resolver = plugin.load()
            model = resolver(spec)
        except Exception as exc:  # a plugin that cannot build it says why
            errors.append(f"{plugin.name}: {exc}")
            continue
        if model is not None:
            return model
    hint = "; ".join(errors) if errors else "no chat-model plugin is installed (pip install 'bpo-prompt[agents]')"
    raise ValueError(f"cannot build a chat model from {spec!r}: {hint}")
