"""``provider:model`` chat-model specs for the ``bpo`` CLI, built with LangChain's ``init_chat_model``.

Registered as a ``bpo_prompt.chat_models`` entry point, so ``bpo construct --teacher
openai:gpt-4o-mini`` or ``bpo eval --judge anthropic:claude-sonnet-4-5`` work when the provider's
LangChain package (``langchain-openai``, ``langchain-anthropic``, ...) is installed.
"""

from __future__ import annotations

from typing import Any


def init_from_spec(spec: str) -> Any:
    """Build a LangChain chat model from ``provider:model`` with the provider's defaults.

    For other settings (temperature, base URL, ...) point the CLI at a ``module:attribute`` that builds
    the model instead.
    """
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "provider:model specs need the 'langchain' package: pip install 'bpo-prompt[agents]'"
        ) from exc
    return init_chat_model(spec)
