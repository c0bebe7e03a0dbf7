"""Judge-free faithfulness figures of an optimizer on prompts with labelled instruction and material.

``bpo eval --faithfulness`` runs the optimizer over a labelled set (default: the shipped
``oneprompted`` validation split, real ShareGPT prompts, never trained on) and reports:

* **material kept**: of the prompts with pasted material, how many get it back byte for byte;
* **prompt kept**: of the changed prompts, how many keep the user's whole prompt verbatim (augment);
* **specifics kept**: of the changed prompts, how many keep every specific of the original
  (numbers, identifiers, names, acronyms, quotes, URLs);
* **novel specifics**: of all prompts, how many gain a specific the user never gave;
* **task kept**: of the changed prompts, how many keep each write/summarize/translate/edit/code
  request;
* **changed**, with the mean words added, and the fallback reasons;
* **segmentation**: exact instruction/material spans, abstentions and exposed material.

These checks are the guard's own, so they hold by construction where the guard ran; the figure
that matters is measured independently, by a strong LLM with ``../shared/eval/rubric.md``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bpo_core.evaluation.segmentation import load_labelled, score_segmentations
from bpo_core.result import OptimizationResult
from bpo_core.rewrite.faithfulness import KEPT_TASKS, missing_specifics, novel_specifics, task_kinds
from bpo_core.rewrite.segment import default_model, segment

DEFAULT_SET = Path(__file__).resolve().parent.parent / "data" / "oneprompted" / "validation.jsonl"


def faithfulness_figures(records: Sequence[dict[str, Any]], results: Sequence[OptimizationResult]) -> dict[str, Any]:
    """The figures above for ``results`` (one per record, in order)."""
    n = len(records)
    changed = [(r, res) for r, res in zip(records, results) if res.changed]
    with_material = [(r, res) for r, res in zip(records, results) if r["context"]]
    added = [len(res.optimized.split()) - len(res.original.split()) for _, res in changed]
    segs = [segment(r["prompt"]) for r in records]

    def rate(hits: int, total: int) -> dict[str, Any]:
        return {"hits": hits, "total": total, "rate": round(hits / total, 4) if total else None}

    return {
        "n": n,
        "changed": rate(len(changed), n),
        "styles": dict(Counter(res.style for _, res in changed)),
        "mean_words_added": round(sum(added) / len(added), 1) if added else 0.0,
        "material_kept": rate(sum(r["context"] in res.optimized for r, res in with_material), len(with_material)),
        "prompt_kept": rate(sum(res.optimized.startswith(res.original) for _, res in changed), len(changed)),
        "specifics_kept": rate(
            sum(not missing_specifics(res.original, res.optimized) for _, res in changed), len(changed)
        ),
        "novel_specifics": rate(sum(bool(novel_specifics(res.original, res.optimized)) for _, res in changed), n),
        "task_kept": rate(
            sum(
                all(t in task_kinds(res.optimized) for t in KEPT_TASKS if t in task_kinds(res.original))
                for _, res in changed
            ),
            len(changed),
        ),
        "kept_unchanged": dict(Counter(res.kind.value for res in results if not res.changed and res.kind is not None)),
        "segmentation": score_segmentations(records, segs, default_model().min_confidence),
    }


def evaluate_faithfulness(
    optimizer: Any, data: str | Path | None = None, *, limit: int | None = None, batch_size: int = 32
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``optimizer`` over a labelled set; return the figures and one row per prompt."""
    records = load_labelled(data or DEFAULT_SET)[:limit]
    results: list[OptimizationResult] = []
    for start in range(0, len(records), batch_size):
        results += optimizer.rewrite_batch([r["prompt"] for r in records[start : start + batch_size]])
    rows = [{"prompt": r["prompt"], **res.to_dict()} for r, res in zip(records, results)]
    return faithfulness_figures(records, results), rows


def write_rows(path: str | Path, figures: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    Path(path).write_text(
        json.dumps({"figures": figures, "rows": rows}, indent=1, ensure_ascii=False), encoding="utf-8"
    )
