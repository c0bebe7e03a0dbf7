"""All local model work runs on one engine thread, whichever thread asks (see engine_thread.py)."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from bpo_core.backends import engine_thread
from bpo_core.backends.engine_thread import on_engine_thread, run_on_engine


def test_calls_from_any_thread_run_on_one_engine_thread():
    here = run_on_engine(threading.current_thread)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        there = list(pool.map(lambda _: run_on_engine(threading.current_thread), range(8)))
    assert here.name == "bpo-engine" and all(t is here for t in there)
    assert run_on_engine(on_engine_thread) and not on_engine_thread()
    assert run_on_engine(lambda: run_on_engine(lambda: 41) + 1) == 42  # nested calls run inline, no deadlock


def test_errors_reach_the_caller_and_the_thread_survives():
    def boom():
        raise KeyError("bad")

    with pytest.raises(KeyError, match="bad"):
        run_on_engine(boom)
    assert run_on_engine(lambda x, y=1: x + y, 1, y=2) == 3


def test_model_work_runs_on_the_engine_thread(backend, monkeypatch):
    """Greedy (lean forward, continuous batching) and sampling (transformers generate) alike."""
    from bpo_core import BPOOptimizer
    from bpo_core.backends.lean_llama import LeanLlama
    from bpo_core.generation import settings_for_mode

    seen: list[str] = []
    forward, sample = LeanLlama.forward, backend._generate

    def spy_forward(self, *args, **kwargs):
        seen.append(threading.current_thread().name)
        return forward(self, *args, **kwargs)

    def spy_sample(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return sample(*args, **kwargs)

    monkeypatch.setattr(LeanLlama, "forward", spy_forward)
    monkeypatch.setattr(backend, "_generate", spy_sample)
    fmt, greedy = BPOOptimizer(backend).fmt, settings_for_mode("greedy", max_new_tokens=4)
    backend.generate(["hi"], fmt, greedy)
    worker = threading.Thread(target=backend.generate, args=(["hello"], fmt, greedy))
    worker.start()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(backend.generate, ["hey"], fmt, settings_for_mode("stable", max_new_tokens=4)).result()
    worker.join()
    assert len(seen) >= 3 and set(seen) == {"bpo-engine"}


def test_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("BPO_ENGINE_THREAD", "0")
    assert not engine_thread.enabled()
    assert run_on_engine(threading.current_thread) is threading.current_thread()
