"""Idle work on the engine thread: runs in steps while no job waits, and never holds a job up for long."""

from __future__ import annotations

import threading
import time

from bpo_core.backends import engine_thread
from bpo_core.backends.engine_thread import run_on_engine, when_idle


def _drain_idle(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while engine_thread._idle and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine_thread._idle, "idle work did not finish"


def test_idle_work_runs_on_the_engine_thread_until_done():
    steps: list[str] = []

    def step() -> bool:
        steps.append(threading.current_thread().name)
        return len(steps) == 5

    when_idle(step)
    _drain_idle()
    assert steps == ["bpo-engine"] * 5  # exactly until it said it was done


def test_a_job_waits_for_one_idle_step_at_most():
    started = threading.Event()
    stop = threading.Event()

    def step() -> bool:  # endless 20 ms steps until told to stop
        started.set()
        time.sleep(0.02)
        return stop.is_set()

    when_idle(step)
    assert started.wait(5)
    waits = []
    for _ in range(5):
        t0 = time.monotonic()
        run_on_engine(lambda: None)
        waits.append(time.monotonic() - t0)
    stop.set()
    _drain_idle()
    assert max(waits) < 1.0, waits  # a step is 20 ms; a job never waits for the whole idle work


def test_a_failing_step_drops_its_work_and_the_thread_lives_on(caplog):
    calls = []

    def step() -> bool:
        calls.append(1)
        raise RuntimeError("packing failed")

    when_idle(step)
    _drain_idle()
    assert calls == [1] and "idle work" in caplog.text
    assert run_on_engine(lambda: 42) == 42


def test_without_the_engine_thread_idle_work_is_not_run(monkeypatch):
    monkeypatch.setenv("BPO_ENGINE_THREAD", "0")
    ran = []
    when_idle(lambda: ran.append(1) or True)
    assert not engine_thread._idle and not ran
