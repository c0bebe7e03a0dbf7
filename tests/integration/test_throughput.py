"""Throughput features: caches, dynamic micro-batching, bulk rewriting, remote optimizer + server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import stat
import threading
import time

import pytest

from bpo_core import BPOOptimizer, ChatFormat
from bpo_core.batching import MicroBatcher
from bpo_core.bulk import optimize_file
from bpo_core.cache import SQLiteCache
from bpo_core.guard import GuardConfig
from tests.conftest import PROMPTS, CountingBackend, live_server


def test_lru_cache_hits_skip_generation(backend):
    spy = CountingBackend(backend)
    opt = BPOOptimizer(spy, add_below=None, max_new_tokens=24)
    first = opt.rewrite_batch(PROMPTS[:2])
    again = opt.rewrite_batch(PROMPTS[:2])
    assert again == first and len(spy.calls) == 1
    assert opt.cache.hits == 2
    opt.rewrite(PROMPTS[0], mode="stable")  # sampling bypasses the cache
    opt.rewrite(PROMPTS[0], mode="stable")
    assert len(spy.calls) == 3
    BPOOptimizer(spy, add_below=None, max_new_tokens=24, cache=False).rewrite(PROMPTS[0])
    assert len(spy.calls) == 4


def test_cache_key_separates_settings(backend):
    spy = CountingBackend(backend)
    opt = BPOOptimizer(spy, add_below=None, max_new_tokens=24)
    opt.rewrite(PROMPTS[1])
    opt.with_options(max_new_tokens=12).rewrite(PROMPTS[1])
    opt.rewrite(PROMPTS[1], rounds=2)
    assert len(spy.calls) >= 3


def test_sqlite_cache_persists_across_optimizers_and_is_private(backend, tmp_path):
    path = tmp_path / "cache" / "bpo.sqlite"
    spy = CountingBackend(backend)
    first = BPOOptimizer(spy, add_below=None, max_new_tokens=24, cache_path=str(path)).rewrite(PROMPTS[2])
    second = BPOOptimizer(spy, add_below=None, max_new_tokens=24, cache_path=str(path)).rewrite(PROMPTS[2])
    assert first == second and len(spy.calls) == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_sqlite_cache_is_safe_across_processes(tmp_path):
    import multiprocessing as mp

    path = str(tmp_path / "shared.sqlite")
    SQLiteCache(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(path, n)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    cache = SQLiteCache(path)
    assert all(cache.get(f"{n}-{i}") is not None for n in range(3) for i in range(50))


def _write_many(path: str, n: int) -> None:
    from bpo_core.cache import SQLiteCache
    from bpo_core.result import OptimizationResult

    cache = SQLiteCache(path)
    for i in range(50):
        cache.put(f"{n}-{i}", OptimizationResult("a", "b"))


def test_microbatcher_coalesces_and_isolates_errors():
    seen = []

    def run(group, items):
        seen.append((group, list(items)))
        if group == "bad":
            raise RuntimeError("boom")
        return [x * 2 for x in items]

    batcher = MicroBatcher(run, max_wait_ms=50, max_batch_size=8)
    futures = [batcher.submit("ok", i) for i in range(5)] + [batcher.submit("bad", 9)]
    assert [f.result(5) for f in futures[:5]] == [0, 2, 4, 6, 8]
    with pytest.raises(RuntimeError, match="boom"):
        futures[5].result(5)
    assert len([g for g, _ in seen if g == "ok"]) == 1  # one batch for the five
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("ok", 1)


def test_microbatcher_starts_the_next_batch_while_one_runs():
    """A slow batch does not hold back the calls that arrive during it (they may join it on the engine)."""

    release, started = threading.Event(), []

    def run(group, items):
        started.append(list(items))
        if items == ["slow"]:
            assert release.wait(10)
        return items

    batcher = MicroBatcher(run, max_wait_ms=1, max_batch_size=8, max_concurrent_batches=2)
    slow = batcher.submit("g", "slow")
    while not started:
        time.sleep(0.001)
    assert batcher.submit("g", "quick").result(5) == "quick"  # done while the first batch still runs
    assert not slow.done()
    release.set()
    assert slow.result(5) == "slow"
    batcher.close()
    with pytest.raises(ValueError, match="max_concurrent_batches"):
        MicroBatcher(run, max_concurrent_batches=0)


async def test_concurrent_ainvoke_share_one_batch(backend):
    spy = CountingBackend(backend)
    opt = BPOOptimizer(spy, add_below=None, max_new_tokens=16, micro_batching=True, max_wait_ms=20, cache=False)
    prompts = [f"Describe the number {i}." for i in range(8)]
    results = await asyncio.gather(*[opt.arewrite(p) for p in prompts])
    assert [r.original for r in results] == prompts
    assert len(spy.calls) <= 2 and sum(len(c) for c in spy.calls) == 8
    opt.close()


async def test_separate_runnables_over_one_optimizer_share_batches(backend):
    from langchain_bpo import BPORunnable

    spy = CountingBackend(backend)
    opt = BPOOptimizer(spy, add_below=None, max_new_tokens=16, micro_batching=True, max_wait_ms=50, cache=False)
    prompts = [f"Describe the number {i}." for i in range(8)]
    # A web app may build a chain (and a BPORunnable) per request: their calls still coalesce.
    results = await asyncio.gather(*[BPORunnable(optimizer=opt).ainvoke(p) for p in prompts])
    assert len(results) == 8 and len(spy.calls) <= 2 and sum(len(c) for c in spy.calls) == 8
    # Options that change results never share a batch.
    await asyncio.gather(opt.with_options(max_new_tokens=8).arewrite(prompts[0]), opt.arewrite(prompts[1]))
    assert [len(c) for c in spy.calls[-2:]] == [1, 1]
    opt.close()


def test_threads_coalesce(backend):
    spy = CountingBackend(backend)
    opt = BPOOptimizer(spy, add_below=None, max_new_tokens=16, micro_batching=True, max_wait_ms=20, cache=False)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        out = list(pool.map(opt.optimize, PROMPTS + PROMPTS[:2]))
    assert len(out) == 6 and len(spy.calls) <= 2
    opt.close()


def test_bulk_rewrite_resumes_after_kill(backend, tmp_path):
    records = [{"id": i, "instruction": p} for i, p in enumerate(PROMPTS)]
    src = tmp_path / "data.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = tmp_path / "out.jsonl"
    opt = BPOOptimizer(backend, max_new_tokens=16)
    # simulate a run killed after two records, mid-way through writing the third line
    full = optimize_file(opt, src, out, batch_size=2, progress=False)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
    again = optimize_file(opt, src, out, batch_size=2, progress=False)
    assert full["written"] == 4 and again == {"total": 4, "skipped": 2, "written": 2, "changed": again["changed"]}
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2, 3]
    assert [r["instruction_original"] for r in rows] == PROMPTS


@pytest.fixture(scope="module")
def server(backend):
    from bpo_core.server import create_app

    with live_server(create_app(BPOOptimizer(backend, max_new_tokens=24), model_name="bpo-test")) as url:
        yield url


def test_remote_optimizer_matches_local(server, backend):
    remote = BPOOptimizer.from_openai_compatible(
        server, "bpo-test", fmt=ChatFormat(), style="augment", max_new_tokens=24, cache=False
    )
    # Over /v1/completions the client runs the rewrite path; the learned guard stays on the server
    # (its /v1/optimize runs it), so the client matches the local optimizer without it.
    local = BPOOptimizer(backend, max_new_tokens=24, guard=GuardConfig(learned=False))
    assert remote.optimize_batch(PROMPTS[:3]) == local.optimize_batch(PROMPTS[:3])
    res = remote.rewrite("   ")
    assert res.fell_back and "blank" in res.reason


def test_server_optimize_endpoint_and_models(server):
    import httpx

    r = httpx.post(f"{server}/optimize", json={"prompts": [PROMPTS[0]]}, timeout=60)
    assert r.status_code == 200 and r.json()["results"][0]["original"] == PROMPTS[0]
    assert httpx.get(f"{server}/models").json()["data"][0]["id"] == "bpo-test"
    assert httpx.post(f"{server}/completions", json={"prompt": []}).status_code == 400


def test_remote_failures_fall_back_after_retries():
    opt = BPOOptimizer.from_openai_compatible("http://127.0.0.1:9/v1", "x", max_retries=1, timeout_s=1)
    opt.backend.backoff_s = 0.01
    res = opt.rewrite("Explain the water cycle.")
    assert res.fell_back and "failed" in res.reason
