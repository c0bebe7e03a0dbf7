"""How pipeline steps call remote models: bounded concurrency, rate limit, retry with backoff."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger("bpo_core.pipeline")
T = TypeVar("T")

#: Errors that another attempt cannot fix (a bug or a missing feature, not a flaky API).
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (NotImplementedError, TypeError, AttributeError)


class CallPolicy(BaseModel):
    """Limits for calls to a chat model (one policy per model role: teacher, target, judge)."""

    model_config = ConfigDict(frozen=True)

    concurrency: int = Field(4, ge=1, description="Calls in flight at once.")
    max_retries: int = Field(4, ge=0, description="Retries of a failed call (so max_retries + 1 attempts).")
    backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles each retry, with jitter.")
    max_backoff_s: float = Field(60.0, ge=0, description="Cap on one retry delay.")
    requests_per_minute: float | None = Field(None, gt=0, description="Start at most this many calls a minute.")
    timeout_s: float | None = Field(None, gt=0, description="Give up on one attempt after this long.")

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (0-based): exponential, capped, with jitter."""
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)

    def retry_delay(self, attempt: int, exc: Exception, what: str) -> float | None:
        """Seconds to wait before retrying after ``exc`` on ``attempt`` (0-based); ``None``: give up."""
        if attempt >= self.max_retries or isinstance(exc, PERMANENT_ERRORS):
            return None
        delay = self.delay(attempt)
        logger.warning("%s failed (%s: %s); retry %d in %.1fs", what, type(exc).__name__, exc, attempt + 1, delay)
        return delay


class RateLimiter:
    """Spaces call starts evenly: at most ``requests_per_minute`` (``None``: no limit)."""

    def __init__(self, requests_per_minute: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._clock = clock
        self._next = 0.0
        self._lock: asyncio.Lock | None = None

    def reserve(self) -> float:
        """Book the next start slot; return how long to wait for it."""
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self.interval
        return start - now

    async def wait(self) -> None:
        if self.interval:
            await asyncio.sleep(self.reserve())


class Caller:
    """Runs async calls under one :class:`CallPolicy` (shared semaphore and rate limiter)."""

    def __init__(self, policy: CallPolicy | None = None) -> None:
        self.policy = policy or CallPolicy()
        self._slots = asyncio.Semaphore(self.policy.concurrency)
        self._limiter = RateLimiter(self.policy.requests_per_minute)

    async def __call__(self, fn: Callable[[], Awaitable[T]], what: str = "call") -> T:
        """Await ``fn()`` with retries; re-raise the last error when every attempt failed."""
        policy = self.policy
        async with self._slots:
            for attempt in range(policy.max_retries + 1):
                await self._limiter.wait()
                try:
                    if policy.timeout_s is None:
                        return await fn()
                    return await asyncio.wait_for(fn(), policy.timeout_s)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = policy.retry_delay(attempt, exc, what)
                    if delay is None:
                        raise
                    await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _within(fn: Callable[[], T], timeout_s: float | None, what: str) -> T:
    if timeout_s is None:
        return fn()
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="bpo-call", daemon=True).start()
    if not done.wait(timeout_s):
        raise TimeoutError(f"{what} took longer than {timeout_s}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def retry_sync(fn: Callable[[], T], policy: CallPolicy, what: str = "call") -> T:
    """Synchronous retry with the same backoff as :class:`Caller` (no concurrency limit).

    With ``policy.timeout_s`` each attempt runs on a thread of its own and is abandoned (it cannot
    be interrupted) once it takes longer; the caller moves on.
    """
    for attempt in range(policy.max_retries + 1):
        try:
            return _within(fn, policy.timeout_s, what)
        except Exception as exc:
            delay = policy.retry_delay(attempt, exc, what)
            if delay is None:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
