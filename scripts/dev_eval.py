"""Score an optimizer on the held-out dev split of train_val300 (used to choose training settings).

Never tunes on bpo_test.json. Usage: python scripts/dev_eval.py [ADAPTER_DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import time

from bpo_core import BPOOptimizer
from bpo_core.evaluation.intrinsic import score
from bpo_core.training import load_pairs
from bpo_core.training.sft import split_pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("adapter", nargs="?", help="trained folder; default: the embedded default optimizer")
    ap.add_argument("--data", default="../shared/data/bpo/train_val300.json")
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--show", type=int, default=8)
    args = ap.parse_args()

    _, dev = split_pairs(load_pairs(args.data), args.eval_fraction, args.seed)
    opt = (
        BPOOptimizer.from_pretrained(args.adapter, max_new_tokens=args.max_new_tokens)
        if args.adapter
        else BPOOptimizer.default(max_new_tokens=args.max_new_tokens)
    )
    prompts, refs = [p.prompt for p in dev], [p.optimized for p in dev]
    start = time.perf_counter()
    results = opt.rewrite_batch(prompts)
    elapsed = time.perf_counter() - start
    rewrites = [r.optimized for r in results]
    raw_changed = sum(1 for r in results if r.reason and "blank" not in r.reason)
    print(f"dev pairs={len(dev)} time={elapsed:.1f}s guard_rejections={raw_changed}")
    print("unchanged:", score(prompts, prompts, refs).line())
    print("optimizer:", score(prompts, rewrites, refs).line())
    for r in results[: args.show]:
        print(f"- {r.original!r}\n  -> {r.optimized!r}" + (f"  [{r.reason}]" if r.reason else ""))


if __name__ == "__main__":
    main()
