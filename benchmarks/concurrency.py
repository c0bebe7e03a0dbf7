"""64 concurrent ainvoke calls (micro-batched) vs one offline batch of the same 64 prompts.

Then the same 64 calls arriving one every --gap-ms (a server's steady stream rather than a
burst): each joins the batch already decoding, so the stream should take about as long as the
offline batch plus the arrival span, not the sum of 64 single calls.
Usage: python benchmarks/concurrency.py [--n 64] [--max-new-tokens 32] [--gap-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from _common import machine_line, test_prompts

from bpo_core import BPOOptimizer
from bpo_core.default_model import shared_default_backend


async def concurrent_run(runnable, prompts):
    return await asyncio.gather(*[runnable.ainvoke(p) for p in prompts])


async def staggered_run(runnable, prompts, gap_s: float) -> list[float]:
    """Call i starts at i * gap_s; returns each call's latency."""

    async def one(i: int, prompt: str) -> float:
        await asyncio.sleep(i * gap_s)
        start = time.perf_counter()
        await runnable.ainvoke(prompt)
        return time.perf_counter() - start

    return await asyncio.gather(*[one(i, p) for i, p in enumerate(prompts)])


def main() -> None:
    from langchain_bpo import BPORunnable

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--gap-ms", type=float, default=50.0)
    args = ap.parse_args()
    prompts = [p.split("\n")[0] for p in test_prompts(args.n)]
    backend = shared_default_backend()
    common = {"max_new_tokens": args.max_new_tokens, "cache": False}
    offline = BPOOptimizer(backend, **common)
    online = BPOOptimizer(backend, micro_batching=True, max_wait_ms=5, **common)
    offline.optimize_batch(prompts)  # warm-up: a process's first large batch pays one-time page faults

    start = time.perf_counter()
    offline.optimize_batch(prompts)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    asyncio.run(concurrent_run(BPORunnable(optimizer=online), prompts))
    conc_s = time.perf_counter() - start
    batches = online._shared.batcher.batches_run
    start = time.perf_counter()
    latencies = sorted(asyncio.run(staggered_run(BPORunnable(optimizer=online), prompts, args.gap_ms / 1000)))
    stream_s = time.perf_counter() - start
    stream_batches = online._shared.batcher.batches_run - batches
    single = []
    for p in prompts[:8]:
        start = time.perf_counter()
        offline.optimize(p)
        single.append(time.perf_counter() - start)
    online.close()
    print(machine_line())
    print(
        f"prompts={len(prompts)} offline_batch_s={batch_s:.1f} concurrent_ainvoke_s={conc_s:.1f} microbatches={batches}"
    )
    print(f"concurrent_vs_batch={batch_s / conc_s:.2f}")
    span = (len(prompts) - 1) * args.gap_ms / 1000
    print(
        f"stream: one call every {args.gap_ms:.0f} ms (arrivals span {span:.1f} s): total_s={stream_s:.1f} "
        f"microbatches={stream_batches} latency_p50_s={statistics.median(latencies):.2f} "
        f"p95_s={latencies[int(0.95 * (len(latencies) - 1))]:.2f}; one call alone: {statistics.median(single):.2f} s, "
        f"64 alone in a row: ~{statistics.median(single) * len(prompts):.0f} s"
    )
    print(f"stream_vs_batch={batch_s / stream_s:.2f}")


if __name__ == "__main__":
    main()
