"""BPORunnable: a LangChain Runnable that rewrites the user's prompt before the LLM sees it.

chain = prompt | BPORunnable() | llm
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.callbacks.manager import (
    AsyncCallbackManagerForChainRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import ensure_config
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from bpo_core import BPOOptimizer, OptimizationResult
from bpo_core.faces import reject_optimizer_options, resolve_optimizer
from bpo_core.generation import Mode
from langchain_bpo.inputs import Plan, plan

logger = logging.getLogger(__name__)


class BPORunnable(RunnableSerializable[Any, Any]):
    """Rewrite the user's prompt with a BPO optimizer; the output has the input's type.

    Inputs and outputs:
        * ``str`` -> ``str``; ``StringPromptValue`` -> ``StringPromptValue``;
        * ``ChatPromptValue`` or a list of messages -> the same, with only the last human
          message's text rewritten (system, AI and tool messages and non-text parts untouched;
          the original content is kept in ``additional_kwargs["bpo_original_content"]``);
        * ``dict`` -> the same dict with ``input_key`` rewritten.

    ``batch``/``abatch`` make one batched optimizer call; ``ainvoke`` runs the model off the
    event loop. Each rewrite is reported as a ``bpo_rewrite`` custom event (visible in
    ``astream_events`` and callback handlers) with the original, the rewrite and any fallback reason.

    ``style``, ``mode`` and ``rounds`` can be made configurable at run time::

        BPORunnable().configurable_fields(mode=ConfigurableField(id="bpo_mode"))
    """

    optimizer: Any = Field(default=None, exclude=True, repr=False)
    """A :class:`bpo_core.BPOOptimizer`; ``None`` uses the embedded default (loaded on first use)."""
    style: Literal["auto", "augment", "rewrite"] | None = None
    """``augment`` keeps the prompt verbatim and appends guidance; ``rewrite`` rewrites the
    instruction under the faithfulness guard; ``None`` keeps the optimizer's own setting."""
    mode: Mode = "greedy"
    """Decoding mode: ``greedy``, ``stable`` or ``aggressive``."""
    rounds: int = Field(default=1, ge=1)
    """Rounds of iterative optimization."""
    input_key: str = "question"
    """The key rewritten when the input is a dict."""
    on_error: Literal["fallback", "raise"] = "fallback"
    """``fallback`` passes the prompt through on optimizer failure; ``raise`` raises (for ``with_fallbacks``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _optimizer_options_belong_to_the_optimizer(cls, data: Any) -> Any:
        reject_optimizer_options(cls.__name__, data, cls.model_fields)
        return data

    _resolved: BPOOptimizer | None = PrivateAttr(default=None)

    @property
    def _optimizer(self) -> BPOOptimizer:
        if self._resolved is None:
            base = resolve_optimizer(self.optimizer)
            options: dict[str, Any] = {"on_error": self.on_error}
            if self.style is not None:
                options["style"] = self.style
            self._resolved = base.with_options(**options)
        return self._resolved

    # ----------------------------------------------------------------- core work
    def _results(self, plans: list[Plan]) -> list[list[OptimizationResult]]:
        texts = [t for p in plans for t in p.texts]
        flat = self._optimizer.rewrite_batch(texts, mode=self.mode, rounds=self.rounds) if texts else []
        return _regroup(plans, flat)

    async def _aresults(self, plans: list[Plan]) -> list[list[OptimizationResult]]:
        texts = [t for p in plans for t in p.texts]
        flat = await self._optimizer.arewrite_batch(texts, mode=self.mode, rounds=self.rounds) if texts else []
        return _regroup(plans, flat)

    def _invoke(self, value: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig) -> Any:
        p = plan(value, self.input_key)
        results = self._results([p])[0]
        _report(config, results)
        return p.rebuild(results)

    async def _ainvoke(self, value: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig) -> Any:
        p = plan(value, self.input_key)
        results = (await self._aresults([p]))[0]
        await _areport(config, results)
        return p.rebuild(results)

    def _plans(self, values: list[Any]) -> list[Plan | Exception]:
        plans: list[Plan | Exception] = []
        for v in values:
            try:
                plans.append(plan(v, self.input_key))
            except Exception as exc:  # one bad input must not sink the others
                plans.append(exc)
        return plans

    @staticmethod
    def _outputs(
        plans: list[Plan | Exception], grouped: list[list[OptimizationResult]]
    ) -> list[tuple[Any, list[OptimizationResult]]]:
        """Pair each input's output (or its exception) with its results."""
        it = iter(grouped)
        return [(p, []) if isinstance(p, Exception) else (p.rebuild(r := next(it)), r) for p in plans]

    def _batch(
        self, values: list[Any], run_manager: list[CallbackManagerForChainRun], config: list[RunnableConfig]
    ) -> list[Any]:
        plans = self._plans(values)
        outputs = self._outputs(plans, self._results([p for p in plans if isinstance(p, Plan)]))
        for (_, results), cfg in zip(outputs, config):
            _report(cfg, results)
        return [out for out, _ in outputs]

    async def _abatch(
        self,
        values: list[Any],
        run_manager: list[AsyncCallbackManagerForChainRun],
        config: list[RunnableConfig],
    ) -> list[Any]:
        plans = self._plans(values)
        outputs = self._outputs(plans, await self._aresults([p for p in plans if isinstance(p, Plan)]))
        for (_, results), cfg in zip(outputs, config):
            await _areport(cfg, results)
        return [out for out, _ in outputs]

    # ------------------------------------------------------------ Runnable API
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, ensure_config(config), run_type="prompt")

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._ainvoke, input, ensure_config(config), run_type="prompt")

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        if not inputs:
            return []
        return self._batch_with_config(
            self._batch, inputs, config, return_exceptions=return_exceptions, run_type="prompt"
        )

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        if not inputs:
            return []
        return await self._abatch_with_config(
            self._abatch, inputs, config, return_exceptions=return_exceptions, run_type="prompt"
        )


def _regroup(plans: list[Plan], flat: list[OptimizationResult]) -> list[list[OptimizationResult]]:
    grouped, start = [], 0
    for p in plans:
        grouped.append(flat[start : start + len(p.texts)])
        start += len(p.texts)
    return grouped


def _event(results: list[OptimizationResult]) -> dict[str, Any]:
    return {"results": [r.to_dict() for r in results]}


def _report(config: RunnableConfig, results: list[OptimizationResult]) -> None:
    # ``config`` is the child config of this step's run, so the event is attributed to it.
    if results and config.get("callbacks"):
        dispatch_custom_event("bpo_rewrite", _event(results), config=config)


async def _areport(config: RunnableConfig, results: list[OptimizationResult]) -> None:
    if results and config.get("callbacks"):
        await adispatch_custom_event("bpo_rewrite", _event(results), config=config)
