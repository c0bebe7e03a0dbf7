"""BPOOptimizer: rewrite prompts into ones an LLM answers better (Black-box Prompt Optimization)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bpo_core import waits
from bpo_core.backends import Backend
from bpo_core.cache import LRUCache, ResultCache, cache_key
from bpo_core.config import OnError, OptimizerConfig
from bpo_core.errors import BPOError, InvalidPromptError, OptimizerTimeoutError
from bpo_core.formats import PromptFormat, check_style
from bpo_core.generation import GenerationSettings, settings_for_mode
from bpo_core.result import FallbackKind, OptimizationResult
from bpo_core.rewrite.clean import clean_rewrite
from bpo_core.rewrite.round import run_round, settle_without_model

if TYPE_CHECKING:
    from bpo_core.batching import MicroBatcher

logger = logging.getLogger("bpo_core")

__all__ = ["BPOOptimizer", "OnError", "clean_rewrite", "resolve_optimizer", "validate_prompt"]


def validate_prompt(prompt: Any, where: str = "prompt") -> str:
    """Return ``prompt`` if it is a ``str``; raise :class:`InvalidPromptError` naming the problem."""
    if isinstance(prompt, str):
        return prompt
    if prompt is None:
        raise InvalidPromptError(f"{where} is None; expected a str")
    raise InvalidPromptError(f"{where} must be a str, got {type(prompt).__name__}: {prompt!r:.80}")


def resolve_optimizer(optimizer: Any = None, **options: Any) -> BPOOptimizer:
    """The optimizer a framework face uses: ``optimizer`` (or the embedded default) with ``options``
    applied (``None`` values keep the optimizer's own); anything else is a ``TypeError``."""
    if optimizer is None:
        optimizer = BPOOptimizer.default()
    elif not isinstance(optimizer, BPOOptimizer):
        raise TypeError(f"optimizer must be a bpo_core.BPOOptimizer, got {type(optimizer).__name__}")
    changes = {k: v for k, v in options.items() if v is not None}
    return optimizer.with_options(**changes) if changes else optimizer


class BPOOptimizer:
    """A prompt preference optimizer in front of any LLM.

    Build one with :meth:`default` (the embedded offline model), :meth:`from_pretrained`
    (THUDM/BPO or any compatible causal LM), :meth:`from_chat_model`, :meth:`from_openai_compatible`
    or from a ready :class:`~bpo_core.backends.Backend`.

    ``optimize`` returns the new prompt; ``rewrite`` returns an :class:`OptimizationResult` saying
    what was done (``style``, ``addition``) or why the prompt was kept (``reason``, ``kind``).

    Faithfulness comes first. Pasted material (documents, code, data) is found wherever it sits
    and never reaches the model; the prompt goes back with it byte for byte. ``style="augment"``
    (the embedded default) keeps the whole prompt verbatim and appends a short complementary
    instruction; ``style="rewrite"`` (THUDM/BPO, chat models) rewrites the instruction under a
    guard that keeps every specific, invents none and keeps the kind of task. Whatever the guard
    rejects, and every failure (load or generation errors, time-outs), leaves the prompt as it
    was, with the reason; ``on_error="raise"`` raises errors and time-outs instead.

    Options are the fields of :class:`~bpo_core.config.OptimizerConfig` (``style``, ``mode``,
    ``rounds``, ``timeout_s``, ``micro_batching``, ...), passed as keywords and readable as
    attributes (``optimizer.mode``). ``cache``: ``True`` (default) keeps an in-memory LRU of
    deterministic results, ``False`` none, or pass a cache object; ``cache_path`` adds a SQLite
    cache shared by processes. ``fmt`` overrides the model's prompt format.
    """

    def __init__(
        self,
        backend: Backend | Callable[[], Backend],
        *,
        fmt: PromptFormat | None = None,
        cache: bool | ResultCache = True,
        cache_path: str | None = None,
        config: OptimizerConfig | None = None,
        **options: Any,
    ) -> None:
        base = config or OptimizerConfig()
        self.config = base.with_updates(**options) if options else base
        self._shared = _BackendHolder(backend)
        self._fmt = fmt
        if cache_path is not None:
            from bpo_core.cache import SQLiteCache

            cache = SQLiteCache(cache_path)
        self.cache: ResultCache | None = LRUCache() if cache is True else (cache or None)

    def __getattr__(self, name: str) -> Any:
        # Options read as attributes: optimizer.mode, optimizer.rounds, ... (see OptimizerConfig).
        config = self.__dict__.get("config")
        if config is not None and name in type(config).model_fields:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------ constructors
    @classmethod
    def default(cls, **options: Any) -> BPOOptimizer:
        """The embedded offline optimizer (SmolLM2-135M-Instruct, BPO-tuned when weights ship).

        The model loads on first use and is shared by every default optimizer in the process.
        Loading options: ``device``, ``num_threads`` and ``dtype`` (``"bfloat16"`` for throughput
        on CPUs with AMX; see ``load_default_backend``).
        """
        from bpo_core.default_model import shared_default_backend

        load_options = {k: options.pop(k) for k in ("device", "num_threads", "dtype") if k in options}
        return cls(lambda: shared_default_backend(**load_options), **options)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        device: str | None = None,
        dtype: Any = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        revision: str | None = None,
        adapter: str | None = None,
        max_batch_size: int = 32,
        lazy: bool = False,
        **options: Any,
    ) -> BPOOptimizer:
        """Load ``THUDM/BPO`` or any compatible causal LM (hub id or local folder).

        The authors' ``[INST]`` format is used for THUDM/BPO and for models without a chat
        template; chat models get the chat format. Pass ``fmt=`` to choose. ``lazy=True`` defers
        loading to the first call.
        """
        from bpo_core.backends.hf import HFBackend

        def load() -> Backend:
            return HFBackend.from_pretrained(
                name_or_path,
                device=device,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                allow_pickle=allow_pickle,
                revision=revision,
                adapter=adapter,
                max_batch_size=max_batch_size,
            )

        return cls(load if lazy else load(), **options)

    @classmethod
    def from_openai_compatible(
        cls,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        fmt: PromptFormat | None = None,
        tokenizer: str | Any = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 4,
        max_batch_size: int = 16,
        **options: Any,
    ) -> BPOOptimizer:
        """An optimizer whose model is served by vLLM, TGI, llama.cpp, ``bpo serve`` or any
        OpenAI-compatible completions endpoint, with the same template, modes, guard and cache.

        ``fmt`` defaults to the authors' ``[INST]`` format (THUDM/BPO); pass ``ChatFormat()`` for
        chat models. ``tokenizer`` (a name/path or a tokenizer) gives exact token counts and the
        model's own chat template.
        """
        from bpo_core.backends.openai_compat import OpenAICompatibleBackend
        from bpo_core.formats import InstFormat

        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        backend = OpenAICompatibleBackend(
            base_url,
            model,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            concurrency=concurrency,
            max_batch_size=max_batch_size,
            tokenizer=tokenizer,
        )
        return cls(backend, fmt=fmt or InstFormat(), **options)

    @classmethod
    def from_chat_model(
        cls,
        llm: Any,
        *,
        examples: Sequence[tuple[str, str]] | Mapping[str, Sequence[tuple[str, str]]] | None = None,
        system_prompt: str | Mapping[str, str] | None = None,
        concurrency: int = 4,
        max_retries: int = 2,
        call_timeout_s: float = 120.0,
        **options: Any,
    ) -> BPOOptimizer:
        """An optimizer that asks a chat model (OpenAI, Anthropic, Ollama, a local model, ...) to
        rewrite prompts or to write additions: the zero-training BPO path.

        ``llm``: a LangChain chat model, a LlamaIndex LLM wrapped by ``llamaindex_bpo.as_chat_model``,
        or a function ``messages -> str``. The chat model gets a meta-prompt per style and
        ``examples`` (default: five faithful pairs per style) as few-shot turns; a plain list of
        examples or a plain ``system_prompt`` string replaces the rewrite ones. Segmentation, the
        faithfulness guard, the cache, rounds and fallback work as with a local model; the chat
        model's own settings (temperature, ...) decide how it samples, whatever ``mode`` says.
        Each call gets ``call_timeout_s`` and ``max_retries``.
        """
        from bpo_core.backends.chat import chat_backend
        from bpo_core.policy import CallPolicy

        if "guard" not in options and "config" not in options:
            from bpo_core.guard import GuardConfig

            options["guard"] = GuardConfig(ground_additions=False)  # a strong model may name the aspects
        backend = chat_backend(
            llm,
            examples=examples,
            system_prompt=system_prompt,
            policy=CallPolicy(
                concurrency=concurrency, max_retries=max_retries, backoff_s=0.5, timeout_s=call_timeout_s
            ),
        )
        return cls(backend, **options)

    def with_options(self, **changes: Any) -> BPOOptimizer:
        """A copy with other options, sharing this optimizer's (possibly loaded) model and cache."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        if "fmt" in changes:
            clone._fmt = changes.pop("fmt")
        if "cache" in changes:
            cache = changes.pop("cache")
            clone.cache = LRUCache() if cache is True else (cache or None)
        clone.config = self.config.with_updates(**changes)
        return clone

    # --------------------------------------------------------------- accessors
    @property
    def backend(self) -> Backend:
        """The generation backend, loaded on first access."""
        return self._shared.get()

    @property
    def fmt(self) -> PromptFormat:
        if self._fmt is None:
            backend = self.backend
            from bpo_core.formats import format_for

            self._fmt = getattr(backend, "default_format", None) or format_for(
                backend.name, getattr(backend, "tokenizer", None)
            )
        return self._fmt

    @property
    def style(self) -> str:
        """The edit style in use: ``config.style``, or with ``"auto"`` the model's own (see OptimizerConfig)."""
        if self.config.style != "auto":
            return self.config.style
        return check_style(getattr(self.backend, "default_style", "rewrite"))

    def settings(self, mode: str | None = None) -> GenerationSettings:
        config = self.config
        return settings_for_mode(mode or config.mode, max_new_tokens=config.max_new_tokens, seed=config.seed)

    # ------------------------------------------------------------------- sync
    def optimize(self, prompt: str, *, mode: str | None = None, rounds: int | None = None) -> str:
        """Return the optimized prompt (or ``prompt`` itself if the optimizer fell back)."""
        return self.rewrite(prompt, mode=mode, rounds=rounds).optimized

    def optimize_batch(
        self, prompts: Sequence[str], *, mode: str | None = None, rounds: int | None = None
    ) -> list[str]:
        """Optimize many prompts with batched generation; results keep the input order."""
        return [r.optimized for r in self.rewrite_batch(prompts, mode=mode, rounds=rounds)]

    def rewrite(
        self,
        prompt: str,
        *,
        mode: str | None = None,
        rounds: int | None = None,
        history: Sequence[tuple[str, str]] | None = None,
    ) -> OptimizationResult:
        """Like :meth:`optimize`, returning the detailed :class:`OptimizationResult`.

        ``history``: earlier conversation turns as ``(role, text)`` pairs, given to the optimizer
        as context (only ``prompt`` is rewritten).
        """
        validate_prompt(prompt)
        target = self.with_options(fmt=self.fmt.with_history(history)) if history else self
        return target.rewrite_batch([prompt], mode=mode, rounds=rounds)[0]

    def rewrite_batch(
        self, prompts: Sequence[str], *, mode: str | None = None, rounds: int | None = None
    ) -> list[OptimizationResult]:
        """Like :meth:`optimize_batch`, returning detailed results."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InvalidPromptError(f"prompts must be a list of str, got {type(prompts).__name__}")
        prompts = [validate_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        if self.config.micro_batching and 0 < len(prompts) < self.config.max_batch_size:
            # Small batches join concurrent callers' batches; big ones are batches already.
            futures = [self._submit(p, mode, rounds) for p in prompts]
            deadline = waits.deadline_after(self.config.timeout_s)
            try:
                return [waits.wait_future(f, "a micro-batched rewrite", deadline=deadline) for f in futures]
            except OptimizerTimeoutError as exc:
                return self._timed_out(prompts, futures, exc)
        return self._rewrite_direct(prompts, mode, rounds)

    def _timed_out(
        self, prompts: list[str], futures: list[concurrent.futures.Future[Any]], exc: OptimizerTimeoutError
    ) -> list[OptimizationResult]:
        """The caller stopped waiting: the original prompts (or the error with ``on_error="raise"``)."""
        for future in futures:
            future.cancel()  # not yet started: skip it
        if self.config.on_error == "raise":
            raise exc
        logger.warning("BPO optimizer timed out; using the original prompts: %s", exc)
        return [OptimizationResult(p, p, True, f"timed out: {exc}", kind=FallbackKind.TIMEOUT) for p in prompts]

    def _rewrite_direct(self, prompts: list[str], mode: str | None, rounds: int | None) -> list[OptimizationResult]:
        _check_call(mode, rounds)
        n_rounds = self.config.rounds if rounds is None else rounds
        settings = self.settings(mode)
        timeout_s = self.config.timeout_s
        if timeout_s is None:
            return self._run_rounds(prompts, settings, n_rounds)
        # Generation stops itself soon after the deadline (max_time); the caller does not wait.
        settings = settings.model_copy(update={"max_time": timeout_s})
        future = _timeout_pool().submit(self._run_rounds, prompts, settings, n_rounds)
        try:
            return waits.wait_future(
                future, f"BPO optimization (timeout_s={timeout_s})", deadline=waits.deadline_after(timeout_s)
            )
        except OptimizerTimeoutError as exc:
            return self._timed_out(prompts, [future], exc)

    def _run_rounds(self, prompts: list[str], settings: GenerationSettings, n_rounds: int) -> list[OptimizationResult]:
        # Prompts no model may change are settled first, so a call made only of them never loads one.
        settled = {
            i: r for i, p in enumerate(prompts) if (r := settle_without_model(OptimizationResult(p, p), self.config))
        }
        if settled:
            rest = [p for i, p in enumerate(prompts) if i not in settled]
            done = iter(self._run_rounds(rest, settings, n_rounds) if rest else [])
            return [settled[i] if i in settled else next(done) for i in range(len(prompts))]
        cache = self.cache
        use_cache = cache is not None and (settings.deterministic or self.config.cache_sampling)
        keys: list[str] = []
        if use_cache:
            try:
                prefix = self._key_prefix(settings, n_rounds)  # the same for the whole batch
                keys = [cache_key(prefix, p) for p in prompts]
            except BPOError:  # the model failed to load: _compute falls back (or raises)
                use_cache = False
        cached = [cache.get(k) for k in keys] if use_cache and cache is not None else [None] * len(prompts)
        todo = [p for p, c in zip(prompts, cached) if c is None]
        fresh = iter(self._compute(todo, settings, n_rounds) if todo else [])
        results = [c if c is not None else next(fresh) for c in cached]
        if use_cache and cache is not None:
            for key, c, res in zip(keys, cached, results):
                if c is None and not (res.kind is not None and res.kind.transient):  # errors may pass: never cache them
                    cache.put(key, res)
        return results

    def _compute(self, prompts: list[str], settings: GenerationSettings, n_rounds: int) -> list[OptimizationResult]:
        results = [OptimizationResult(p, p) for p in prompts]
        try:
            backend, fmt, style = self.backend, self.fmt, self.style
        except BPOError as exc:  # the model failed to load
            if self.config.on_error == "raise":
                raise
            logger.warning("BPO optimizer failed to load; using the original prompts: %s", type(exc).__name__)
            return [OptimizationResult(p, p, True, f"optimizer error: {exc}", kind=FallbackKind.ERROR) for p in prompts]
        for _ in range(n_rounds):
            # An addition is made once: prompts that got one leave the later rounds.
            todo = [i for i, r in enumerate(results) if r.style != "augment"]
            if not todo:
                break
            done = run_round(
                [results[i] for i in todo], backend=backend, fmt=fmt, config=self.config, style=style, settings=settings
            )
            for i, res in zip(todo, done):
                results[i] = res
        return results

    def _key_prefix(self, settings: GenerationSettings, n_rounds: int) -> str:
        """Digest of everything but the prompt that changes a result."""
        fmt = self.fmt
        style = self.style
        return cache_key(
            self._shared.name(),
            type(fmt).__name__,
            style,
            fmt.with_style(style).template,
            fmt.with_style("augment").template if style == "rewrite" else None,
            getattr(fmt, "history", ()),
            settings.model_dump(exclude={"max_time"}),
            self.config.result_key(),
            n_rounds,
            _segmenter_version(),
        )

    # ------------------------------------------------------------------ async
    async def aoptimize(self, prompt: str, *, mode: str | None = None, rounds: int | None = None) -> str:
        """Async :meth:`optimize`; generation runs in a worker thread, never on the event loop."""
        return (await self.arewrite(prompt, mode=mode, rounds=rounds)).optimized

    async def aoptimize_batch(
        self, prompts: Sequence[str], *, mode: str | None = None, rounds: int | None = None
    ) -> list[str]:
        """Async :meth:`optimize_batch`."""
        return [r.optimized for r in await self.arewrite_batch(prompts, mode=mode, rounds=rounds)]

    async def arewrite(
        self,
        prompt: str,
        *,
        mode: str | None = None,
        rounds: int | None = None,
        history: Sequence[tuple[str, str]] | None = None,
    ) -> OptimizationResult:
        validate_prompt(prompt)
        target = self.with_options(fmt=self.fmt.with_history(history)) if history else self
        return (await target.arewrite_batch([prompt], mode=mode, rounds=rounds))[0]

    async def arewrite_batch(
        self, prompts: Sequence[str], *, mode: str | None = None, rounds: int | None = None
    ) -> list[OptimizationResult]:
        if (
            self.config.micro_batching
            and not isinstance(prompts, str)
            and 0 < len(prompts) < self.config.max_batch_size
        ):
            valid = [validate_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
            futures = [self._submit(p, mode, rounds) for p in valid]
            deadline = waits.deadline_after(self.config.timeout_s)
            try:
                return [await waits.await_future(f, "a micro-batched rewrite", deadline=deadline) for f in futures]
            except OptimizerTimeoutError as exc:
                return self._timed_out(valid, futures, exc)
        return await asyncio.to_thread(self.rewrite_batch, prompts, mode=mode, rounds=rounds)

    def close(self) -> None:
        """Stop this optimizer's micro-batching worker (queued calls finish first)."""
        batcher = self._shared.batcher
        if batcher is not None:
            batcher.close()

    # -------------------------------------------------------------- internals
    def _submit(
        self, prompt: str, mode: str | None, rounds: int | None
    ) -> concurrent.futures.Future[OptimizationResult]:
        _check_call(mode, rounds)
        batcher = self._shared.get_batcher(self.config.max_wait_ms, self.config.max_batch_size)
        # Calls whose options give the same results share a batch, even from different optimizer
        # objects (each BPORunnable or with_options() copy is one) over the same model.
        return batcher.submit(_BatchGroup(self, mode, rounds), prompt)


