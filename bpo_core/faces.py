"""What the LangChain and LlamaIndex faces share (``bpo_core`` imports neither framework)."""

from __future__ import annotations

import contextvars
import itertools
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from bpo_core.optimizer import BPOOptimizer

T = TypeVar("T")

#: Where a rewritten message keeps the user's original text (``additional_kwargs``, in both frameworks).
ORIGINAL_KEY = "bpo_original_content"

_ids = itertools.count()


def resolve_optimizer(optimizer: Any) -> BPOOptimizer:
    """``optimizer`` itself, or the embedded default for ``None``; anything else is a ``TypeError``."""
    from bpo_core.optimizer import BPOOptimizer

    if optimizer is None:
        return BPOOptimizer.default()
    if not isinstance(optimizer, BPOOptimizer):
        raise TypeError(f"optimizer must be a bpo_core.BPOOptimizer, got {type(optimizer).__name__}")
    return optimizer


def reject_optimizer_options(face: str, given: Any, own_fields: Any) -> None:
    """Raise ``ValueError`` naming where an optimizer option given to a face belongs.

    Faces take a configured optimizer; an option such as ``add_below=`` passed to the face
    itself would otherwise be dropped or reported only as an unknown field.
    """
    from bpo_core.config import OptimizerConfig

    if not isinstance(given, dict):
        return
    misplaced = sorted(set(given) & set(OptimizerConfig.model_fields) - set(own_fields))
    if misplaced:
        name = misplaced[0]
        raise ValueError(
            f"{name!r} is an optimizer option: pass {face}(optimizer=BPOOptimizer.default({name}=...)) "
            "or any BPOOptimizer configured with it"
        )


class PerCall(Generic[T]):
    """A value each call chain sees on its own (a ``contextvars`` variable per owner).

    For ``last_result``-style attributes of wrappers that may run overlapping calls (threads,
    asyncio tasks): a caller reads what its own call set, never another call's.
    """

    def __init__(self, name: str) -> None:
        self._var: contextvars.ContextVar[T | None] = contextvars.ContextVar(f"{name}-{next(_ids)}", default=None)

    def get(self) -> T | None:
        return self._var.get()

    def set(self, value: T | None) -> None:
        self._var.set(value)
