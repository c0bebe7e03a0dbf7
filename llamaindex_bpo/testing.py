"""Offline stand-ins for demos and tests: a keyword embedding that needs no model download.

Real applications plug in their own embedding model; this one lets a RAG pipeline run (and be
tested) on a machine without internet. Retrieval quality is that of word overlap.
"""

from __future__ import annotations

import hashlib
import math
import re

from llama_index.core.embeddings import BaseEmbedding

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


class KeywordEmbedding(BaseEmbedding):
    """Hashed bag-of-words vectors (L2-normalised): deterministic, offline, dependency-free."""

    dim: int = 256

    @classmethod
    def class_name(cls) -> str:
        return "KeywordEmbedding"

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        for token in _TOKEN.findall(text.lower()):
            if len(token) < 3:
                continue
            digest = hashlib.blake2b(token[:6].encode(), digest_size=4).digest()
            vec[int.from_bytes(digest, "little") % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)
