"""One thread for all of this process's local optimizer-model work (loading and generation).

PyTorch's CPU build runs each thread's parallel regions on an OpenMP team of that thread's own.
Once a second thread has run one, GNU OpenMP counts more threads than cores and stops spinning
between regions, so every operation waits for a sleeping helper to wake up. On a 2-core machine
that made batched generation about 30% slower (64 rewrites: 9.8 s on one thread, 12.9 s once
the micro-batching worker and the caller had both generated), for as long as the process lives.

So whichever thread asks (the caller, the micro-batching worker, ``asyncio.to_thread``, a
server's workers), model loading and generation run here, one call at a time, in order. Set
``BPO_ENGINE_THREAD=0`` to run them on the calling thread instead.

Work that may wait (packing weight copies) is queued with :func:`when_idle` and runs in short
steps while no job is waiting.

At interpreter exit the thread is stopped before Python tears down: a daemon thread still inside
a torch call when that happens takes the whole process down with ``std::terminate``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from bpo_core import waits

T = TypeVar("T")

_start_lock = threading.Lock()
_thread: threading.Thread | None = None
_jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = queue.SimpleQueue()


_stopping = False
_idle_lock = threading.Lock()
_idle: list[Callable[[], bool]] = []

logger = logging.getLogger(__name__)


def enabled() -> bool:
    if _stopping:  # exiting: whatever still runs, runs on its caller's thread
        return False
    return os.environ.get("BPO_ENGINE_THREAD", "1").strip().lower() not in ("0", "false", "no", "off")


def stopping() -> bool:
    """Whether the process is exiting (long-running jobs should wind up)."""
    return _stopping


def on_engine_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def run_on_engine(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` on the engine thread and return its result (or raise its error).

    The wait is bounded (``bpo_core.waits``): it gives up with ``OptimizerTimeoutError`` when the
    engine makes no progress for ``BPO_STALL_TIMEOUT_S``.
    """
    if on_engine_thread() or not enabled():
        return fn(*args, **kwargs)
    return waits.wait_future(submit(fn, *args, **kwargs), f"engine work ({getattr(fn, '__name__', 'job')})")


def load_on_engine(fn: Callable[[], T], what: str) -> T:
    """Run a model load on the engine thread, waiting at most ``BPO_LOAD_TIMEOUT_S``.

    While it runs, other waits do not count the time as a stall (a first load may download).
    """

    def load() -> T:
        with waits.loading(), quiet_progress():
            return fn()

    if on_engine_thread() or not enabled():
        return load()
    return waits.wait_future(submit(load), f"loading {what}", deadline=waits.deadline_after(waits.load_timeout_s()))


def submit(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
    """Queue ``fn(*args, **kwargs)`` for the engine thread without waiting for it."""
    future: Future[T] = Future()
    _ensure_started()
    _jobs.put((future, fn, args, kwargs))
    return future


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No weight-loading progress bars unless bpo_core logs at INFO (``-v``): a load is not a long job."""
    import logging

    from transformers.utils import logging as hf_logging

    if logging.getLogger("bpo_core").isEnabledFor(logging.INFO) or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def when_idle(step: Callable[[], bool]) -> None:
    """Call ``step()`` on the engine thread while it has no job, until it returns ``True`` (done).

    Steps start once the thread has had no job for ``IDLE_AFTER_S``. Each call should take tens
    of milliseconds at most: a job that arrives waits for it to end.
    An error ends the work (logged). With the engine thread off, idle work is not run.
    """
    if not enabled():
        return
    with _idle_lock:
        _idle.append(step)
    submit(lambda: None)  # wake the thread (and start it) so that the work begins


def jobs_waiting() -> bool:
    """Whether other work is queued for the engine thread (long jobs use this to take turns)."""
    return not _jobs.empty()


def _ensure_started() -> None:
    global _thread
    with _start_lock:
        if _thread is None or not _thread.is_alive():
            # A daemon: Ctrl-C in the caller must not wait for a generation to finish.
            _thread = threading.Thread(target=_serve, name="bpo-engine", daemon=True)
            _thread.start()


#: Idle work starts only after the thread has had no job for this long: a call's jobs (gate,
#: generation, scoring) come with short gaps between them, which idle work would otherwise fill.
IDLE_AFTER_S = 0.25
_last_job_end = 0.0


def _next_job() -> tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The next job; idle work runs, a step at a time, while there is none."""
    while True:
        with _idle_lock:
            step = _idle[0] if _idle and not _stopping else None
        if step is None:
            return _jobs.get()
        quiet_for = time.monotonic() - _last_job_end
        with contextlib.suppress(queue.Empty):
            if quiet_for < IDLE_AFTER_S:
                return _jobs.get(timeout=IDLE_AFTER_S - quiet_for)
            return _jobs.get_nowait()
        if quiet_for < IDLE_AFTER_S:
            continue
        try:
            done = step()
        except Exception:
            logger.exception("bpo: idle work on the engine thread failed; it is dropped")
            done = True
        waits.beat()
        if done:
            with _idle_lock:
                _idle.remove(step)


def _serve() -> None:
    global _last_job_end
    while True:
        future, fn, args, kwargs = _next_job()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the caller gets every error; the thread lives on
            future.set_exception(exc)
        _last_job_end = time.monotonic()
        waits.beat()


@atexit.register
def _quiesce(timeout: float = 30.0) -> None:
    """Let queued and running jobs end (long ones see ``stopping()``) before Python tears down."""
    global _stopping
    if _thread is None or not _thread.is_alive():
        return
    _stopping = True
    with contextlib.suppress(Exception):  # a stuck job: nothing more we can do
        submit(lambda: None).result(timeout)  # FIFO: done once everything before it is
