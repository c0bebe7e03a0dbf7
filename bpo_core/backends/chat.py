"""A chat model as the optimizer: the zero-training BPO path for API users.

A meta-prompt is the system message (per style: the rules of the authors' construction prompt
with our faithfulness rules for rewrites; the rules our teacher followed for additions), a few
faithful example pairs from ``training_data/faithful`` are example turns, and the user's
instruction (material as placeholders) is the last turn. The optimizer around this backend still
does everything else: segmentation, the faithfulness guard, caching, rounds, fallback.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bpo_core import waits
from bpo_core.backends import estimate_tokens
from bpo_core.chat import ChatModel, Message
from bpo_core.errors import GenerationError
from bpo_core.formats import ChatFormat, PromptFormat, check_style
from bpo_core.generation import GenerationSettings
from bpo_core.policy import CallPolicy, retry_sync

#: System message of the chat-model optimizer for ``style="rewrite"``.
CHAT_OPTIMIZER_SYSTEM = """You are an expert prompt engineer. Rewrite the user's instruction so that an AI assistant gives a better response: correct (follows the instruction and is accurate), helpful (depth, creativity, coherence) and harmless.

Pay attention to:
1. Keep every detail of the original instruction: its meaning, the kind of task, every name, number, identifier, constraint and quoted text, exactly.
2. Invent nothing: no technologies, names, numbers, audiences, formats or topics the user did not give.
3. [pasted text] and [pasted code] stand for material you cannot see; keep each of them exactly once, where it is.
4. If the instruction raises safety issues, keep it on the same topic and ask for a responsible answer.
5. Never answer the instruction. Reply with the optimized instruction only, with no preface or explanation."""

#: System message of the chat-model optimizer for ``style="augment"``.
CHAT_AUGMENT_SYSTEM = """You are an expert prompt engineer. The user's instruction goes to an AI assistant exactly as written. Write a short complementary instruction (at most 40 words) to append to it that makes the assistant's answer more helpful: ask for reasoning or step-by-step explanation where that helps, name the aspects a complete answer should cover, ask for examples, structure or code comments, and a brief safety consideration only where the request needs one.

Rules:
1. Add nothing the user did not give: no new facts, constraints, names, technologies, numbers, lengths, formats, audiences or topics.
2. Do not change or contradict the task, and do not answer or refuse it. Write guidance to the assistant ("Explain ...", "Cover ...").
3. [pasted text] and [pasted code] stand for material you cannot see: do not guess its content or call it incomplete.
4. Reply with the instruction only, as one plain paragraph, or with (none) if nothing would genuinely help."""

SYSTEM_PROMPTS = {"augment": CHAT_AUGMENT_SYSTEM, "rewrite": CHAT_OPTIMIZER_SYSTEM}

#: How each instruction is put to the chat model (examples and the real one alike).
USER_TEMPLATE = "Instruction to optimize:\n{prompt}"

FEWSHOT_PATH = Path(__file__).resolve().parent.parent / "data" / "faithful_fewshot.json"


def default_examples(style: str = "rewrite") -> list[tuple[str, str]]:
    """Five faithful (instruction, output) pairs per style from ``training_data/faithful`` (judged by a strong LLM)."""
    records = json.loads(FEWSHOT_PATH.read_text(encoding="utf-8"))[check_style(style)]
    return [(r["prompt"], r["target"]) for r in records]


@dataclass(frozen=True)
class MetaPromptFormat(ChatFormat):
    """The chat-model optimizer's format: its system message follows the style (``with_style``)."""

    templates: tuple[tuple[str, str], ...] = ()

    def with_style(self, style: str) -> MetaPromptFormat:
        templates = dict(self.templates)
        return replace(self, template=templates[check_style(style)]) if templates else self

    @property
    def style(self) -> str:
        return next((s for s, t in self.templates if t == self.template), "rewrite")


class ChatBackend:
    """Backend that asks a chat model for each rewrite (concurrently, with retries)."""

    #: Chat models rewrite by default (style="auto"); they can also write additions.
    default_style = "rewrite"

    def __init__(
        self,
        chat: ChatModel,
        *,
        examples: Sequence[tuple[str, str]] | Mapping[str, Sequence[tuple[str, str]]] | None = None,
        system_prompt: str | Mapping[str, str] | None = None,
        policy: CallPolicy | None = None,
    ) -> None:
        self.chat = chat
        if examples is None or not isinstance(examples, Mapping):  # a plain list: the rewrite examples
            given = {} if examples is None else {"rewrite": examples}
            examples = {style: given.get(style, default_examples(style)) for style in SYSTEM_PROMPTS}
        self.examples = {style: [(str(p), str(o)) for p, o in pairs] for style, pairs in examples.items()}
        prompts = dict(SYSTEM_PROMPTS)
        if isinstance(system_prompt, str):
            prompts["rewrite"] = system_prompt
        elif system_prompt is not None:
            prompts.update(system_prompt)
        # Calls must not wait forever on a provider: every attempt has a bound unless one was given.
        self.policy = policy or CallPolicy(max_retries=2, timeout_s=120)
        self.default_format: PromptFormat = MetaPromptFormat(
            template=prompts["rewrite"], templates=tuple(prompts.items())
        )
        digest = hashlib.sha256(
            json.dumps([USER_TEMPLATE, self.examples, prompts], sort_keys=True).encode()
        ).hexdigest()[:12]
        # The cache key includes this name: other examples or another model never share results.
        self.name = f"chat:{chat.name}:{digest}"
        self._pool = concurrent.futures.ThreadPoolExecutor(self.policy.concurrency, thread_name_prefix="bpo-chat")

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)  # the model's tokenizer is not known here

    def messages(self, prompt: str, fmt: PromptFormat) -> list[Message]:
        """The conversation sent for one instruction."""
        # The system prompt plus any conversation history.
        system = fmt.messages("")[0]["content"] if isinstance(fmt, ChatFormat) else fmt.template
        style = fmt.style if isinstance(fmt, MetaPromptFormat) else "rewrite"
        turns: list[Message] = [("system", system)]
        for example, optimized in self.examples.get(style, []):
            turns += [("user", USER_TEMPLATE.format(prompt=example)), ("assistant", optimized)]
        turns.append(("user", USER_TEMPLATE.format(prompt=prompt)))
        return turns

    def generate(self, prompts: list[str], fmt: PromptFormat, settings: GenerationSettings) -> list[str]:
        # Sampling settings are the chat model's own configuration; only the prompts vary here.
        futures = [self._pool.submit(self._one, self.messages(p, fmt)) for p in prompts]
        # Each call is bounded by the policy's timeout and retries; this wait is bounded as well.
        return [waits.wait_future(f, f"chat optimizer {self.chat.name}") for f in futures]

    def _one(self, messages: list[Message]) -> str:
        try:
            return retry_sync(
                lambda: self.chat.complete(messages), self.policy, what=f"chat optimizer {self.chat.name}"
            )
        except Exception as exc:
            raise GenerationError(f"chat model {self.chat.name} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            waits.beat()

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def chat_backend(model: Any, **kwargs: Any) -> ChatBackend:
    """:class:`ChatBackend` for anything :func:`bpo_core.chat.as_chat_model` accepts."""
    from bpo_core.chat import as_chat_model

    return ChatBackend(as_chat_model(model), **kwargs)
