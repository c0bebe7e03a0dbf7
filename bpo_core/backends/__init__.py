"""Generation backends: what turns wrapped prompts into rewrites."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from bpo_core.formats import PromptFormat
from bpo_core.generation import GenerationSettings


@runtime_checkable
class Backend(Protocol):
    """A model that completes wrapped prompts, many at a time.

    Optional attributes the optimizer reads when present: ``default_format`` (the
    :class:`~bpo_core.formats.PromptFormat` the model was trained or prompted with) and
    ``default_style`` (``"augment"`` or ``"rewrite"``, what ``style="auto"`` means for this model;
    ``"rewrite"`` when absent); ``scores_stopping`` (``True`` when greedy ``generate`` honours
    ``settings.nothing_above``: it decides between adding nothing and adding something on the
    model's probability of ending at once); ``addition_probe`` with ``addition_scores(views,
    additions, fmt)``, ``addition_gate_scores(views, fmt)`` and ``safety_notes(views, fmt,
    flagged)`` (a learned guard's scores of each addition, its gate's of each prompt, and its
    safety gate's probability and note per prompt; ``None`` when the model has no such guard or
    gate; see :mod:`bpo_core.addition_probe`).
    """

    #: Identifies the model weights (used in cache keys).
    name: str

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes for this model."""

    def generate(self, prompts: list[str], fmt: PromptFormat, settings: GenerationSettings) -> list[str]:
        """Return one completion (the rewrite text, before clean-up) per prompt, in order."""


def estimate_tokens(text: str) -> int:
    """Token count without the model's tokenizer: about 4 characters a token, never 0."""
    return max(1, len(text) // 4)
