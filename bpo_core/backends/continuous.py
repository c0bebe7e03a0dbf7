"""Continuous batching for greedy rewrites on :class:`~bpo_core.backends.lean_llama.LeanLlama`.

Rewrites vary in length (most BPO rewrites end after 10-30 tokens, a few run to the limit). With
fixed batches, a batch runs as long as its longest row, and the last steps carry one or two rows
while the weights are still read in full. Here rows leave the batch when they finish and waiting
prompts join it, so the batch stays full while there is work. :class:`ContinuousDecoder` does
this across calls too: a call made while another is generating joins the running batch at the
next step instead of waiting for it to end (concurrent LangChain/LlamaIndex calls, micro-batches,
``bpo serve`` requests).

Layout: all rows share one key/value buffer whose columns ("slots") are storage, not positions.
Slots ``[0, prefix)`` hold the template prefix shared by every row (computed once, see
``LeanLlama.prefix_state``). A joining group of prompts is right-aligned so that its last prompt
token sits just before the next slot to write; each row keeps its own positions and its own mask
of slots it may attend to. Slots no row uses any more are squeezed out when the buffer fills up.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Collection
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from bpo_core import waits
from bpo_core.backends import engine_thread
from bpo_core.errors import GenerationError

if TYPE_CHECKING:
    from bpo_core.backends.lean_llama import LeanLlama

logger = logging.getLogger(__name__)

#: How long past its ``max_time`` a caller waits for its rows to be closed (a step or a join
#: already running must end first).
MAX_TIME_GRACE_S = 30.0


def continuous_greedy(
    lean: LeanLlama,
    sequences: list[list[int]],
    *,
    prefix_length: int = 0,
    max_new_tokens: int,
    eos_ids: Collection[int],
    max_batch_size: int = 32,
    pad_id: int = 0,
    max_time: float | None = None,
    stop_at: float | None = None,
) -> list[list[int]]:
    """Greedy continuation of every token sequence; returns the new ids of each (EOS excluded).

    The first ``prefix_length`` tokens must be shared by all sequences, and each sequence needs
    at least one token after them. At most ``max_batch_size`` rows decode at once. With
    ``max_time``, rows still unfinished when time runs out keep what they have (possibly nothing).
    With ``stop_at``, a row whose probability of ending at once (EOS first) is at least
    ``stop_at`` gets nothing, and every other row at least one token (EOS is barred from its
    first step). Runs on the calling thread; see :class:`ContinuousDecoder` for calls that share steps.
    """
    import torch

    request = _Request(sequences, prefix_length, max_new_tokens, max_time, stop_at)
    if request.finished():
        return request.results
    with torch.inference_mode():
        scheduler = _Scheduler(lean, request.prefix, max_batch_size, pad_id, set(eos_ids))
        scheduler.add(request)
        while not scheduler.idle:
            scheduler.iterate()
    return request.results


class ContinuousDecoder:
    """Greedy generation whose concurrent calls share decode steps.

    ``generate`` may be called from any number of threads. The decoding loop runs on the engine
    thread (``engine_thread``), or on the calling thread when that is off; calls made while it
    runs join its batch. Calls whose prompts start with a different shared prefix wait for the
    running batch to drain, then start their own. Other engine-thread work (sampling, loading)
    is not starved: when some is queued, the loop stops taking new calls, finishes its rows and
    lets it run first.
    """

    def __init__(
        self,
        lean: LeanLlama,
        *,
        eos_ids: Collection[int],
        pad_id: int = 0,
        max_batch_size: int = 32,
        model_lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.lean, self.eos, self.pad_id, self.max_batch_size = lean, set(eos_ids), pad_id, max_batch_size
        self._model_lock = model_lock or nullcontext()
        self._state = threading.Lock()
        # Every request a caller waits on is in exactly one of these two lists until it is done,
        # and both are changed only under ``_state``: ``_pending`` until the drain loop takes it,
        # ``_admitted`` from then on (see ``_drain_loop``).
        self._pending: list[_Request] = []
        self._admitted: list[_Request] = []
        self._running = False  # a drain loop is scheduled or running
        #: Decode steps run and the most rows any step carried (for tests and benchmarks).
        self.steps = 0
        self.peak_rows = 0

    def generate(
        self,
        sequences: list[list[int]],
        *,
        prefix_length: int = 0,
        max_new_tokens: int,
        max_time: float | None = None,
        stop_at: float | None = None,
    ) -> list[list[int]]:
        """Like :func:`continuous_greedy`, sharing steps with concurrent calls."""
        request = _Request(sequences, prefix_length, max_new_tokens, max_time, stop_at)
        if request.finished():
            return request.results
        with self._state:
            self._pending.append(request)
            start, self._running = not self._running, True
        if start and engine_thread.enabled() and not engine_thread.on_engine_thread():
            engine_thread.submit(self._drain)
        elif start or engine_thread.on_engine_thread():
            # On this thread: no engine thread, or we are on it (a queued drain could not run
            # while we wait, so run it here; the queued one will find nothing left to do).
            self._drain()
        deadline = None if request.deadline is None else request.deadline + MAX_TIME_GRACE_S
        try:
            waits.wait_event(
                request.done, "the optimizer's generation", deadline=deadline, check=lambda: self._owned(request)
            )
        except BaseException:
            request.cancel()  # its rows leave the batch at the next step
            raise
        if request.error is not None:
            raise request.error
        return request.results

    def _owned(self, request: _Request) -> None:
        """Fail ``request`` if no drain loop will ever finish it (a bug; never leave a caller waiting)."""
        with self._state:
            if self._running or request.finished():
                return
            request.fail(GenerationError("internal error: a generation request was left without a decoding loop"))
        logger.error("bpo: a generation request was orphaned; its caller gets an error instead of a hang")

    def _drain(self) -> None:
        import torch

        with torch.inference_mode():  # no autograd graph: the weights require grad
            self._drain_loop()

    def _drain_loop(self) -> None:
        # No request is ever in neither place: a request moves from ``_pending`` to ``_admitted``
        # in one step under ``_state``, before the scheduler sees it, and stays there until it is
        # done (pruned only then). Whatever the scheduler does with it (waiting, joining, decoding)
        # and wherever an error strikes, the handler below fails every request in either list
        # that is not done yet, under the same lock, so no caller is left waiting.
        scheduler: _Scheduler | None = None
        try:
            while True:
                if engine_thread.stopping():
                    raise RuntimeError("the process is exiting; generation stopped")
                yielding = engine_thread.on_engine_thread() and engine_thread.jobs_waiting()
                with self._state:
                    if scheduler is None or scheduler.idle:
                        if not self._pending:
                            self._running = False
                            self._admitted = []
                            return
                        if scheduler is not None and yielding:  # let queued engine work run, then resume
                            engine_thread.submit(self._drain)
                            return
                        scheduler = _Scheduler(
                            self.lean, self._pending[0].prefix, self.max_batch_size, self.pad_id, self.eos
                        )
                    joining = [] if yielding else [r for r in self._pending if r.prefix == scheduler.prefix]
                    if joining:
                        self._pending = [r for r in self._pending if r not in joining]
                        self._admitted = [r for r in self._admitted if not r.finished()] + joining
                for request in joining:
                    scheduler.add(request)
                with self._model_lock:
                    scheduler.iterate()
                waits.beat()
                self.steps += 1
                self.peak_rows = max(self.peak_rows, scheduler.kv.batch)
        except BaseException as exc:  # every waiting caller hears about it; later calls start afresh
            with self._state:
                for request in [*self._pending, *self._admitted]:
                    request.fail(exc)
                self._pending, self._admitted, self._running = [], [], False
            if not isinstance(exc, Exception):
                raise


class _Request:
    """One call's rows: their results, limits, and a flag its caller waits on."""

    def __init__(
        self,
        sequences: list[list[int]],
        prefix_length: int,
        max_new_tokens: int,
        max_time: float | None,
        stop_at: float | None = None,
    ) -> None:
        self.stop_at = stop_at
        self.prefix = tuple(sequences[0][:prefix_length]) if sequences else ()
        if any(tuple(s[:prefix_length]) != self.prefix or len(s) <= prefix_length for s in sequences):
            raise ValueError("prefix_length must cover a prefix shared by every sequence and leave each one a token")
        self.sequences = sequences
        self.max_new_tokens = max_new_tokens
        self.deadline = None if max_time is None else time.monotonic() + max_time
        self.results: list[list[int]] = [[] for _ in sequences]
        self.open = len(sequences) if max_new_tokens > 0 else 0
        self.error: BaseException | None = None
        self.cancelled = False
        self.done = threading.Event()
        if not self.open:
            self.done.set()

    def finished(self) -> bool:
        return self.done.is_set()

    def expired(self, now: float) -> bool:
        return self.cancelled or (self.deadline is not None and now > self.deadline)

    def cancel(self) -> None:
        """The caller stopped waiting: its rows leave the batch at the next step."""
        self.cancelled = True

    def close_row(self) -> None:
        self.open -= 1
        if self.open == 0:
            self.done.set()

    def fail(self, exc: BaseException) -> None:
        if not self.done.is_set():
            self.error = exc
            self.done.set()