@functools.lru_cache(maxsize=1)
def _timeout_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="bpo-timeout")


def _check_call(mode: str | None, rounds: int | None) -> None:
    """Per-call overrides get the same checks as the options."""
    updates = {k: v for k, v in (("mode", mode), ("rounds", rounds)) if v is not None}
    if updates:
        _DEFAULT_CONFIG.with_updates(**updates)


_DEFAULT_CONFIG = OptimizerConfig()


@functools.lru_cache(maxsize=1)
def _segmenter_version() -> str:
    from bpo_core.rewrite.segment import WEIGHTS_PATH

    return hashlib.sha256(WEIGHTS_PATH.read_bytes()).hexdigest()[:12]


class _BatchGroup:
    """Micro-batching key: equal for calls that may share one batched generation.

    Calls share a batch when everything that decides their results is equal, even from different
    optimizer objects (each BPORunnable or ``with_options()`` copy is one) over the same model.
    """

    __slots__ = ("optimizer", "mode", "rounds", "_signature")

    def __init__(self, optimizer: BPOOptimizer, mode: str | None, rounds: int | None) -> None:
        self.optimizer, self.mode, self.rounds = optimizer, mode, rounds
        config = optimizer.config
        self._signature = (id(optimizer.cache), optimizer._fmt, config, mode or config.mode, rounds or config.rounds)

    def __hash__(self) -> int:
        return hash(self._signature)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _BatchGroup) and self._signature == other._signature


