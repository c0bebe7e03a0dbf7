"""Evaluation sets shipped with the package (BPO authors' data, Apache-2.0: see data/LICENSE)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"

#: name -> (file, id field, how to build the question)
TEST_SETS: dict[str, str] = {
    "bpo_test": "bpo_test.json",
    "vicuna": "vicuna_eval.jsonl",
    "dolly": "dolly_eval.json",
    "self_instruct": "self_instruct_eval.json",
}


def test_set_path(name: str) -> Path:
    """Path of a shipped test set: ``bpo_test``, ``vicuna``, ``dolly`` or ``self_instruct``."""
    try:
        return DATA_DIR / TEST_SETS[name]
    except KeyError:
        raise ValueError(f"unknown test set {name!r}; choose from {', '.join(TEST_SETS)}") from None
