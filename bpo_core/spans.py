"""Protected spans: the parts of a prompt the optimizer must never change.

A prompt is split into its *instruction* (what the user asks) and its *context* (the text the
request is about: lines after the instruction, RAG passages, code blocks). Only the instruction
goes to the optimizer model; the context is re-attached verbatim afterwards, so a small model
cannot corrupt it. The BPO authors' data has the same split (``instruction`` / ``context``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_QUOTED = re.compile(r'"[^"\n]{3,}"|“[^”\n]{3,}”|`[^`\n]+`')


@dataclass(frozen=True)
class SplitPrompt:
    """A prompt cut into ``prefix + instruction + separator + context``; joining them gives it back."""

    prefix: str
    instruction: str
    separator: str
    context: str

    @property
    def original(self) -> str:
        return self.prefix + self.instruction + self.separator + self.context

    def with_instruction(self, instruction: str) -> str:
        """The prompt with its instruction replaced and everything else kept byte for byte."""
        return self.prefix + instruction + self.separator + self.context


def split_prompt(prompt: str) -> SplitPrompt:
    """Split at the first line break: the first non-blank line is the instruction.

    Leading blank lines and whitespace are kept in ``prefix``; the line break(s) between the
    instruction and the rest in ``separator``. A one-line prompt has an empty context.
    """
    stripped = prompt.lstrip()
    prefix = prompt[: len(prompt) - len(stripped)]
    newline = stripped.find("\n")
    if newline == -1:
        body = stripped.rstrip()
        return SplitPrompt(prefix, body, stripped[len(body) :], "")
    first = stripped[:newline].rstrip()
    rest = stripped[len(first) :]
    context = rest.lstrip("\r\n\t ")
    return SplitPrompt(prefix, first, rest[: len(rest) - len(context)], context)


def protected_phrases(text: str) -> list[str]:
    """Quoted passages and inline code in ``text``: they must appear verbatim in a rewrite."""
    return [m.group(0) for m in _QUOTED.finditer(text)]
