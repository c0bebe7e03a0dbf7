"""How well the segmenter finds the instruction and the pasted material of labelled prompts."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bpo_core.rewrite.segment import Segmentation

#: Gold material this long (non-space characters) reaching the optimizer's view counts as exposed.
EXPOSED_CHARS = 10


def load_labelled(path: str | Path) -> list[dict[str, Any]]:
    """Records ``{"prompt", "instruction", "context"}`` whose context (if any) is a verbatim span."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if not record["context"] or record["context"] in record["prompt"]:
                out.append(record)
    return out


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def exact(record: dict[str, Any], seg: Segmentation) -> bool:
    """Instruction and material both as labelled (whitespace aside)."""
    return _squash(seg.instruction) == _squash(record["instruction"]) and _squash("".join(seg.materials)) == _squash(
        record["context"]
    )


def exposed(record: dict[str, Any], seg: Segmentation) -> bool:
    """Whether labelled material would reach the optimizer model (it sits in an instruction span)."""
    context = record["context"]
    if not context:
        return False
    at = seg.prompt.find(context)
    leaked = 0
    for span in seg.spans:
        if span.kind == "instruction":
            lo, hi = max(span.start, at), min(span.end, at + len(context))
            if hi > lo:
                leaked += len(_squash(seg.prompt[lo:hi]))
    return leaked >= EXPOSED_CHARS


def score_segmentations(
    records: Sequence[dict[str, Any]], segs: Sequence[Segmentation], min_confidence: float
) -> dict[str, float]:
    """Rates over all records: exact layouts (abstentions count as misses), abstained, exposed."""
    n = max(len(records), 1)
    answered = [(r, s) for r, s in zip(records, segs) if not s.abstains(min_confidence)]
    hits = sum(exact(r, s) for r, s in answered)
    with_material = [r for r in records if r["context"]]
    return {
        "n": len(records),
        "exact": round(hits / n, 4),
        "exact_answered": round(hits / max(len(answered), 1), 4),
        "abstained": round(1 - len(answered) / n, 4),
        "exposed": round(sum(exposed(r, s) for r, s in answered) / n, 4),
        "exact_with_material": round(
            sum(exact(r, s) for r, s in answered if r["context"]) / max(len(with_material), 1), 4
        ),
    }
