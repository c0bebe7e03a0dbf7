"""Reading JSON records from files: a JSON array, or JSONL, optionally gzip-compressed.

One reader for every data file the project takes (training pairs, feedback, test sets), so they
all accept the same shapes and report problems the same way: file, line (or record) and what.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bpo_core.errors import DataFormatError


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, record)``; ``where`` names the file and line (or record) for error messages.

    A ``.jsonl``/``.jsonl.gz`` file is always read line by line; any other file holding a JSON
    array is read as one array. Raises :class:`DataFormatError` for an empty file or bad JSON.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise DataFormatError(f"{path}: file is empty")
    if not path.name.endswith((".jsonl", ".jsonl.gz")) and text.lstrip()[:1] == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}, line {exc.lineno}: invalid JSON: {exc.msg}") from exc
        for i, rec in enumerate(data, 1):
            yield f"{path}, record {i}", rec
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield f"{path}, line {lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}, line {lineno}: invalid JSON: {exc.msg}") from exc
