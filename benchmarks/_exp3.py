import asyncio, time, threading
from _common import test_prompts
from bpo_core import BPOOptimizer
from bpo_core.default_model import shared_default_backend
from langchain_bpo import BPORunnable
prompts = [p.split("\n")[0] for p in test_prompts(64)]
backend = shared_default_backend()
common = {"max_new_tokens": 32, "cache": False}
offline = BPOOptimizer(backend, **common)
online = BPOOptimizer(backend, micro_batching=True, max_wait_ms=5, **common)
offline.optimize_batch(prompts[:2])
def t(f):
    s = time.perf_counter(); r = f(); return round(time.perf_counter() - s, 1), r
async def conc():
    return await asyncio.gather(*[BPORunnable(optimizer=online).ainvoke(p) for p in prompts])
async def conc_core():
    return await asyncio.gather(*[online.aoptimize(p) for p in prompts])
print("offline", t(lambda: offline.optimize_batch(prompts))[0])
a = t(lambda: asyncio.run(conc())); print("ainvoke", a[0])
print("offline thread", t(lambda: (lambda th: (th.start(), th.join()))(threading.Thread(target=offline.optimize_batch, args=(prompts,))))[0])
b = t(lambda: asyncio.run(conc_core())); print("core aoptimize", b[0])
o = t(lambda: offline.optimize_batch(prompts)); print("offline", o[0])
print("same results", a[1] == o[1], b[1] == o[1])
