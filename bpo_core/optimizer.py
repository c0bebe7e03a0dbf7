"""BPOOptimizer: rewrite prompts into ones an LLM answers better (Black-box Prompt Optimization)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from bpo_core import waits
from bpo_core.backends import Backend
from bpo_core.cache import LRUCache, ResultCache, cache_key
from bpo_core.errors import BPOError, InvalidPromptError, OptimizerTimeoutError
from bpo_core.formats import PromptFormat
from bpo_core.generation import MODES, GenerationSettings, cut_at_markers, settings_for_mode
from bpo_core.guard import GuardConfig, check
from bpo_core.language import looks_english
from bpo_core.result import OptimizationResult
from bpo_core.spans import SplitPrompt, split_prompt

if TYPE_CHECKING:
    from bpo_core.batching import MicroBatcher

logger = logging.getLogger("bpo_core")

OnError = Literal["fallback", "raise"]
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:improved|optimized|optimised|rewritten|new)?\s*(?:prompt|instruction)\s*:(?:\*\*)?\s*", re.I)


def validate_prompt(prompt: Any, where: str = "prompt") -> str:
    """Return ``prompt`` if it is a ``str``; raise :class:`InvalidPromptError` naming the problem."""
    if isinstance(prompt, str):
        return prompt
    if prompt is None:
        raise InvalidPromptError(f"{where} is None; expected a str")
    raise InvalidPromptError(f"{where} must be a str, got {type(prompt).__name__}: {prompt!r:.80}")


def clean_rewrite(text: str, settings: GenerationSettings) -> str:
    """Turn raw generated text into a prompt: cut markers, drop labels and wrapping quotes."""
    text = cut_at_markers(text, settings.cut_prefixes) if settings.cut_prefixes else text.strip()
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and text.count(text[0]) == 2:
        text = text[1:-1].strip()
    return text


class BPOOptimizer:
    """A prompt preference optimizer in front of any LLM.

    Build one with :meth:`default` (the embedded offline model), :meth:`from_pretrained`
    (THUDM/BPO or any compatible causal LM) or from a ready :class:`~bpo_core.backends.Backend`.

    ``optimize`` returns the rewritten prompt; ``rewrite`` returns an :class:`OptimizationResult`
    saying whether it fell back and why. By default every failure (load error, generation error,
    a rewrite the drift guard rejects) returns the original prompt and logs a warning; pass
    ``on_error="raise"`` to get load and generation errors raised instead.

    Options:
        mode: ``"greedy"`` (deterministic), ``"stable"`` or ``"aggressive"`` (the authors' modes).
        rounds: optimize the output again this many times in all (the paper: 4 best for ChatGPT).
        protect_context: keep everything after the first line verbatim; only the instruction is
            optimized.
        max_input_tokens: longer instructions pass through unchanged (documented, never an error).
        n_best: sample this many candidates per prompt and keep the best by the guard's score.
        timeout_s: a call that takes longer returns the original prompts (sync and async).
        english_only: pass non-English prompts through unchanged (the optimizer is English-trained).
        log_prompts: include prompt text in log messages (off: logs name only the kind of fallback).
        cache: ``True`` (default) keeps an in-memory LRU of deterministic results; ``False`` turns
            it off; or pass a cache object (e.g. :class:`~bpo_core.cache.SQLiteCache`).
        cache_path: a SQLite file for a persistent cache shared by processes.
        cache_sampling: also cache results of sampling modes (``stable``/``aggressive``).
        micro_batching: coalesce concurrent single calls (threads, coroutines) into one batched
            generation, waiting at most ``max_wait_ms`` for company, up to ``max_batch_size`` calls
            (the backend decodes at most its own ``max_batch_size`` rows at once).
    """

    def __init__(
        self,
        backend: Backend | Callable[[], Backend],
        *,
        fmt: PromptFormat | None = None,
        mode: str = "greedy",
        rounds: int = 1,
        max_new_tokens: int = 128,
        seed: int | None = None,
        on_error: OnError = "fallback",
        guard: GuardConfig | None = None,
        protect_context: bool = True,
        max_input_tokens: int = 1024,
        n_best: int = 1,
        timeout_s: float | None = None,
        english_only: bool = True,
        log_prompts: bool = False,
        cache: bool | ResultCache = True,
        cache_path: str | None = None,
        cache_sampling: bool = False,
        micro_batching: bool = False,
        max_wait_ms: float = 5.0,
        max_batch_size: int = 64,
    ) -> None:
        _check_options(mode=mode, rounds=rounds, on_error=on_error, n_best=n_best, timeout_s=timeout_s)
        self._shared = _BackendHolder(backend)
        self._fmt = fmt
        self.mode = mode
        self.rounds = rounds
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.on_error: OnError = on_error
        self.guard = guard or GuardConfig()
        self.protect_context = protect_context
        self.max_input_tokens = max_input_tokens
        self.n_best = n_best
        self.timeout_s = timeout_s
        self.english_only = english_only
        self.log_prompts = log_prompts
        if cache_path is not None:
            from bpo_core.cache import SQLiteCache

            cache = SQLiteCache(cache_path)
        self.cache: ResultCache | None = LRUCache() if cache is True else (cache or None)
        self.cache_sampling = cache_sampling
        self.micro_batching = micro_batching
        self.max_wait_ms = max_wait_ms
        self.max_batch_size = max_batch_size

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
        examples: Sequence[tuple[str, str]] | None = None,
        system_prompt: str | None = None,
        concurrency: int = 4,
        max_retries: int = 2,
        **options: Any,
    ) -> BPOOptimizer:
        """An optimizer that asks a chat model (OpenAI, Anthropic, Ollama, a local model, ...) to
        rewrite prompts: the zero-training BPO path.

        ``llm``: a LangChain chat model, a LlamaIndex LLM wrapped by ``llamaindex_bpo.as_chat_model``,
        or a function ``messages -> str``. The chat model gets a BPO meta-prompt and ``examples``
        (default: five real BPO pairs) as few-shot turns. Protected context, the drift guard, the
        cache, rounds and fallback work as with a local model; the chat model's own settings
        (temperature, ...) decide how it samples, whatever ``mode`` says.
        """
        from bpo_core.backends.chat import CHAT_OPTIMIZER_SYSTEM, chat_backend
        from bpo_core.pipeline.policy import CallPolicy

        backend = chat_backend(
            llm,
            examples=examples,
            system_prompt=system_prompt or CHAT_OPTIMIZER_SYSTEM,
            policy=CallPolicy(concurrency=concurrency, max_retries=max_retries, backoff_s=0.5),
        )
        return cls(backend, **options)

    def with_options(self, **changes: Any) -> BPOOptimizer:
        """A copy with other options, sharing this optimizer's (possibly loaded) model."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        for key, value in changes.items():
            if key == "fmt":
                clone._fmt = value
            elif key in _CHECKED:
                _check_options(**{key: value})
                setattr(clone, key, value)
            elif hasattr(clone, key) and not key.startswith("_"):
                setattr(clone, key, value)
            else:
                raise TypeError(f"Unknown option {key!r}")
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

    def settings(self, mode: str | None = None) -> GenerationSettings:
        return settings_for_mode(mode or self.mode, max_new_tokens=self.max_new_tokens, seed=self.seed)

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
        if self.micro_batching and 0 < len(prompts) < self.max_batch_size:
            # Small batches join concurrent callers' batches; big ones are batches already.
            futures = [self._submit(p, mode, rounds) for p in prompts]
            deadline = waits.deadline_after(self.timeout_s)
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
        if self.on_error == "raise":
            raise exc
        logger.warning("BPO optimizer timed out; using the original prompts: %s", exc)
        return [OptimizationResult(p, p, True, f"timed out: {exc}") for p in prompts]

    def _rewrite_direct(self, prompts: list[str], mode: str | None, rounds: int | None) -> list[OptimizationResult]:
        _check_options(mode=mode, rounds=rounds)
        n_rounds = self.rounds if rounds is None else rounds
        settings = self.settings(mode)
        if self.timeout_s is None:
            return self._run_rounds(prompts, settings, n_rounds)
        # Generation stops itself soon after the deadline (max_time); the caller does not wait.
        settings = settings.model_copy(update={"max_time": self.timeout_s})
        future = _timeout_pool().submit(self._run_rounds, prompts, settings, n_rounds)
        try:
            return waits.wait_future(
                future, f"BPO optimization (timeout_s={self.timeout_s})", deadline=waits.deadline_after(self.timeout_s)
            )
        except OptimizerTimeoutError as exc:
            return self._timed_out(prompts, [future], exc)

    def _run_rounds(self, prompts: list[str], settings: GenerationSettings, n_rounds: int) -> list[OptimizationResult]:
        use_cache = self.cache is not None and (settings.deterministic or self.cache_sampling)
        keys: list[str] = []
        if use_cache:
            try:
                prefix = self._key_prefix(settings, n_rounds)  # the same for the whole batch
                keys = [cache_key(prefix, p) for p in prompts]
            except BPOError:  # the model failed to load: _compute falls back (or raises)
                use_cache = False
        cached = [self.cache.get(k) for k in keys] if use_cache else [None] * len(prompts)  # type: ignore[union-attr]
        todo = [p for p, c in zip(prompts, cached) if c is None]
        fresh = iter(self._compute(todo, settings, n_rounds) if todo else [])
        results = [c if c is not None else next(fresh) for c in cached]
        if use_cache:
            for key, c, res in zip(keys, cached, results):
                # Errors and time-outs are transient: never cache them.
                if c is None and not (res.reason or "").startswith(("optimizer error", "timed out")):
                    self.cache.put(key, res)  # type: ignore[union-attr]
        return results

    def _compute(self, prompts: list[str], settings: GenerationSettings, n_rounds: int) -> list[OptimizationResult]:
        results = [OptimizationResult(p, p) for p in prompts]
        for _ in range(n_rounds):
            results = self._one_round(results, settings)
        return results

    def _key_prefix(self, settings: GenerationSettings, n_rounds: int) -> str:
        """Digest of everything but the prompt that changes a rewrite."""
        fmt = self.fmt
        return cache_key(
            self._shared.name(),
            type(fmt).__name__,
            fmt.template,
            getattr(fmt, "history", ()),
            settings.model_dump(exclude={"max_time"}),
            self.guard.model_dump(),
            self.protect_context,
            self.english_only,
            self.max_input_tokens,
            self.n_best,
            n_rounds,
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
        if self.micro_batching and not isinstance(prompts, str) and 0 < len(prompts) < self.max_batch_size:
            valid = [validate_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
            futures = [self._submit(p, mode, rounds) for p in valid]
            deadline = waits.deadline_after(self.timeout_s)
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
    def _submit(self, prompt: str, mode: str | None, rounds: int | None) -> concurrent.futures.Future[OptimizationResult]:
        _check_options(mode=mode, rounds=rounds)
        batcher = self._shared.get_batcher(self.max_wait_ms, self.max_batch_size)
        # Calls whose options give the same results share a batch, even from different optimizer
        # objects (each BPORunnable or with_options() copy is one) over the same model.
        return batcher.submit(_BatchGroup(self, mode, rounds), prompt)

    def _one_round(self, previous: list[OptimizationResult], settings: GenerationSettings) -> list[OptimizationResult]:
        """Optimize each result's current prompt once; keep the previous prompt on any failure."""
        results = list(previous)
        pending: dict[str, list[tuple[int, SplitPrompt]]] = {}
        for i, res in enumerate(previous):
            current = res.optimized
            if not current.strip():
                results[i] = _fallback(res, "blank prompt passed through unchanged")
                continue
            if self.english_only and not looks_english(current):
                results[i] = _fallback(res, "non-English prompt passed through unchanged (english_only=True)")
                continue
            split = split_prompt(current) if self.protect_context else SplitPrompt("", current, "", "")
            pending.setdefault(split.instruction, []).append((i, split))
        if not pending:
            return results

        try:
            backend = self.backend
            too_long = {s for s in pending if backend.count_tokens(s) > self.max_input_tokens}
            todo = [s for s in pending if s not in too_long]
            rewrites = self._generate(backend, todo, settings) if todo else {}
        except BPOError as exc:
            if self.on_error == "raise":
                raise
            logger.warning(
                "BPO optimizer failed; using the original prompts: %s", exc if self.log_prompts else type(exc).__name__
            )
            return [_fallback(r, f"optimizer error: {exc}") for r in results]

        for instruction, places in pending.items():
            if instruction in too_long:
                reason = f"instruction longer than max_input_tokens={self.max_input_tokens}; passed through"
                for i, _ in places:
                    results[i] = _fallback(results[i], reason)
                continue
            rewrite, reason = rewrites[instruction]
            for i, split in places:
                res = results[i]
                if reason is not None:
                    # Reasons may quote the prompt; without log_prompts only their kind is logged.
                    logger.info("BPO kept the prompt unchanged: %s", reason if self.log_prompts else reason.split(":")[0])
                    results[i] = _fallback(res, reason)
                else:
                    new = split.with_instruction(rewrite)
                    results[i] = OptimizationResult(res.original, new, False, None, (*res.history, new))
        return results

    def _generate(
        self, backend: Backend, instructions: list[str], settings: GenerationSettings
    ) -> dict[str, tuple[str, str | None]]:
        """Rewrite each instruction; return ``{instruction: (rewrite, fallback_reason)}``."""
        k = self.n_best
        batch = [s for s in instructions for _ in range(k)]
        if k > 1 and not settings.do_sample:
            settings = settings_for_mode("aggressive", max_new_tokens=settings.max_new_tokens, seed=settings.seed)
        raw = backend.generate(batch, self.fmt, settings)
        out: dict[str, tuple[str, str | None]] = {}
        for j, instruction in enumerate(instructions):
            candidates = [clean_rewrite(t, settings) for t in raw[j * k : (j + 1) * k]]
            verdicts = [check(instruction, c, self.guard) for c in candidates]
            best = max(range(k), key=lambda c: (verdicts[c].ok, verdicts[c].score))
            verdict = verdicts[best]
            out[instruction] = (candidates[best], None if verdict.ok else verdict.reason)
        return out


_CHECKED = ("mode", "rounds", "on_error", "n_best", "timeout_s")


@functools.lru_cache(maxsize=1)
def _timeout_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="bpo-timeout")


def _check_options(
    *,
    mode: str | None = None,
    rounds: Any = None,
    on_error: str | None = None,
    n_best: Any = None,
    timeout_s: Any = None,
) -> None:
    if timeout_s is not None and (not isinstance(timeout_s, (int, float)) or timeout_s <= 0):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if mode is not None and mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if rounds is not None and (not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1):
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    if on_error is not None and on_error not in ("fallback", "raise"):
        raise ValueError(f"on_error must be 'fallback' or 'raise', got {on_error!r}")
    if n_best is not None and (not isinstance(n_best, int) or n_best < 1):
        raise ValueError(f"n_best must be an int >= 1, got {n_best!r}")


def _fallback(res: OptimizationResult, reason: str) -> OptimizationResult:
    # Keep the best prompt reached so far (an earlier round's rewrite survives a later failure).
    fell_back = res.optimized == res.original
    return OptimizationResult(res.original, res.optimized, fell_back, reason, res.history)


class _BatchGroup:
    """Micro-batching key: equal for calls that may share one batched generation."""

    __slots__ = ("optimizer", "mode", "rounds", "_signature")

    def __init__(self, optimizer: BPOOptimizer, mode: str | None, rounds: int | None) -> None:
        self.optimizer, self.mode, self.rounds = optimizer, mode, rounds
        o = optimizer
        self._signature = (
            id(o.cache),
            o._fmt,
            mode or o.mode,
            o.rounds if rounds is None else rounds,
            o.max_new_tokens,
            o.seed,
            o.on_error,
            o.guard.model_dump_json(),
            o.protect_context,
            o.max_input_tokens,
            o.n_best,
            o.timeout_s,
            o.english_only,
            o.log_prompts,
            o.cache_sampling,
        )

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
