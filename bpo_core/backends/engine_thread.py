"""One thread for all of this process's local optimizer-model work (loading and generation).

PyTorch's CPU build runs each thread's parallel regions on an OpenMP team of that thread's own.
Once a second thread has run one, GNU OpenMP counts more threads than cores and stops spinning
between regions, so every operation waits for a sleeping helper to wake up. On a 2-core machine
that made batched generation about 30% slower (64 rewrites: 9.8 s on one thread, 12.9 s once
the micro-batching worker and the caller had both generated), for as long as the process lives.

So whichever thread asks (the caller, the micro-batching worker, ``asyncio.to_thread``, a
server's workers), model loading and generation run here, one call at a time, in order. Set
``BPO_ENGINE_THREAD=0`` to run them on the calling thread instead.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_start_lock = threading.Lock()
_thread: threading.Thread | None = None
_jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = queue.SimpleQueue()


def enabled() -> bool:
    return os.environ.get("BPO_ENGINE_THREAD", "1").strip().lower() not in ("0", "false", "no", "off")


def on_engine_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def run_on_engine(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` on the engine thread and return its result (or raise its error)."""
    if on_engine_thread() or not enabled():
        return fn(*args, **kwargs)
    future: Future[T] = Future()
    _ensure_started()
    _jobs.put((future, fn, args, kwargs))
    return future.result()


def _ensure_started() -> None:
    global _thread
    with _start_lock:
        if _thread is None or not _thread.is_alive():
            # A daemon: Ctrl-C in the caller must not wait for a generation to finish.
            _thread = threading.Thread(target=_serve, name="bpo-engine", daemon=True)
            _thread.start()


def _serve() -> None:
    while True:
        future, fn, args, kwargs = _jobs.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the caller gets every error; the thread lives on
            future.set_exception(exc)
