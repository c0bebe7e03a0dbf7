"""Dynamic micro-batching: coalesce concurrent single calls into one batched generation.

Callers on many threads or coroutines each submit one prompt; a worker thread waits up to
``max_wait_ms`` after the first request (or until ``max_batch_size`` requests) and runs them
as one batch, grouped by compatible settings. Each caller gets its own result (or exception).
Batches run on a few threads, so the next batch is formed and started while one is still
generating: on the local engine it joins the running batch (``ContinuousDecoder``); remote
backends get concurrent requests.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any

_STOP = object()
_live: weakref.WeakSet[MicroBatcher] = weakref.WeakSet()


class MicroBatcher:
    """Runs ``run_batch(group, items)`` on coalesced submissions; ``group`` keys compatible calls."""

    def __init__(
        self,
        run_batch: Callable[[Any, list[Any]], list[Any]],
        *,
        max_wait_ms: float = 5.0,
        max_batch_size: int = 16,
        max_concurrent_batches: int = 4,
        name: str = "bpo-microbatch",
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0 or max_concurrent_batches < 1:
            raise ValueError("max_batch_size and max_concurrent_batches must be >= 1, max_wait_ms >= 0")
        self._run_batch = run_batch
        self.max_wait = max_wait_ms / 1000
        self.max_batch_size = max_batch_size
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self.batches_run = 0
        self._runners = concurrent.futures.ThreadPoolExecutor(max_concurrent_batches, thread_name_prefix=f"{name}-run")
        self._running: set[concurrent.futures.Future[None]] = set()  # batches handed to the runners
        # Bounds the batches in flight: the worker waits for a free runner before forming the next one.
        self._slots = threading.Semaphore(max_concurrent_batches)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        _live.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, group: Hashable, item: Any) -> concurrent.futures.Future[Any]:
        """Queue one item; the future resolves to its result."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("MicroBatcher is closed")
            self._queue.put((group, item, future))
        return future

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued work within ``timeout`` seconds, then stop the worker. Idempotent.

        Calls still unfinished after ``timeout`` get an error; nothing waits longer.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout
        self._thread.join(timeout)
        with self._lock:
            running = list(self._running)
        concurrent.futures.wait(running, timeout=max(0.0, deadline - time.monotonic()))
        self._runners.shutdown(wait=False, cancel_futures=True)
        self._fail_queued(RuntimeError("MicroBatcher closed before this call ran"))

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            self._slots.acquire()
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            stop = False
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                task = self._runners.submit(self._run_released, batch)
            except BaseException as exc:  # the runners are gone (interpreter exit): fail, never strand
                self._slots.release()
                self._fail(batch, exc)
            else:
                with self._lock:
                    self._running.add(task)
                task.add_done_callback(self._forget)
            if stop:
                return

    def _forget(self, task: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._running.discard(task)

    def _run_released(self, batch: list[tuple[Hashable, Any, concurrent.futures.Future[Any]]]) -> None:
        try:
            self._run(batch)
        except BaseException as exc:  # a bug in grouping: every caller still gets an answer
            self._fail(batch, exc)
        finally:
            self._slots.release()

    def _run(self, batch: list[tuple[Hashable, Any, concurrent.futures.Future[Any]]]) -> None:
        groups: dict[Hashable, list[tuple[Any, concurrent.futures.Future[Any]]]] = {}
        for group, item, future in batch:
            if future.set_running_or_notify_cancel():
                groups.setdefault(group, []).append((item, future))
        for group, entries in groups.items():
            try:
                results = self._run_batch(group, [item for item, _ in entries])
                if len(results) != len(entries):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(entries)} items")
            except BaseException as exc:  # every caller must hear about it; never kill the worker
                for _, future in entries:
                    future.set_exception(exc)
                continue
            with self._lock:
                self.batches_run += 1
            for (_, future), result in zip(entries, results):
                future.set_result(result)

    @staticmethod
    def _fail(batch: list[tuple[Hashable, Any, concurrent.futures.Future[Any]]], exc: BaseException) -> None:
        for _, _, future in batch:
            if not future.done():
                with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled, or just settled
                    future.set_exception(exc)

    def _fail_queued(self, exc: BaseException) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                self._fail([item], exc)


@atexit.register
def _close_all() -> None:
    for batcher in list(_live):
        batcher.close(timeout=1.0)
