"""BPOQueryTransform: a LlamaIndex query transform that rewrites the query for answer synthesis.

engine = TransformQueryEngine(index.as_query_engine(), query_transform=BPOQueryTransform())
"""

from __future__ import annotations

from typing import Any, Literal

from llama_index.core.indices.query.query_transform.base import BaseQueryTransform
from llama_index.core.prompts import PromptTemplate
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.schema import QueryBundle

from bpo_core import BPOOptimizer, OptimizationResult
from bpo_core.cache import LRUCache
from bpo_core.faces import resolve_optimizer

EmbedWith = Literal["original", "optimized", "both"]
PROMPT_KEY = "bpo_prompt"


class BPOQueryTransform(BaseQueryTransform):
    """Rewrite ``query_str`` with a BPO optimizer before the LLM answers it.

    Retrieval and synthesis want different things: the optimized query helps the LLM answer,
    while the user's own words usually retrieve best. By default (``embed_with="original"``)
    the original text stays in ``custom_embedding_strs`` for retrieval; ``"optimized"`` embeds
    the rewrite, ``"both"`` embeds both.

    Rewrites are cached per query, so ``TransformQueryEngine.retrieve`` followed by
    ``synthesize`` (or a retriever plus an engine) optimizes once. ``result_for(query)`` returns
    the :class:`~bpo_core.OptimizationResult` (the original text, the rewrite, any fallback reason).

    The optimizer's instruction template is exposed through ``get_prompts()`` /
    ``update_prompts({"bpo_prompt": ...})`` (PromptMixin).
    """

    def __init__(
        self,
        optimizer: BPOOptimizer | None = None,
        *,
        embed_with: EmbedWith = "original",
        mode: str | None = None,
        rounds: int | None = None,
        style: str | None = None,
        cache_size: int = 256,
    ) -> None:
        """``style``: ``"augment"`` or ``"rewrite"`` (``None``: the optimizer's own setting)."""
        super().__init__()
        if embed_with not in ("original", "optimized", "both"):
            raise ValueError(f"embed_with must be 'original', 'optimized' or 'both', got {embed_with!r}")
        self._optimizer = resolve_optimizer(optimizer)
        if style is not None:
            self._optimizer = self._optimizer.with_options(style=style)
        self._embed_with: EmbedWith = embed_with
        self._mode = mode
        self._rounds = rounds
        # Keyed by query text alone, whatever the mode: retrieve then synthesize must share a rewrite.
        self._cache = LRUCache(maxsize=cache_size)

    @property
    def optimizer(self) -> BPOOptimizer:
        return self._optimizer

    # ------------------------------------------------------------ PromptMixin
    def _get_prompts(self) -> PromptDictType:
        return {PROMPT_KEY: PromptTemplate(self._optimizer.fmt.template)}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        if PROMPT_KEY in prompts:
            template = prompts[PROMPT_KEY].get_template()
            fmt = self._optimizer.fmt.with_template(template)
            self._optimizer = self._optimizer.with_options(fmt=fmt)
            self._cache.clear()

    # ------------------------------------------------------------ transform
    def result_for(self, query: str) -> OptimizationResult | None:
        """The cached result for ``query``, if it was transformed."""
        return self._cache.get(query)

    def _bundle(self, query_bundle: QueryBundle, result: OptimizationResult) -> QueryBundle:
        original_embed = query_bundle.embedding_strs
        if self._embed_with == "original":
            embed = list(original_embed)
        elif self._embed_with == "optimized":
            embed = [result.optimized]
        else:
            embed = [result.optimized, *[s for s in original_embed if s != result.optimized]]
        return QueryBundle(
            query_str=result.optimized,
            image_path=query_bundle.image_path,
            custom_embedding_strs=embed,
            # a precomputed embedding belongs to the original text: keep it only if we embed that
            embedding=query_bundle.embedding if self._embed_with == "original" else None,
        )

    def _run(self, query_bundle: QueryBundle, metadata: dict[str, Any]) -> QueryBundle:
        query = query_bundle.query_str
        result = self._cache.get(query)
        if result is None:
            result = self._optimizer.rewrite(query, mode=self._mode, rounds=self._rounds)
            self._cache.put(query, result)
        return self._bundle(query_bundle, result)

    async def arun(self, query_bundle_or_str: QueryBundle | str, metadata: dict[str, Any] | None = None) -> QueryBundle:
        """Async :meth:`run`: the model runs in a worker thread, not on the event loop."""
        bundle = (
            QueryBundle(query_str=query_bundle_or_str, custom_embedding_strs=[query_bundle_or_str])
            if isinstance(query_bundle_or_str, str)
            else query_bundle_or_str
        )
        result = self._cache.get(bundle.query_str)
        if result is None:
            result = await self._optimizer.arewrite(bundle.query_str, mode=self._mode, rounds=self._rounds)
            self._cache.put(bundle.query_str, result)
        return self._bundle(bundle, result)
