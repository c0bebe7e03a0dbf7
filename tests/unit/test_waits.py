"""Bounded waits (bpo_core.waits): deadlines, stalls, and the loading exemption."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from bpo_core import waits
from bpo_core.errors import BPOError, OptimizerTimeoutError


def test_a_finished_future_returns_its_result_or_error():
    ok: concurrent.futures.Future[int] = concurrent.futures.Future()
    ok.set_result(7)
    assert waits.wait_future(ok, "x") == 7
    bad: concurrent.futures.Future[int] = concurrent.futures.Future()
    bad.set_exception(TimeoutError("the work's own timeout"))
    with pytest.raises(TimeoutError, match="the work's own timeout"):
        waits.wait_future(bad, "x")


def test_a_deadline_ends_the_wait_with_a_bpo_timeout():
    never: concurrent.futures.Future[int] = concurrent.futures.Future()
    started = time.monotonic()
    with pytest.raises(OptimizerTimeoutError, match="the thing did not finish in time") as info:
        waits.wait_future(never, "the thing", deadline=waits.deadline_after(0.3))
    assert 0.25 < time.monotonic() - started < 5
    assert isinstance(info.value, BPOError) and isinstance(info.value, TimeoutError)


def test_no_progress_for_the_stall_bound_ends_the_wait(monkeypatch):
    monkeypatch.setenv("BPO_STALL_TIMEOUT_S", "0.6")
    waits.beat()
    with pytest.raises(OptimizerTimeoutError, match="made no progress"):
        waits.wait_event(threading.Event(), "a stuck job")


def test_progress_keeps_a_long_wait_alive(monkeypatch):
    monkeypatch.setenv("BPO_STALL_TIMEOUT_S", "0.6")
    done = threading.Event()

    def slow_but_moving():
        for _ in range(12):  # 1.2 s of work, beating every 0.1 s: twice the stall bound, never stalled
            time.sleep(0.1)
            waits.beat()
        done.set()

    threading.Thread(target=slow_but_moving).start()
    waits.wait_event(done, "a moving job")
    assert done.is_set()


def test_loading_is_not_a_stall(monkeypatch):
    monkeypatch.setenv("BPO_STALL_TIMEOUT_S", "0.3")
    done = threading.Event()

    def load():
        with waits.loading():
            time.sleep(1.0)
        done.set()

    threading.Thread(target=load).start()
    time.sleep(0.05)
    waits.wait_event(done, "a load")
    assert done.is_set()


def test_check_may_settle_a_wait():
    event = threading.Event()
    waits.wait_event(event, "x", check=event.set)
    assert event.is_set()


def test_async_wait_has_the_same_bounds():
    async def main():
        never: concurrent.futures.Future[int] = concurrent.futures.Future()
        with pytest.raises(OptimizerTimeoutError):
            await waits.await_future(never, "x", deadline=waits.deadline_after(0.2))
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        ready.set_result(3)
        assert await waits.await_future(ready, "x") == 3

    asyncio.run(main())


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_bounds_in_the_environment_are_named(monkeypatch, value):
    monkeypatch.setenv("BPO_STALL_TIMEOUT_S", value)
    with pytest.raises(ValueError, match="BPO_STALL_TIMEOUT_S"):
        waits.stall_timeout_s()
