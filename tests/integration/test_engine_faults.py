"""No caller waits forever: faults at random decode steps while threads call at random moments.

Each round injects failures into the lean forward (the decode step and the prefill of joining
rows alike) while 2-5 threads call the backend and the optimizer, with another process loading
the CPU. Every call must return or raise within its bound, and the engine must serve the next
round. ``BPO_STRESS_ROUNDS`` sets the number of rounds (``scripts/stress_engine.py`` runs many).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

import pytest

from bpo_core import BPOOptimizer
from bpo_core.backends.lean_llama import LeanLlama
from bpo_core.errors import BPOError
from bpo_core.generation import settings_for_mode

ROUNDS = int(os.environ.get("BPO_STRESS_ROUNDS", "12"))
#: A call may take this long at most (a generous bound: the machine is loaded on purpose).
CALL_BOUND_S = 60.0

PROMPTS = [
    "how can I create a profile on Facebook?",
    "Give two good examples of customer service.",
    "Write a poem about the ocean.",
    "What are the benefits of regular exercise?",
    "Explain recursion to a child.",
    "List three uses of vinegar.",
]


@pytest.fixture
def cpu_load():
    """Another process keeping a core busy for the test's duration."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait(timeout=10)


def test_faults_at_random_steps_never_leave_a_caller_waiting(backend, monkeypatch, cpu_load):
    monkeypatch.setenv("BPO_STALL_TIMEOUT_S", "20")
    rng = random.Random(1234)
    forward = LeanLlama.forward
    state = {"fail_at": -1, "calls": 0}
    lock = threading.Lock()

    def faulty(self, *args, **kwargs):
        with lock:
            state["calls"] += 1
            fail = state["calls"] == state["fail_at"]
        if fail:
            raise RuntimeError("injected device fault")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LeanLlama, "forward", faulty)
    optimizer = BPOOptimizer(backend, max_new_tokens=12, add_below=None, cache=False, on_error="raise")
    fmt, settings = optimizer.fmt, settings_for_mode("greedy", max_new_tokens=12)
    deciding = settings.model_copy(update={"nothing_above": 0.5})
    outcomes: list[str] = []

    def call(kind: str, prompts: list[str], delay: float) -> None:
        time.sleep(delay)
        try:
            if kind == "backend":
                texts = backend.generate(prompts, fmt, settings)
                assert len(texts) == len(prompts)
            elif kind == "decide":  # the add-or-nothing decision made on the first step
                texts = backend.generate(prompts, fmt.with_style("augment"), deciding)
                assert len(texts) == len(prompts)
            else:
                results = optimizer.rewrite_batch(prompts)
                assert [r.original for r in results] == prompts
            outcomes.append("ok")
        except BPOError as exc:
            assert "injected device fault" in str(exc) or "timed out" in str(exc) or "no progress" in str(exc)
            outcomes.append("error")

    for _ in range(ROUNDS):
        with lock:
            state["calls"], state["fail_at"] = 0, rng.randint(1, 30)
        threads = [
            threading.Thread(
                target=call,
                args=(
                    rng.choice(["backend", "optimizer", "decide"]),
                    rng.sample(PROMPTS, rng.randint(1, 4)),
                    rng.uniform(0, 0.3),
                ),
                daemon=True,
            )
            for _ in range(rng.randint(2, 5))
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, CALL_BOUND_S - (time.monotonic() - started)))
        stuck = [t for t in threads if t.is_alive()]
        assert not stuck, f"{len(stuck)} caller(s) still waiting after {CALL_BOUND_S}s"
    # The engine still works: a fault-free call returns rewrites.
    with lock:
        state["fail_at"] = -1
    assert len(backend.generate(PROMPTS[:2], fmt, settings)) == 2
    assert "ok" in outcomes and "error" in outcomes  # both paths were exercised


def test_an_orphaned_request_fails_instead_of_hanging(backend, monkeypatch):
    """Even if a bug lost a request (here: dropped from the engine's books), its caller gets an error."""
    from bpo_core.backends.continuous import ContinuousDecoder
    from bpo_core.errors import GenerationError

    decoder = ContinuousDecoder(LeanLlama(backend.model), eos_ids=[backend.tokenizer.eos_token_id])
    seq = backend.tokenizer(PROMPTS[0])["input_ids"]
    add = decoder._drain_loop

    def losing_drain():
        with decoder._state:  # the bug: the request vanishes and the loop ends as if all were done
            decoder._pending, decoder._running = [], False

    monkeypatch.setattr(decoder, "_drain_loop", losing_drain)
    started = time.monotonic()
    with pytest.raises(GenerationError, match="left without a decoding loop"):
        decoder.generate([seq], max_new_tokens=4)
    assert time.monotonic() - started < 10
    monkeypatch.setattr(decoder, "_drain_loop", add)
    decoder.eos = set()
    assert [len(row) for row in decoder.generate([seq], max_new_tokens=4)] == [4]


