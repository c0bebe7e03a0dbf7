"""Decode tokens/s at batch 1 next to the memory-bandwidth roofline.

Measures our engine's greedy loop (bpo_core.backends.continuous on the lean forward) and prints
model.generate's speed next to it. Each decoded token reads every weight once, so tokens/s <=
bandwidth / model bytes. Bandwidth is measured here with a large tensor copy. Everything runs on
the engine thread, as the optimizer's own work does. Usage: python benchmarks/roofline.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import machine_line

from bpo_core.backends.engine_thread import run_on_engine
from bpo_core.default_model import shared_default_backend


def copy_bandwidth_gbs(mb: int = 512, repeats: int = 5) -> float:
    import torch

    src = torch.empty(mb * 2**20 // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9  # read + write


def decode_tokens_per_s(backend, n_tokens: int = 64, engine: bool = True, half: bool = False) -> float:
    """Batch-1 decode speed of our engine (the lean forward's greedy loop; ``half``: on its fp16
    weight copies), or of ``model.generate``."""
    import torch

    from bpo_core.backends.continuous import continuous_greedy
    from bpo_core.backends.lean_llama import LeanLlama

    tok, model = backend.tokenizer, backend.model
    ids = tok("Write a short story about a lighthouse keeper.", return_tensors="pt")
    with torch.inference_mode():
        if engine:
            lean, seq = LeanLlama(model, half_weights=half), ids["input_ids"][0].tolist()
            while not lean.pack_half_weights(budget_s=1.0):
                pass
            continuous_greedy(lean, [seq], max_new_tokens=4, eos_ids=[])  # warm-up
            start = time.perf_counter()
            rows = continuous_greedy(lean, [seq], max_new_tokens=n_tokens, eos_ids=[])
            return len(rows[0]) / (time.perf_counter() - start)
        model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)  # warm-up
        start = time.perf_counter()
        out = model.generate(
            **ids, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False, pad_token_id=tok.eos_token_id
        )
        elapsed = time.perf_counter() - start
    return (out.shape[1] - ids["input_ids"].shape[1]) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    backend = shared_default_backend()
    params = sum(p.numel() * p.element_size() for p in backend.model.parameters())
    bandwidth = run_on_engine(copy_bandwidth_gbs)
    # On the engine thread, where the optimizer's own work runs (see engine_thread.py). This
    # shared 2-core machine is noisy: median of --repeats runs, alternating the two loops.
    ours, halves, theirs = [], [], []
    for _ in range(args.repeats):
        ours.append(run_on_engine(decode_tokens_per_s, backend))
        halves.append(run_on_engine(decode_tokens_per_s, backend, half=True))
        theirs.append(run_on_engine(decode_tokens_per_s, backend, engine=False))
    tps, tps_half, tps_generate = statistics.median(ours), statistics.median(halves), statistics.median(theirs)
    roofline = bandwidth * 1e9 / params
    print(machine_line())
    print(f"model_bytes={params / 1e6:.0f}MB copy_bandwidth={bandwidth:.1f}GB/s roofline_tokens_s={roofline:.1f}")
    print(
        f"decode_tokens_s_batch1={tps:.1f} (float32 weights, median of {args.repeats}: {', '.join(f'{x:.1f}' for x in ours)}; "
        f"transformers generate: {tps_generate:.1f})"
    )
    print(
        f"decode_tokens_s_batch1_fp16_copies={tps_half:.1f} (half the weight bytes; float32 roofline x2 = {2 * roofline:.1f})"
    )
    print(f"roofline_fraction={tps / roofline:.2f} fp16_copies_vs_float32={tps_half / tps:.2f}")


if __name__ == "__main__":
    main()
