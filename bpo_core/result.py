"""The detailed result of one optimization."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class FallbackKind(str, Enum):
    """Why a prompt was left as it was (or kept an earlier round's rewrite)."""

    BLANK = "blank"
    NON_ENGLISH = "non_english"
    #: The instruction could not be told apart from pasted material with confidence.
    UNSEGMENTED = "unsegmented"
    TOO_LONG = "too_long"
    #: The model had nothing to add (style="augment").
    NOTHING_TO_ADD = "nothing_to_add"
    #: The faithfulness guard rejected every candidate.
    REJECTED = "rejected"
    #: The model failed to load or to generate.
    ERROR = "error"
    TIMEOUT = "timeout"

    @property
    def transient(self) -> bool:
        """Worth retrying later (never cached)."""
        return self in (FallbackKind.ERROR, FallbackKind.TIMEOUT)


@dataclass(frozen=True)
class OptimizationResult:
    """What the optimizer did with one prompt.

    ``optimized`` is always usable: when the optimizer fell back it equals ``original`` and
    ``reason`` (readable) and ``kind`` (a :class:`FallbackKind`) say why.
    """

    original: str
    optimized: str
    fell_back: bool = False
    reason: str | None = None
    #: The prompt after each round, first round first (one entry per round that changed it).
    history: tuple[str, ...] = field(default_factory=tuple)
    #: The edit style applied: ``"augment"`` (the prompt kept verbatim, ``addition`` appended) or
    #: ``"rewrite"``; ``None`` when the prompt is unchanged.
    style: str | None = None
    #: What ``style="augment"`` appended (``None`` otherwise).
    addition: str | None = None
    kind: FallbackKind | None = None

    @property
    def changed(self) -> bool:
        return self.optimized != self.original

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "optimized": self.optimized,
            "changed": self.changed,
            "fell_back": self.fell_back,
            "reason": self.reason,
            "history": list(self.history),
            "style": self.style,
            "addition": self.addition,
            "kind": None if self.kind is None else self.kind.value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptimizationResult:
        return cls(
            data["original"],
            data["optimized"],
            data["fell_back"],
            data["reason"],
            tuple(data.get("history", ())),
            data.get("style"),
            data.get("addition"),
            FallbackKind(data["kind"]) if data.get("kind") else None,
        )
