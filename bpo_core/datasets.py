"""Evaluation sets shipped with the package (BPO authors' data, Apache-2.0: see data/LICENSE).

``vicuna`` (80), ``dolly`` (200), ``self_instruct`` (252) and ``bpo_test`` (200). Questions are
built as the authors' ``gpt4_score.py`` does: Dolly and Self-Instruct join instruction and context
with a newline; Vicuna uses ``text``; the BPO test split uses ``prompt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bpo_core.errors import DataFormatError
from bpo_core.records import read_records

DATA_DIR = Path(__file__).parent / "data"

#: name -> file in ``DATA_DIR``
TEST_SETS: dict[str, str] = {
    "vicuna": "vicuna_eval.jsonl",
    "dolly": "dolly_eval.json",
    "self_instruct": "self_instruct_eval.json",
    "bpo_test": "bpo_test.json",
}

_ID_FIELDS = ("question_id", "id", "idx")
_QUESTION_FIELDS = ("text", "prompt", "question", "instruction")


@dataclass(frozen=True)
class EvalItem:
    """One evaluation prompt."""

    id: str
    question: str
    category: str = ""


def test_set_path(name: str) -> Path:
    """Path of a shipped test set: ``vicuna``, ``dolly``, ``self_instruct`` or ``bpo_test``."""
    try:
        return DATA_DIR / TEST_SETS[name]
    except KeyError:
        raise ValueError(f"unknown test set {name!r}; choose from {', '.join(TEST_SETS)}") from None


def load_test_set(name_or_path: str | Path, limit: int | None = None) -> list[EvalItem]:
    """The prompts of a shipped test set (by name) or of a JSON/JSONL file of your own.

    Your records need a question field (``text``, ``prompt``, ``question`` or ``instruction``,
    plus an optional ``context`` joined after a newline) and may have an id (``question_id``,
    ``id`` or ``idx``; the record number otherwise).
    """
    path = test_set_path(str(name_or_path)) if str(name_or_path) in TEST_SETS else Path(name_or_path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file (shipped test sets: {', '.join(TEST_SETS)})")
    items = []
    for i, (where, rec) in enumerate(read_records(path)):
        if limit is not None and i >= limit:
            break
        if not isinstance(rec, dict):
            raise DataFormatError(f"{where}: expected a JSON object")
        field = next((f for f in _QUESTION_FIELDS if isinstance(rec.get(f), str)), None)
        if field is None:
            raise DataFormatError(f"{where}: no question field ({', '.join(_QUESTION_FIELDS)}); got {sorted(rec)}")
        question = rec[field]
        if field == "instruction" and isinstance(rec.get("context"), str):
            question = f"{question}\n{rec['context']}"
        id_field = next((f for f in _ID_FIELDS if f in rec), None)
        items.append(
            EvalItem(str(rec[id_field]) if id_field else str(i), question.strip(), str(rec.get("category", "")))
        )
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise DataFormatError(f"{path}: ids are not unique")
    return items
