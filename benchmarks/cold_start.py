"""Cold start (import + load + first rewrite) in a fresh process, and its peak RSS.

Run it twice: the first-ever run includes the one-time GGUF conversion.
Usage: python benchmarks/cold_start.py
"""

from __future__ import annotations

import resource
import time

start = time.perf_counter()
from bpo_core import BPOOptimizer  # noqa: E402

opt = BPOOptimizer.default(max_new_tokens=48)
result = opt.rewrite("how can I create a profile on Facebook?")
elapsed = time.perf_counter() - start
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"first rewrite: {result.optimized!r}")
print(f"cold_start_s={elapsed:.1f} peak_rss_mb={peak_mb:.0f}")
