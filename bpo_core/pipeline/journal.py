"""Append-only JSONL files that survive a kill: the resume mechanism of every long pipeline step.

Each finished unit of work is one line, written and flushed as soon as it is done. After a kill
the last line may be torn; :func:`repair_tail` cuts it off, and the keys of the complete lines
tell a re-run what to skip, so nothing is lost or written twice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bpo_core.errors import DataFormatError


def repair_tail(path: Path) -> int:
    """Cut a torn (unterminated) last line off ``path``; return the number of complete lines."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    return data.count(b"\n")


class Journal:
    """An append-only JSONL file of records, each with a unique ``key`` field."""

    def __init__(self, path: str | os.PathLike[str], fsync_every_s: float = 1.0) -> None:
        self.path = Path(path)
        self.fsync_every_s = fsync_every_s
        self._file: Any = None
        self._last_sync = 0.0

    def load(self) -> list[dict[str, Any]]:
        """Complete records already written (a torn last line is removed first)."""
        repair_tail(self.path)
        if not self.path.exists():
            return []
        records = []
        with self.path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataFormatError(
                        f"{self.path}, line {lineno}: not JSON ({exc.msg}); is this the right file?"
                    ) from exc
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and flush it (a killed process keeps it; fsync'ed at most every second)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_every_s:
            os.fsync(self._file.fileno())
            self._last_sync = now

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
