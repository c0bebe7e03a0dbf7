"""Bounded waits: no caller of bpo_core waits forever.

Every place a caller blocks on work done elsewhere (the engine thread, the continuous-batching
loop, the micro-batcher, the timeout pool, ``bpo serve``) waits through :func:`wait_event` or
:func:`wait_future`, which give up with :class:`~bpo_core.errors.OptimizerTimeoutError`:

* at the caller's own deadline, when it has one (``timeout_s``, ``max_time``); and always
* when the optimizer machinery has made no progress for ``stall_timeout_s()`` seconds
  (``BPO_STALL_TIMEOUT_S``, default 300). Decode steps, finished engine jobs and finished
  batches count as progress, so a long job that is moving is never cut short, while a request
  that nobody will ever finish is failed instead of hanging. Loading a model (which may download
  gigabytes) counts as progress while it runs; it has its own bound, ``load_timeout_s()``
  (``BPO_LOAD_TIMEOUT_S``, default 3600).

An :class:`OptimizerTimeoutError` is a :class:`~bpo_core.errors.BPOError`, so the optimizer turns
it into its documented fallback (the original prompt, with the reason), or raises it with
``on_error="raise"``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from bpo_core.errors import OptimizerTimeoutError

T = TypeVar("T")

#: How often a waiting caller wakes up to check its bounds. Waits end as soon as the work is done.
POLL_S = 0.5

_lock = threading.Lock()
_last_progress = time.monotonic()
_loading = 0


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def stall_timeout_s() -> float:
    """Seconds without any progress after which a waiting caller gives up."""
    return _env_seconds("BPO_STALL_TIMEOUT_S", 300.0)


def load_timeout_s() -> float:
    """Seconds a caller waits for a model to load (a first load may download the weights)."""
    return _env_seconds("BPO_LOAD_TIMEOUT_S", 3600.0)


def beat() -> None:
    """Record progress (a decode step, a finished job or batch)."""
    global _last_progress
    _last_progress = time.monotonic()


@contextmanager
def loading() -> Iterator[None]:
    """While a model loads, waiting callers do not count the time as a stall."""
    global _loading
    with _lock:
        _loading += 1
    try:
        yield
    finally:
        with _lock:
            _loading -= 1
        beat()


def stalled_for() -> float:
    """Seconds since the last progress (0 while a model is loading)."""
    return 0.0 if _loading else time.monotonic() - _last_progress


def wait_event(
    event: threading.Event, what: str, *, deadline: float | None = None, check: Callable[[], None] | None = None
) -> None:
    """Wait until ``event`` is set, at most until ``deadline`` (``time.monotonic()``) or a stall.

    Raises :class:`OptimizerTimeoutError` naming ``what`` when a bound is hit. ``check`` runs at
    every wake-up (it may settle the wait, e.g. by failing work that nobody will finish).
    """
    stall = stall_timeout_s()
    while not event.wait(_slice(deadline)):
        if check is not None:
            check()
            if event.is_set():
                return
        _check(what, deadline, stall)


def wait_future(future: concurrent.futures.Future[T], what: str, *, deadline: float | None = None) -> T:
    """``future.result()`` within the same bounds as :func:`wait_event`."""
    stall = stall_timeout_s()
    while True:
        try:
            return future.result(timeout=_slice(deadline))
        except concurrent.futures.TimeoutError:
            if future.done():  # the work itself raised a TimeoutError: that is its result
                return future.result()
            _check(what, deadline, stall)


async def await_future(future: concurrent.futures.Future[T], what: str, *, deadline: float | None = None) -> T:
    """Async :func:`wait_future`: awaits without blocking the event loop."""
    stall = stall_timeout_s()
    wrapped = asyncio.wrap_future(future)
    while True:
        done, _ = await asyncio.wait({wrapped}, timeout=_slice(deadline))
        if done:
            return wrapped.result()
        _check(what, deadline, stall)


def deadline_after(seconds: float | None) -> float | None:
    """The ``time.monotonic()`` deadline ``seconds`` from now (``None`` for no deadline)."""
    return None if seconds is None else time.monotonic() + seconds


def _slice(deadline: float | None) -> float:
    return POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))


def _check(what: str, deadline: float | None, stall: float) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise OptimizerTimeoutError(f"{what} did not finish in time")
    idle = stalled_for()
    if idle > stall:
        raise OptimizerTimeoutError(
            f"{what} made no progress for {idle:.0f}s (BPO_STALL_TIMEOUT_S={stall:g}); gave up waiting"
        )
