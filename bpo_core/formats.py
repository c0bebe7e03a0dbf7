"""Prompt formats: how a user prompt is wrapped before the optimizer model sees it.

A format turns a user prompt into the model's input token ids. The rewrite is always read from
the *generated* token ids, never by splitting decoded text on a marker, because a user prompt may
itself contain ``[/INST]`` or ``<|im_start|>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Edit styles. ``augment`` keeps the user's prompt verbatim and appends a short complementary
#: instruction; ``rewrite`` replaces the instruction with an improved one (the authors' behaviour).
STYLES: tuple[str, ...] = ("augment", "rewrite")

#: The authors' template for THUDM/BPO (``src/infer_example.py``), with a named placeholder.
BPO_INST_TEMPLATE = (
    "[INST] You are an expert prompt engineer. Please help me improve this prompt to get a more "
    "helpful and harmless response:\n{prompt} [/INST]"
)
#: The same model family asked for an addition instead of a rewrite.
BPO_INST_AUGMENT_TEMPLATE = (
    "[INST] You are an expert prompt engineer. Write a short instruction to append to this prompt, "
    "so that it gets a more helpful and harmless response without changing what it asks:\n{prompt} [/INST]"
)

#: System messages of chat-format optimizers per style; the embedded model is trained on these.
AUGMENT_SYSTEM_PROMPT = (
    "You are an expert prompt engineer. The user's prompt goes to an AI assistant exactly as written. "
    "Write a short instruction to append to it that makes the assistant's answer more helpful, without "
    "changing, contradicting or adding to what the user asked. [pasted text] and [pasted code] stand for "
    "material you cannot see. Reply with the instruction only, or with nothing if none would help."
)
REWRITE_SYSTEM_PROMPT = (
    "You are an expert prompt engineer. Rewrite the user's prompt so that an AI assistant answers it "
    "better. Keep every detail, name, number, constraint, quoted text and the kind of task exactly, invent "
    "nothing, and keep each [pasted text] or [pasted code] placeholder where it is. Reply with the "
    "rewritten prompt only."
)
#: The system message of the first embedded adapter (rewrites only); kept so custom formats built on it still switch styles.
LEGACY_SYSTEM_PROMPT = (
    "You are an expert prompt engineer. Please help me improve this prompt to get a more helpful "
    "and harmless response. Reply with the improved prompt only."
)
BPO_SYSTEM_PROMPT = REWRITE_SYSTEM_PROMPT

_CHAT_TEMPLATES = {"augment": AUGMENT_SYSTEM_PROMPT, "rewrite": REWRITE_SYSTEM_PROMPT}
_INST_TEMPLATES = {"augment": BPO_INST_AUGMENT_TEMPLATE, "rewrite": BPO_INST_TEMPLATE}


def check_style(style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"Unknown style {style!r}; expected one of {', '.join(STYLES)}")
    return style


PLACEHOLDER = "{prompt}"
_SENTINEL = "\x00BPO_PROMPT\x00"


def _with_history(text: str, history: tuple[tuple[str, str], ...]) -> str:
    """Append earlier turns to the instruction text, so the optimizer can resolve references."""
    if not history:
        return text
    turns = "\n".join(f"{role}: {content}" for role, content in history)
    return f"{text}\n\nEarlier conversation (context only, do not rewrite it):\n{turns}\n"


def encode_around(
    tokenizer: PreTrainedTokenizerBase, before: str, prompt: str, after: str, *, add_special_tokens: bool
) -> list[int]:
    """Token ids of ``before + prompt + after`` where ``prompt`` can never produce special tokens.

    A user prompt containing ``<|im_start|>`` or ``</s>`` is tokenized as the literal text, so it
    cannot open a new turn or end the input (prompt injection into the template).
    """
    # The template parts are the same on every call: tokenize them once per tokenizer.
    memo: dict[tuple[str, str, bool], tuple[list[int], list[int]]] = tokenizer.__dict__.setdefault(
        "_bpo_template_ids", {}
    )
    parts = memo.get((before, after, add_special_tokens))
    if parts is None:
        head = list(tokenizer(before, add_special_tokens=add_special_tokens)["input_ids"]) if before else []
        tail = list(tokenizer(after, add_special_tokens=False)["input_ids"]) if after else []
        if len(memo) < 256:
            memo[(before, after, add_special_tokens)] = (head, tail)
        parts = (head, tail)
    body = list(tokenizer(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    return parts[0] + body + parts[1]


@runtime_checkable
class PromptFormat(Protocol):
    """Wraps a user prompt for an optimizer model."""

    @property
    def template(self) -> str:
        """Editable template text (exposed through LlamaIndex's PromptMixin, for example)."""

    def render(self, prompt: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
        """Return the model input as text."""

    def encode(self, prompt: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Return the model input as token ids."""

    def with_template(self, template: str) -> PromptFormat:
        """Return a copy using another template text."""

    def with_history(self, history: Sequence[tuple[str, str]]) -> PromptFormat:
        """Return a copy that shows the optimizer these earlier conversation turns."""

    def with_style(self, style: str) -> PromptFormat:
        """Return the format for an edit style (a custom template is kept as it is)."""


@dataclass(frozen=True)
class InstFormat:
    """The authors' ``[INST] ... {prompt} [/INST]`` format, used by THUDM/BPO (Llama-2 based)."""

    template: str = BPO_INST_TEMPLATE
    history: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if PLACEHOLDER not in self.template:
            raise ValueError(f"InstFormat template must contain the placeholder {PLACEHOLDER!r}")

    def render(self, prompt: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
        # str.replace, not str.format: braces in the user's prompt must stay literal.
        before, after = self.template.split(PLACEHOLDER, 1)
        return _with_history(before, self.history) + prompt + after

    def encode(self, prompt: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        before, after = self.template.split(PLACEHOLDER, 1)
        return encode_around(tokenizer, _with_history(before, self.history), prompt, after, add_special_tokens=True)

    def with_template(self, template: str) -> InstFormat:
        return replace(self, template=template)

    def with_history(self, history: Sequence[tuple[str, str]]) -> InstFormat:
        return replace(self, history=tuple(history))

    def with_style(self, style: str) -> InstFormat:
        if self.template in _INST_TEMPLATES.values():
            return replace(self, template=_INST_TEMPLATES[check_style(style)])
        return self


@dataclass(frozen=True)
class ChatFormat:
    """A chat-template format for chat-tuned base models.

    ``template`` is the system message; the user prompt is the user message, verbatim.
    """

    template: str = BPO_SYSTEM_PROMPT
    #: Earlier conversation turns as ``(role, text)`` pairs, shown to the optimizer as context.
    history: tuple[tuple[str, str], ...] = ()

    def messages(self, prompt: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": _with_history(self.template, self.history)},
            {"role": "user", "content": prompt},
        ]

    def with_history(self, history: Sequence[tuple[str, str]]) -> ChatFormat:
        return replace(self, history=tuple(history))

    def render(self, prompt: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            # Without a tokenizer (e.g. a remote endpoint), fall back to the ChatML layout.
            return (
                f"<|im_start|>system\n{_with_history(self.template, self.history)}<|im_end|>\n"
                f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
            )
        return str(tokenizer.apply_chat_template(self.messages(prompt), tokenize=False, add_generation_prompt=True))

    def encode(self, prompt: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        # Render around a sentinel so the template's special tokens stay special while the
        # user's text is tokenized as plain text. The rendered template has its own specials.
        memo: dict[tuple[str, tuple[tuple[str, str], ...]], list[str]] = tokenizer.__dict__.setdefault(
            "_bpo_rendered", {}
        )
        key = (self.template, self.history)
        if key not in memo:
            if len(memo) >= 256:
                memo.clear()
            memo[key] = self.render(_SENTINEL, tokenizer).split(_SENTINEL, 1)
        before, after = memo[key]
        return encode_around(tokenizer, before, prompt, after, add_special_tokens=False)

    def with_template(self, template: str) -> ChatFormat:
        return replace(self, template=template)

    def with_style(self, style: str) -> ChatFormat:
        if self.template in _CHAT_TEMPLATES.values() or self.template == LEGACY_SYSTEM_PROMPT:
            return replace(self, template=_CHAT_TEMPLATES[check_style(style)])
        return self


def format_for(name_or_path: str, tokenizer: PreTrainedTokenizerBase | None) -> PromptFormat:
    """Pick the format for a checkpoint: the authors' for THUDM/BPO, a chat format for chat models."""
    if "bpo" in name_or_path.lower() and "thudm" in name_or_path.lower():
        return InstFormat()
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return ChatFormat()
    return InstFormat()