class _Scheduler:
    """One batch session: rows of requests sharing one prefix, decoding together."""

    def __init__(
        self, lean: LeanLlama, prefix: tuple[int, ...], max_batch_size: int, pad_id: int, eos: set[int]
    ) -> None:
        import torch

        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.lean, self.prefix, self.max_batch, self.pad_id, self.eos = lean, prefix, max_batch_size, pad_id, eos
        self.device = lean.device
        self.waiting: deque[tuple[_Request, int]] = deque()
        # Rows are allocated as they join (a single rewrite must not pay for a full batch), slots
        # for typical prompts plus rewrites; both grow when needed.
        self.kv = lean.new_buffers(1, len(prefix) + 128)
        self.kv.batch, self.kv.length = 0, len(prefix)
        self.valid = torch.zeros((0, self.kv.capacity), dtype=torch.bool, device=self.device)
        self.positions = torch.zeros((0, 1), dtype=torch.long, device=self.device)
        self.rows: list[tuple[_Request, int]] = []  # the (request, sequence) each buffer row decodes
        self.running: list[bool] = []  # finished rows stay in the buffer until the next compaction
        self.logits: Any = None  # next-token logits of the buffer rows
        # Joining costs a prefill pass; let a few rows free up before paying it.
        self.join_at = max(1, max_batch_size // 4)

    @property
    def idle(self) -> bool:
        return not self.waiting and not any(self.running)

    def add(self, request: _Request) -> None:
        order = sorted(range(len(request.sequences)), key=lambda i: len(request.sequences[i]))
        self.waiting.extend((request, i) for i in order)

    def iterate(self) -> None:
        """Take the tokens of the last step, let rows leave and join, and run one step."""
        import torch

        tokens = self._take() if self.rows else None
        self._drop_expired_waiting()
        alive = sum(self.running)
        if not alive and not self.waiting:
            return
        free = self.max_batch - alive
        join = bool(self.waiting) and free >= min(self.join_at, len(self.waiting))
        finished = len(self.rows) - alive
        if finished and (join or finished * 4 >= len(self.rows)):
            tokens = self._compact(tokens)
        parts = []
        if self.rows:
            parts.append(self._step(tokens))
        if join:
            # Joining rows leave ``waiting`` only once they are in ``rows`` (``_join`` succeeded).
            count = min(free, len(self.waiting))
            parts.append(self._join(list(itertools.islice(self.waiting, count))))
            for _ in range(count):
                self.waiting.popleft()
        self.logits = torch.cat(parts) if len(parts) > 1 else parts[0]

    def _take(self) -> Any:
        # max().indices is argmax (first maximum on ties) and much faster than argmax in bfloat16.
        tokens = self.logits.max(-1).indices
        deciding = self._deciding()
        if deciding:
            tokens, stopping = self._decide(tokens, deciding)
        now = time.monotonic()
        for j, token in enumerate(tokens.tolist()):
            if not self.running[j]:
                continue
            request, i = self.rows[j]
            if token in self.eos or request.expired(now) or (deciding and j in stopping):
                self._close(j)
                continue
            out = request.results[i]
            out.append(token)
            if len(out) >= request.max_new_tokens:
                self._close(j)
        return tokens

    def _deciding(self) -> list[int]:
        """Rows about to take their first token under a ``stop_at`` decision."""
        return [
            j
            for j, (request, i) in enumerate(self.rows)
            if self.running[j] and request.stop_at is not None and not request.results[i]
        ]

    def _decide(self, tokens: Any, rows: list[int]) -> tuple[Any, set[int]]:
        """End ``rows`` whose probability of EOS first reaches their ``stop_at``; bar EOS from the others."""
        import torch

        index = torch.tensor(rows, device=tokens.device)
        eos = torch.tensor(sorted(self.eos), device=tokens.device)
        logits = self.logits[index].float()
        stop = torch.softmax(logits, dim=-1)[:, eos].sum(-1).tolist()
        logits[:, eos] = float("-inf")
        tokens = tokens.clone()
        tokens[index] = logits.max(-1).indices.to(tokens.dtype)
        return tokens, {j for j, p in zip(rows, stop) if p >= self.rows[j][0].stop_at}

    def _close(self, j: int) -> None:
        self.running[j] = False
        self.rows[j][0].close_row()

    def _drop_expired_waiting(self) -> None:
        if not self.waiting:
            return
        now = time.monotonic()
        keep: deque[tuple[_Request, int]] = deque()
        for request, i in self.waiting:
            if request.expired(now):
                request.close_row()
            else:
                keep.append((request, i))
        self.waiting = keep

    def _compact(self, tokens: Any) -> Any:
        import torch

        keep = [j for j, r in enumerate(self.running) if r]
        order = self.kv.compact(keep)
        index = torch.tensor(order, dtype=torch.long, device=self.device)
        self.valid, self.positions = self.valid[index], self.positions[index]
        self.rows = [self.rows[j] for j in order]
        self.running = [True] * len(order)
        return tokens[index]

    def _step(self, tokens: Any) -> Any:
        """One decode step for the rows in the buffer."""
        self._reserve(1)
        slot = self.kv.length
        self.valid[:, slot] = True
        logits = self.lean.forward(tokens[:, None], self.positions, self.kv, self.valid[:, None, None, : slot + 1])
        self.positions = self.positions + 1
        return logits

    def _join(self, group: list[tuple[_Request, int]]) -> Any:
        """Prefill ``group`` into new buffer rows; returns their next-token logits."""
        import torch

        p = len(self.prefix)
        rests = [request.sequences[i][p:] for request, i in group]
        width = max(len(r) for r in rests)
        end = self._reserve(0, p + width)
        first = self.kv.batch
        # The first group gets rows for itself; once more are needed, room for a full batch.
        self.kv.add_rows(len(group), reserve=self.max_batch if first or self.rows else 0)
        valid = torch.zeros((len(group), self.kv.capacity), dtype=torch.bool, device=self.device)
        valid[:, :p] = True
        ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
        for g, rest in enumerate(rests):
            ids[g, width - len(rest) :] = torch.tensor(rest, dtype=torch.long)
            valid[g, end - len(rest) : end] = True
        if p:
            keys, values = self.lean.prefix_state(list(self.prefix))
            for dst, src in zip([*self.kv.keys, *self.kv.values], [*keys, *values]):  # fetch the views once
                dst[first:, :, :p] = src
        view = self.kv.rows_from(first)
        view.length = end - width
        positions = (p + valid[:, end - width : end].long().cumsum(-1) - 1).clamp(min=0)
        query = torch.arange(end - width, end, device=self.device)[:, None]
        key = torch.arange(end, device=self.device)[None, :]
        # Causal and not padding; the diagonal keeps a padding query attending to something (no NaN).
        mask = ((key <= query)[None] & valid[:, None, :end]) | (key == query)[None]
        real = valid[:, end - width : end]
        logits = self.lean.forward(ids.to(self.device), positions, view, mask[:, None], real=real)
        self.kv.length = end
        self.valid = torch.cat([self.valid, valid])
        self.positions = torch.cat([self.positions, positions[:, -1:] + 1])
        self.rows.extend(group)
        self.running.extend([True] * len(group))
        return logits

    def _reserve(self, width: int, min_end: int = 0) -> int:
        """Make room to write ``width`` slots after ``kv.length`` (ending at ``min_end`` or later); returns the end.

        May squeeze the buffer, which moves ``kv.length``.
        """
        end = max(self.kv.length + width, min_end)
        if end <= self.kv.capacity:
            return end
        self._squeeze()
        end = max(self.kv.length + width, min_end)
        if end > self.kv.capacity:
            import torch

            capacity = end + 64
            extra = capacity - self.kv.capacity
            self.kv.grow(capacity)
            self.valid = torch.cat([self.valid, self.valid.new_zeros((self.valid.shape[0], extra))], dim=1)
        return end

    def _squeeze(self) -> None:
        """Drop the slots no row attends to (finished rows' and the gaps left by joins)."""
        import torch

        used = self.valid[:, : self.kv.length].any(0) if self.rows else self.valid.new_zeros(self.kv.length)
        used[: len(self.prefix)] = True
        index = used.nonzero().squeeze(1)
        self.kv.select_slots(index)
        valid = torch.zeros_like(self.valid)
        valid[:, : len(index)] = self.valid[:, index]
        self.valid = valid
