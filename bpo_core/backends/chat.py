"""A chat model as the optimizer: the zero-training BPO path for API users.

A BPO meta-prompt (the rules of the authors' data-construction prompt) is the system message, a
few real BPO pairs are example turns, and the user's instruction is the last turn. The optimizer
around this backend still does everything else: protected context, the drift guard, caching,
rounds, fallback.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bpo_core.chat import ChatModel, Message
from bpo_core.backends import estimate_tokens
from bpo_core.errors import GenerationError
from bpo_core.formats import ChatFormat, PromptFormat
from bpo_core.generation import GenerationSettings
from bpo_core.pipeline.policy import CallPolicy, retry_sync

#: System message of the chat-model optimizer (the rules of the authors' construction prompt).
CHAT_OPTIMIZER_SYSTEM = """You are an expert prompt engineer. Rewrite the user's instruction so that an AI assistant gives a better response: correct (follows the instruction and is accurate), helpful (depth, creativity, coherence) and harmless.

Pay attention to:
1. Don't forget any information in the original instruction; keep its meaning and the user's intent.
2. Don't add detailed content constraints that the instruction does not mention, unless in the form of examples.
3. If the instruction contains any safety issues, rewrite it to be completely harmless and safe under the same topic.
4. Keep quoted text, code, names and numbers exactly as they are.
5. Never answer the instruction. Reply with the optimized instruction only, with no preface or explanation."""

#: How each instruction is put to the chat model (examples and the real one alike).
USER_TEMPLATE = "Instruction to optimize:\n{prompt}"

FEWSHOT_PATH = Path(__file__).resolve().parent.parent / "data" / "bpo_fewshot.json"


def default_examples() -> list[tuple[str, str]]:
    """Five real (prompt, optimized prompt) pairs from the BPO authors' data (not the test split)."""
    records = json.loads(FEWSHOT_PATH.read_text(encoding="utf-8"))
    return [(r["prompt"], r["optimized_prompt"]) for r in records]


class ChatBackend:
    """Backend that asks a chat model for each rewrite (concurrently, with retries)."""

    def __init__(
        self,
        chat: ChatModel,
        *,
        examples: Sequence[tuple[str, str]] | None = None,
        system_prompt: str = CHAT_OPTIMIZER_SYSTEM,
        policy: CallPolicy | None = None,
    ) -> None:
        self.chat = chat
        self.examples = [(str(p), str(o)) for p, o in (default_examples() if examples is None else examples)]
        self.policy = policy or CallPolicy(max_retries=2)
        self.default_format: PromptFormat = ChatFormat(template=system_prompt)
        digest = hashlib.sha256(json.dumps([USER_TEMPLATE, self.examples]).encode()).hexdigest()[:12]
        # The cache key includes this name: other examples or another model never share results.
        self.name = f"chat:{chat.name}:{digest}"
        self._pool = concurrent.futures.ThreadPoolExecutor(self.policy.concurrency, thread_name_prefix="bpo-chat")

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)  # the model's tokenizer is not known here

    def messages(self, prompt: str, fmt: PromptFormat) -> list[Message]:
        """The conversation sent for one instruction."""
        if isinstance(fmt, ChatFormat):
            system = fmt.messages("")[0]["content"]  # the system prompt plus any conversation history
        else:
            system = fmt.template
        turns: list[Message] = [("system", system)]
        for example, optimized in self.examples:
            turns += [("user", USER_TEMPLATE.format(prompt=example)), ("assistant", optimized)]
        turns.append(("user", USER_TEMPLATE.format(prompt=prompt)))
        return turns

    def generate(self, prompts: list[str], fmt: PromptFormat, settings: GenerationSettings) -> list[str]:
        # Sampling settings are the chat model's own configuration; only the prompts vary here.
        futures = [self._pool.submit(self._one, self.messages(p, fmt)) for p in prompts]
        return [f.result() for f in futures]

    def _one(self, messages: list[Message]) -> str:
        try:
            return retry_sync(lambda: self.chat.complete(messages), self.policy, what=f"chat optimizer {self.chat.name}")
        except Exception as exc:
            raise GenerationError(f"chat model {self.chat.name} failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def chat_backend(model: Any, **kwargs: Any) -> ChatBackend:
    """:class:`ChatBackend` for anything :func:`bpo_core.chat.as_chat_model` accepts."""
    from bpo_core.chat import as_chat_model

    return ChatBackend(as_chat_model(model), **kwargs)
