"""The detailed result of one optimization."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OptimizationResult:
    """What the optimizer did with one prompt.

    ``optimized`` is always usable: when the optimizer fell back it equals ``original`` and
    ``reason`` says why.
    """

    original: str
    optimized: str
    fell_back: bool = False
    reason: str | None = None
    #: The prompt after each round, first round first (one entry per round that ran).
    history: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.optimized != self.original

    def to_dict(self) -> dict[str, object]:
        return {
            "original": self.original,
            "optimized": self.optimized,
            "changed": self.changed,
            "fell_back": self.fell_back,
            "reason": self.reason,
            "history": list(self.history),
        }
