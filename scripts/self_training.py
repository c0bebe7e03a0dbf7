"""Self-training round: the optimizer learns from its own additions that a strong LLM judged better.

    python scripts/self_training.py pairs   # labels -> training_data/self_training/pairs.jsonl
    bpo train --data training_data/self_training/pairs.jsonl -o runs/self/adapter \
        --init-adapter bpo_core/weights/bpo-smollm2-135m-lora --frozen-layers 16 \
        --epochs 1 --lr 2e-4 --batch-size 8 --seed 0

This is BPO's loop turned on the student: its additions, judged blind with the rubric
(``training_data/addition_guard/labels.jsonl``), are preference feedback; the ones judged B become
targets (rejection-sampling fine-tuning), mixed with a replay sample of the teacher pairs it was
trained on so neither style drifts. Training continues the shipped adapter with the first 16
layers frozen: the learned guard reads layer 16, so it scores prompts and additions exactly as
before and stays valid for the new weights.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from faithful_data import read_jsonl, write_jsonl  # noqa: E402

LABELS = ROOT / "training_data" / "addition_guard" / "labels.jsonl"
TEACHER = ROOT / "training_data" / "faithful" / "pairs_generic.jsonl"
OUT = ROOT / "training_data" / "self_training"
REPLAY = 600


def model_view(prompt: str) -> str | None:
    """What the optimizer model sees of ``prompt`` (placeholders for pasted material), or ``None`` when it sees nothing."""
    from bpo_core.rewrite.segment import default_model, segment

    seg = segment(prompt)
    return None if seg.abstains(default_model().min_confidence) else seg.view()


def build_pairs(replay: int, seed: int) -> None:
    labels = read_jsonl(LABELS)
    own = []
    for r in labels:
        if r["label"] != "B":
            continue
        view = model_view(r["prompt"])
        if view is None:
            continue
        own.append(
            {
                "id": r["id"],
                "source": f"self/{r['source']}",
                "style": "augment",
                "prompt": view,
                "target": r["addition"],
                "label": "B",
            }
        )
    seen = {p["prompt"] for p in own}
    teacher = [p for p in read_jsonl(TEACHER) if p["prompt"] not in seen]
    picked = sorted(random.Random(seed).sample(range(len(teacher)), min(replay, len(teacher))))
    rows = own + [{**teacher[i], "source": f"replay/{teacher[i]['source']}"} for i in picked]
    random.Random(seed + 1).shuffle(rows)
    write_jsonl(OUT / "pairs.jsonl", rows)
    styles = {s: sum(1 for r in rows if r["style"] == s) for s in ("augment", "rewrite")}
    print(
        f"{len(own)} own judged-B additions + {len(picked)} replayed teacher pairs -> {OUT / 'pairs.jsonl'} ({styles})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pairs", help="judged-B additions + replay -> training_data/self_training/pairs.jsonl")
    p.add_argument("--replay", type=int, default=REPLAY)
    p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "pairs":
        build_pairs(args.replay, args.seed)


if __name__ == "__main__":
    main()
