"""Bulk rewriting of datasets (the paper's "BPO for SFT data" use), resumable after a kill.

Each output line is the input record with ``field`` rewritten and the original kept under
``<field>_original``. Output is appended a batch at a time and fsync'ed, so after a kill a
re-run skips the records already written (a torn last line is cut off) and nothing is lost or
duplicated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bpo_core.errors import DataFormatError
from bpo_core.optimizer import BPOOptimizer
from bpo_core.pipeline.journal import repair_tail


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}, line {lineno}: invalid JSON: {exc.msg}") from exc
            if not isinstance(rec, dict):
                raise DataFormatError(f"{path}, line {lineno}: expected a JSON object")
            yield lineno, rec


def optimize_file(
    optimizer: BPOOptimizer,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    field: str = "instruction",
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, int]:
    """Rewrite ``field`` of every JSONL record; return counts (done, skipped as already done, changed)."""
    from tqdm import tqdm

    inp, out = Path(input_path), Path(output_path)
    if not inp.is_file():
        raise DataFormatError(f"{inp}: no such file")
    done = repair_tail(out)
    records = list(_records(inp))
    for lineno, rec in records:
        if not isinstance(rec.get(field), str):
            raise DataFormatError(f"{inp}, line {lineno}: field {field!r} missing or not a string")
    todo = records[done:]
    changed = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("a", encoding="utf-8") as f,
        tqdm(total=len(records), initial=done, disable=not progress, unit="rec") as bar,
    ):
        for start in range(0, len(todo), batch_size):
            chunk = [rec for _, rec in todo[start : start + batch_size]]
            results = optimizer.rewrite_batch([rec[field] for rec in chunk])
            lines = []
            for rec, res in zip(chunk, results):
                changed += res.changed
                lines.append(
                    json.dumps({**rec, field: res.optimized, f"{field}_original": res.original}, ensure_ascii=False)
                )
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(chunk))
    return {"total": len(records), "skipped": done, "written": len(todo), "changed": changed}