class _BackendHolder:
    """Holds a backend or loads it once, on first use, from a zero-argument loader.

    A load failure is remembered so later calls fall back at once instead of retrying a slow load.
    """

    def __init__(self, source: Backend | Callable[[], Backend] | _BackendHolder) -> None:
        if isinstance(source, _BackendHolder):
            self.__dict__ = source.__dict__  # share state with another holder
            return
        self._lock = threading.Lock()
        self._batcher_lock = threading.Lock()
        self._error: BPOError | None = None
        self.batcher: MicroBatcher | None = None
        if isinstance(source, Backend):
            self._backend: Backend | None = source
            self._loader = None
        elif callable(source):
            self._backend, self._loader = None, source
        else:
            raise TypeError(f"backend must be a Backend or a zero-argument loader, got {type(source).__name__}")

    def name(self) -> str:
        return self.get().name

    def get_batcher(self, max_wait_ms: float, max_batch_size: int) -> MicroBatcher:
        with self._batcher_lock:
            if self.batcher is None or self.batcher.closed:
                from bpo_core.batching import MicroBatcher

                def run(group: _BatchGroup, prompts: list[str]) -> list[OptimizationResult]:
                    return group.optimizer._rewrite_direct(prompts, group.mode, group.rounds)

                self.batcher = MicroBatcher(run, max_wait_ms=max_wait_ms, max_batch_size=max_batch_size)
            return self.batcher

    def get(self) -> Backend:
        if self._backend is not None:
            return self._backend
        # Another thread may be loading: wait for it, within the load bound.
        if not self._lock.acquire(timeout=waits.load_timeout_s()):
            raise OptimizerTimeoutError("waiting for another thread to load the optimizer model timed out")
        try:
            if self._backend is None:
                if self._error is not None:
                    raise self._error
                try:
                    self._backend = self._loader()  # type: ignore[misc]
                except OptimizerTimeoutError:  # may still finish: the next call asks again
                    raise
                except BPOError as exc:
                    self._error = exc
                    raise
                except Exception as exc:  # normalize third-party errors
                    from bpo_core.errors import ModelLoadError

                    self._error = ModelLoadError(f"Could not load the optimizer model: {exc}")
                    raise self._error from exc
        finally:
            self._lock.release()
        return self._backend
