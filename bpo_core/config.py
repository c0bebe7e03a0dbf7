"""OptimizerConfig: every option of a :class:`~bpo_core.BPOOptimizer`, in one frozen object.

The cache key and the micro-batching group are derived from it, so a new option is added in one
place: here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bpo_core.generation import Mode
from bpo_core.guard import GuardConfig

Style = Literal["auto", "augment", "rewrite"]
OnError = Literal["fallback", "raise"]

#: Options that never change a result (how it is scheduled or reported); the cache ignores them.
SCHEDULING_FIELDS = frozenset(
    {"on_error", "timeout_s", "log_prompts", "micro_batching", "max_wait_ms", "max_batch_size"}
)


class OptimizerConfig(BaseModel):
    """What an optimizer does with a prompt, and how its calls are scheduled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    style: Style = "auto"
    """``augment`` keeps the user's prompt verbatim and appends a short complementary instruction;
    ``rewrite`` replaces the instruction with an improved one (the authors' behaviour), under the
    faithfulness guard; ``auto`` uses the model's own style (augment for the embedded model,
    rewrite for THUDM/BPO and chat models)."""
    rewrite_fallback: Literal["augment", "original"] = "augment"
    """What ``style="rewrite"`` does when the guard rejects the rewrite: try an addition, or keep the prompt."""
    mode: Mode = "greedy"
    """Decoding: ``greedy`` (deterministic), ``stable`` or ``aggressive`` (the authors' sampling modes)."""
    rounds: int = Field(default=1, ge=1)
    """Rewrite the output again this many times in all (``rewrite`` only; an addition is made once)."""
    max_new_tokens: int = Field(default=128, ge=1)
    seed: int | None = None
    on_error: OnError = "fallback"
    """``fallback`` returns the prompt unchanged on load/generation errors and time-outs; ``raise`` raises."""
    guard: GuardConfig = Field(default_factory=GuardConfig)
    protect_context: bool = True
    """Find pasted material (documents, code, data) and keep it away from the model, byte for byte."""
    max_input_tokens: int = Field(default=1024, ge=1)
    """Longer instructions pass through unchanged (documented, never an error)."""
    n_best: int = Field(default=1, ge=1)
    """Sample this many candidates per prompt and keep the best one the guard accepts."""
    add_below: float | Literal["auto"] | None = "auto"
    """Greedy additions on a local model: make one when the model's probability of adding nothing
    is below this; ``None`` leaves the choice to plain greedy decoding, which adds nothing whenever
    "nothing" is the single likeliest first token. ``"auto"``: the value the model's learned
    addition guard was fitted with (0.6 for the embedded model; see ``bpo_core.addition_probe``),
    or 0.5 for a model without one or with the learned guard off."""
    timeout_s: float | None = Field(default=None, gt=0)
    """A call that takes longer returns the original prompts (or raises with ``on_error="raise"``)."""
    english_only: bool = True
    """Pass non-English prompts through unchanged (the embedded optimizer is English-trained)."""
    log_prompts: bool = False
    """Include prompt text in log messages (off: logs name only the kind of fallback)."""
    cache_sampling: bool = False
    """Also cache results of the sampling modes."""
    micro_batching: bool = False
    """Coalesce concurrent single calls (threads, coroutines) into batched generations."""
    max_wait_ms: float = Field(default=5.0, ge=0)
    max_batch_size: int = Field(default=64, ge=1)

    @field_validator("mode", mode="before")
    @classmethod
    def _known_mode(cls, value: Any) -> Any:
        from bpo_core.generation import MODES

        if value not in MODES:
            raise ValueError(f"Unknown mode {value!r}; expected one of {', '.join(MODES)}")
        return value

    @field_validator("rounds", "n_best", mode="before")
    @classmethod
    def _plain_int(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an int >= 1, got {value!r}")
        return value

    @field_validator("add_below")
    @classmethod
    def _probability(cls, value: Any) -> Any:
        if isinstance(value, float) and not 0 < value <= 1:
            raise ValueError(f"must be in (0, 1], 'auto' or None, got {value!r}")
        return value

    def with_updates(self, **changes: Any) -> OptimizerConfig:
        """A validated copy with ``changes`` (unknown names raise ``TypeError``)."""
        unknown = set(changes) - set(type(self).model_fields)
        if unknown:
            raise TypeError(f"Unknown option {sorted(unknown)[0]!r}")
        return type(self).model_validate({**self.model_dump(), **changes})

    def result_key(self) -> dict[str, Any]:
        """The options that can change a rewrite (for cache keys)."""
        return self.model_dump(exclude=set(SCHEDULING_FIELDS))
