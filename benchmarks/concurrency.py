"""64 concurrent ainvoke calls (micro-batched) vs one offline batch of the same 64 prompts.

Usage: python benchmarks/concurrency.py [--n 64] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import machine_line, test_prompts

from bpo_core import BPOOptimizer
from bpo_core.default_model import shared_default_backend


async def concurrent_run(runnable, prompts):
    return await asyncio.gather(*[runnable.ainvoke(p) for p in prompts])


def main() -> None:
    from langchain_bpo import BPORunnable

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args()
    prompts = [p.split("\n")[0] for p in test_prompts(args.n)]
    backend = shared_default_backend()
    common = {"max_new_tokens": args.max_new_tokens, "cache": False}
    offline = BPOOptimizer(backend, **common)
    online = BPOOptimizer(backend, micro_batching=True, max_wait_ms=5, **common)
    offline.optimize_batch(prompts[:2])

    start = time.perf_counter()
    offline.optimize_batch(prompts)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    asyncio.run(concurrent_run(BPORunnable(optimizer=online), prompts))
    conc_s = time.perf_counter() - start
    batches = online._shared.batcher.batches_run
    online.close()
    print(machine_line())
    print(f"prompts={len(prompts)} offline_batch_s={batch_s:.1f} concurrent_ainvoke_s={conc_s:.1f} microbatches={batches}")
    print(f"concurrent_vs_batch={batch_s / conc_s:.2f}")


if __name__ == "__main__":
    main()
