"""Result caches: an in-memory LRU and an optional persistent SQLite cache.

Keys cover everything that changes a rewrite: the model, the prompt format (template and
history), the generation settings, the guard and the prompt itself. Only deterministic (greedy)
results are cached unless the optimizer is told otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from bpo_core.result import OptimizationResult


class ResultCache(Protocol):
    def get(self, key: str) -> OptimizationResult | None: ...

    def put(self, key: str, result: OptimizationResult) -> None: ...


def cache_key(*parts: Any) -> str:
    """A stable digest of JSON-serializable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.blake2b(blob.encode(), digest_size=20).hexdigest()


class LRUCache:
    """Thread-safe in-memory LRU of results."""

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[str, OptimizationResult] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> OptimizationResult | None:
        with self._lock:
            result = self._data.get(key)
            if result is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return result

    def put(self, key: str, result: OptimizationResult) -> None:
        with self._lock:
            self._data[key] = result
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class SQLiteCache:
    """A persistent cache file shared safely by several processes (SQLite WAL, owner-only file)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # Create the file owner-only before SQLite opens it: cached prompts are user data.
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._local = threading.local()
        with self._conn() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:  # one connection per thread: sqlite3 connections are not thread-safe
            conn = sqlite3.connect(self.path, timeout=30)
            self._local.conn = conn
        return conn

    def get(self, key: str) -> OptimizationResult | None:
        row = self._conn().execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return OptimizationResult.from_dict(json.loads(row[0]))

    def put(self, key: str, result: OptimizationResult) -> None:
        with self._conn() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)",
                (key, json.dumps(result.to_dict(), ensure_ascii=False)),
            )
