"""Assembly: the prompt the target LLM gets, built around the user's own bytes."""

from __future__ import annotations

from bpo_core.rewrite.segment import Segmentation


def append_addition(prompt: str, addition: str) -> str:
    """The user's prompt, byte for byte, then a blank line and ``addition``."""
    if prompt.endswith("\n\n"):
        return prompt + addition
    return prompt + ("\n" if prompt.endswith("\n") else "\n\n") + addition


def replace_instruction(seg: Segmentation, rewritten_view: str) -> str | None:
    """The prompt with its instruction rewritten and every piece of material put back byte for byte.

    The prompt's leading and trailing whitespace is kept. ``None`` when the rewrite lost, added or
    reordered a material placeholder.
    """
    filled = seg.fill(rewritten_view.strip())
    if filled is None:
        return None
    prompt = seg.prompt
    lead = prompt[: len(prompt) - len(prompt.lstrip())]
    trail = prompt[len(lead) + len(prompt.strip()) :]
    return lead + filled + trail