def stick_decode_steps(monkeypatch) -> threading.Event:
    """Make every decode step wait (up to 60 s) until the returned event is set."""
    release = threading.Event()
    forward = LeanLlama.forward

    def stuck(self, *args, **kwargs):
        release.wait(60)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LeanLlama, "forward", stuck)
    return release


def test_a_stuck_engine_times_out_with_the_fallback(backend, monkeypatch):
    """A decode step that never returns: the caller gets the original prompt after the stall bound."""
    monkeypatch.setenv("BPO_STALL_TIMEOUT_S", "2")
    release = stick_decode_steps(monkeypatch)
    optimizer = BPOOptimizer(backend, max_new_tokens=4, add_below=None, cache=False)
    started = time.monotonic()
    try:
        result = optimizer.rewrite("Describe autumn leaves.")
    finally:
        release.set()
    assert time.monotonic() - started < 30
    assert result.fell_back and result.optimized == result.original
    assert "no progress" in result.reason


def optimizer_input(backend, prompt: str) -> str:
    """The text a remote client sends to ``/v1/completions``: the prompt in the optimizer's template."""
    return BPOOptimizer(backend).fmt.render(prompt, backend.tokenizer)


def test_server_answers_every_request_when_the_model_fails(backend, monkeypatch):
    """Concurrent requests while the model errors: each gets a response, and the server keeps serving."""
    import concurrent.futures

    import httpx

    from bpo_core.server import RawFormat, create_app
    from tests.conftest import live_server

    monkeypatch.setenv("BPO_STALL_TIMEOUT_S", "20")
    forward = LeanLlama.forward
    failing = threading.Event()
    failing.set()

    def faulty(self, *args, **kwargs):
        if failing.is_set():
            raise RuntimeError("injected device fault")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LeanLlama, "forward", faulty)
    app = create_app(BPOOptimizer(backend, max_new_tokens=8, add_below=None, cache=False), model_name="bpo-test")
    with live_server(app) as url:

        def post(i: int) -> httpx.Response:
            if i % 2:
                return httpx.post(f"{url}/optimize", json={"prompts": [PROMPTS[i % len(PROMPTS)]]}, timeout=90)
            return httpx.post(
                f"{url}/completions", json={"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 8}, timeout=90
            )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(post, range(8)))
        completions, optimizes = responses[0::2], responses[1::2]
        assert [r.status_code for r in completions] == [503] * 4
        assert all("injected device fault" in r.json()["error"]["message"] for r in completions)
        assert [r.status_code for r in optimizes] == [200] * 4  # the optimizer falls back per prompt
        assert all(r.json()["results"][0]["fell_back"] for r in optimizes)
        failing.clear()
        prompt = optimizer_input(backend, PROMPTS[0])
        ok = httpx.post(f"{url}/completions", json={"prompt": prompt, "max_tokens": 6}, timeout=90)
        assert ok.status_code == 200
        assert (
            ok.json()["choices"][0]["text"]
            == backend.generate([prompt], RawFormat(), settings_for_mode("greedy", max_new_tokens=6))[0]
        )


def test_server_request_timeout_answers_504(backend, monkeypatch):
    import httpx

    from bpo_core.server import create_app
    from tests.conftest import live_server

    release = stick_decode_steps(monkeypatch)
    app = create_app(BPOOptimizer(backend, max_new_tokens=4, add_below=None, cache=False), request_timeout_s=1.0)
    try:
        with live_server(app) as url:
            r = httpx.post(f"{url}/completions", json={"prompt": PROMPTS[0], "max_tokens": 4}, timeout=30)
            assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
            r = httpx.post(f"{url}/optimize", json={"prompts": [PROMPTS[1]]}, timeout=30)
            assert r.status_code == 504
            assert httpx.get(f"{url.removesuffix('/v1')}/health", timeout=10).status_code == 200
    finally:
        release.set()
