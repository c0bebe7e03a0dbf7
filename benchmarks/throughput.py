"""Reference loop (the authors' infer_example.py: one generate per prompt) vs our batched engine.

Same model (embedded default), greedy, same max_new_tokens, same prompts, one process.
Usage: python benchmarks/throughput.py [--n 64] [--max-new-tokens 48] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import time

from _common import machine_line, test_prompts

from bpo_core import BPOOptimizer
from bpo_core.default_model import shared_default_backend


def reference_loop(backend, fmt, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int]:
    import torch

    tok, model = backend.tokenizer, backend.model
    outs, new_tokens = [], 0
    for p in prompts:  # one prompt per generate call, full decode, as the reference code does
        ids = tok(fmt.render(p, tok), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
        new_tokens += out.shape[1] - ids["input_ids"].shape[1]
        outs.append(tok.decode(out[0], skip_special_tokens=False))
    return outs, new_tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    prompts = test_prompts(args.n)
    backend = shared_default_backend()
    backend.max_batch_size = args.batch_size
    # Engine only: whole prompts (no context protection), no cache, so both sides do the same work.
    ours = BPOOptimizer(backend, max_new_tokens=args.max_new_tokens, cache=False, protect_context=False, max_input_tokens=4096)
    ours.optimize_batch(prompts[:2])  # warm-up

    start = time.perf_counter()
    _, ref_tokens = reference_loop(backend, ours.fmt, prompts, args.max_new_tokens)
    ref_s = time.perf_counter() - start
    start = time.perf_counter()
    ours.optimize_batch(prompts)
    ours_s = time.perf_counter() - start

    print(machine_line())
    print(f"prompts={len(prompts)} max_new_tokens={args.max_new_tokens} batch_size={args.batch_size}")
    print(f"reference_loop_s={ref_s:.1f} ({len(prompts) / ref_s:.2f} prompts/s, {ref_tokens / ref_s:.1f} new tokens/s)")
    print(f"batched_engine_s={ours_s:.1f} ({len(prompts) / ours_s:.2f} prompts/s)")
    print(f"speedup_vs_reference={ref_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
