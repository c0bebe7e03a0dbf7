"""Adapter overhead over a direct core call, and the cost of a cache hit.

Overhead is measured with a cache-hit optimizer, so the model's time does not drown it: the
same call through BPORunnable.invoke / BPOQueryTransform.run minus optimizer.rewrite.
Usage: python benchmarks/overhead.py
"""

from __future__ import annotations

import statistics
import time

from _common import machine_line

from bpo_core import BPOOptimizer
from bpo_core.default_model import shared_default_backend

PROMPT = "how can I create a profile on Facebook?"


def per_call_us(fn, n: int = 2000) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    from langchain_bpo import BPORunnable
    from llamaindex_bpo import BPOQueryTransform

    opt = BPOOptimizer(shared_default_backend())
    opt.rewrite(PROMPT)  # fill the cache
    runnable = BPORunnable(optimizer=opt)
    transform = BPOQueryTransform(opt)

    core_us = per_call_us(lambda: opt.rewrite(PROMPT))
    lc_us = per_call_us(lambda: runnable.invoke(PROMPT), n=500)

    # the transform's own per-query cache is cleared so each call goes through the optimizer
    def li_call():
        transform._cache.clear()
        transform.run(PROMPT)

    li_us = per_call_us(li_call, n=1000)
    print(machine_line())
    print(f"core_cache_hit_us={core_us:.0f}")
    print(f"langchain_invoke_us={lc_us:.0f} llamaindex_run_us={li_us:.0f}")
    print(
        f"overhead_ms={max(lc_us, li_us) / 1000 - core_us / 1000:.3f} (langchain {(lc_us - core_us) / 1000:.3f}, llamaindex {(li_us - core_us) / 1000:.3f})"
    )
    print(f"cache_hit_us={core_us:.0f}")


if __name__ == "__main__":
    main()
