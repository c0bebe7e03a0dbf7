"""Fit the segmenter (bpo_core/rewrite/segment.py) on labelled real prompts.

    python scripts/train_segmenter.py                       # ../shared/data/oneprompted/train.jsonl
    python scripts/train_segmenter.py --data train.jsonl --out bpo_core/data/segmenter.json

Each unit of a prompt is labelled material when most of it lies inside the labelled ``context``,
else instruction. A logistic model over ``FEATURES`` is fitted (L2, Newton steps, records weighted
equally whatever their length), then the layout priors and the abstention threshold are chosen on
the same training records (grid search: most exact layouts, exposing pasted material to the
optimizer in at most 3% of prompts). Validation figures come from ``bpo eval --faithfulness``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bpo_core.evaluation.segmentation import load_labelled, score_segmentations  # noqa: E402
from bpo_core.rewrite.segment import (  # noqa: E402
    FEATURES,
    GAP_FEATURES,
    WEIGHTS_PATH,
    Segmentation,
    SegmenterModel,
    Span,
    best_layout,
    gap_features,
    unit_features,
    units,
)


def datasets(records: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Units (instruction or not) and interior gaps (material starts here / ends here), weighted per record."""
    rows: dict[str, tuple[list, list, list]] = {"unit": ([], [], []), "start": ([], [], []), "end": ([], [], [])}
    for record in records:
        prompt, context = record["prompt"], record["context"]
        at = prompt.find(context) if context else -1
        if context and at < 0:
            continue
        spans = units(prompt)
        if not spans:
            continue
        weight = 1.0 / len(spans) ** 0.5
        labels = []
        for (start, end), row in zip(spans, unit_features(prompt, spans)):
            inside = max(0, min(end, at + len(context)) - max(start, at)) if context else 0
            labels.append(0.0 if inside * 2 > end - start else 1.0)
            for target, value in zip(rows["unit"], (row, labels[-1], weight)):
                target.append(value)
        material = [k for k, label in enumerate(labels) if label == 0.0]
        first, last = (material[0], material[-1] + 1) if material else (-1, -1)
        for k, row in enumerate(gap_features(prompt, spans), start=1):
            for name, gold in (("start", first), ("end", last)):
                for target, value in zip(rows[name], (row, float(k == gold), weight)):
                    target.append(value)
    return {name: tuple(np.array(v) for v in triple) for name, triple in rows.items()}  # type: ignore[misc]


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1.0, steps: int = 30) -> np.ndarray:
    beta = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ beta)))
        grad = x.T @ (w * (p - y)) + l2 * beta
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        beta -= np.linalg.solve(hess, grad)
    return beta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "oneprompted" / "train.jsonl")
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--max-exposed", type=float, default=0.03)
    args = parser.parse_args()
    records = load_labelled(args.data)
    data = datasets(records)
    beta = {name: fit_logistic(*triple) for name, triple in data.items()}
    print(f"{len(records)} records, {len(data['unit'][1])} units, {len(data['start'][1])} gaps")
    base = SegmenterModel(*(tuple(float(b) for b in beta[name]) for name in ("unit", "start", "end")))
    prepared = []  # (prompt, units, unit logits, gap logits): the priors below change none of them
    for r in records:
        spans = units(r["prompt"])
        prepared.append((r["prompt"], spans, base.unit_logits(r["prompt"], spans), base.gap_logits(r["prompt"], spans)))
    best = None
    grid = itertools.product([-2.0, 0.0, 2.0], [0.0, 2.0, 4.0], [-4.0, -2.0], [-4.0, -2.0, 0.0])
    for before, after, around, none in grid:
        model = SegmenterModel(base.weights, base.start_weights, base.end_weights, before, after, around, none, 0.0)
        segs = [
            best_layout(p, spans, logits, gaps, model)
            if len(spans) > 1
            else Segmentation(p, (Span("instruction", 0, len(p)),), 1.0)
            for p, spans, logits, gaps in prepared
        ]
        confidences = sorted({0.0, *[round(s.confidence, 3) for s in segs]})
        for threshold in confidences[:: max(1, len(confidences) // 60)]:
            scores = score_segmentations(records, segs, threshold)
            if scores["exposed"] > args.max_exposed:
                continue
            key = (scores["exact"], -scores["abstained"])
            if best is None or key > best[0]:
                best = (key, before, after, around, none, threshold, scores)
    if best is None:
        sys.exit(f"no setting keeps material exposure at or under {args.max_exposed}")
    _, before, after, around, none, threshold, scores = best
    print(f"priors before={before} after={after} around={around} none={none} min_confidence={threshold}: {scores}")
    args.out.write_text(
        json.dumps(
            {
                "features": list(FEATURES),
                "weights": [round(float(b), 5) for b in beta["unit"]],
                "gap_features": list(GAP_FEATURES),
                "start_weights": [round(float(b), 5) for b in beta["start"]],
                "end_weights": [round(float(b), 5) for b in beta["end"]],
                "prior_before": before,
                "prior_after": after,
                "prior_around": around,
                "prior_none": none,
                "min_confidence": threshold,
                "trained_on": "oneprompted/train.jsonl (real ShareGPT prompts, MIT), scripts/train_segmenter.py",
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
