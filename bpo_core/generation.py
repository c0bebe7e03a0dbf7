"""Generation settings and the three optimization modes.

``stable`` and ``aggressive`` follow the authors' ``src/infer_example.py``; ``greedy`` adds a
deterministic mode (reproducible and cacheable).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["greedy", "stable", "aggressive"]
MODES: tuple[str, ...] = ("greedy", "stable", "aggressive")

#: Words the authors ban in aggressive mode, and the marker prefixes they cut the output at.
AGGRESSIVE_BANNED_WORDS: tuple[str, ...] = ("[PROTECT]", "\n\n[PROTECT]", "[KEEP", "[INSTRUCTION]")
AGGRESSIVE_CUT_PREFIXES: tuple[str, ...] = ("[KE", "[INS", "[PRO")


class GenerationSettings(BaseModel):
    """How the optimizer model decodes one rewrite."""

    model_config = ConfigDict(frozen=True)

    mode: Mode = "greedy"
    max_new_tokens: int = Field(default=128, gt=0)
    do_sample: bool = False
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    banned_words: tuple[str, ...] = ()
    stop_at_newline: bool = False
    #: Authors' aggressive mode: at least (prompt length + extra) new tokens.
    min_new_tokens_extra: int | None = None
    #: At least this many new tokens (an addition the model chose to make must not end at once).
    min_new_tokens: int | None = None
    #: Greedy on a backend that scores stopping (``scores_stopping``): return nothing where the
    #: model's probability of ending at once is at least this, elsewhere at least one token.
    nothing_above: float | None = Field(default=None, gt=0, le=1)
    cut_prefixes: tuple[str, ...] = ()
    seed: int | None = None
    #: Stop generating after this many seconds (set from the optimizer's timeout_s).
    max_time: float | None = None

    @property
    def deterministic(self) -> bool:
        return not self.do_sample


def settings_for_mode(mode: str, *, max_new_tokens: int = 128, seed: int | None = None) -> GenerationSettings:
    """Return the generation settings of a named mode."""
    if mode == "greedy":
        return GenerationSettings(mode="greedy", max_new_tokens=max_new_tokens, seed=seed)
    if mode == "stable":
        return GenerationSettings(
            mode="stable", max_new_tokens=max_new_tokens, do_sample=True, temperature=0.6, top_p=0.9, seed=seed
        )
    if mode == "aggressive":
        return GenerationSettings(
            mode="aggressive",
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=0.9,
            top_p=0.9,
            banned_words=AGGRESSIVE_BANNED_WORDS,
            stop_at_newline=True,
            min_new_tokens_extra=5,
            cut_prefixes=AGGRESSIVE_CUT_PREFIXES,
            seed=seed,
        )
    raise ValueError(f"Unknown mode {mode!r}; expected one of {', '.join(MODES)}")


def cut_at_markers(text: str, prefixes: tuple[str, ...]) -> str:
    """Cut ``text`` at the first marker prefix, as the authors do for aggressive mode."""
    for prefix in prefixes:
        index = text.find(prefix)
        if index != -1:
            text = text[:index]
    return text.strip()
