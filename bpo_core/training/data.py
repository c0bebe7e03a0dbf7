"""Reading (prompt -> optimized prompt) pairs from the formats that exist.

Accepted records (JSON array, JSONL, or a Hugging Face ``datasets`` dataset):

* THUDM/BPO dataset fields: ``prompt``, ``optimized_prompt`` (``good_res``/``bad_res`` ignored);
* the richer BPO records (``train_val300.json``): ``instruction`` (+ ``context``) or
  ``final_input`` -> ``optimized_prompt``;
* the authors' training format: ``{"paragraph": [{"q": ..., "a": ...}]}``;
* ``bpo construct`` output (``instruction`` + ``context`` -> ``optimized_instruction``, or
  ``prompt`` -> ``optimized_prompt``);
* style pairs (``training_data/faithful/pairs.jsonl``): ``prompt``, ``target``, ``style``
  (``augment``: the target is the text to append, possibly empty; ``rewrite``: the new prompt).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpo_core.errors import DataFormatError
from bpo_core.records import read_records


@dataclass(frozen=True)
class Pair:
    """One training example: the model sees ``prompt`` and learns to produce ``optimized``."""

    prompt: str
    optimized: str
    source: str = ""
    #: ``rewrite`` (``optimized`` replaces the prompt) or ``augment`` (it is appended; may be empty).
    style: str = "rewrite"


def _ngrams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    toks = re.findall(r"\w+", text.lower())
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def _pair_from_record(rec: Mapping[str, Any], where: str) -> Pair | None:
    """Map one record to a pair; ``None`` when it is well-formed but unusable for training."""
    if "target" in rec and "style" in rec:
        return _style_pair(rec, where)
    if "paragraph" in rec:
        para = rec["paragraph"]
        if not isinstance(para, list) or not para or not isinstance(para[0], Mapping):
            raise DataFormatError(f"{where}: field 'paragraph' must be a non-empty list of {{'q', 'a'}} objects")
        rec = {"prompt": para[0].get("q"), "optimized_prompt": para[0].get("a")}
    target = rec.get("optimized_prompt")
    context = rec.get("context") or ""
    if "instruction" in rec and context.strip():
        # Train on the instruction alone, as the optimizer will see it (context is protected);
        # drop targets that copy the context in, which would teach the model to invent context.
        prompt = rec["instruction"]
        target = rec.get("optimized_instruction", target)  # `bpo construct` output keeps it apart
        if isinstance(target, str) and _ngrams(target) & (_ngrams(context) - _ngrams(prompt)):
            return None
    else:
        prompt = next((rec[k] for k in ("prompt", "final_input", "instruction") if k in rec), None)
    for field, value in (("prompt", prompt), ("optimized_prompt", target)):
        if value is None:
            raise DataFormatError(
                f"{where}: missing field {field!r} (expected 'prompt'/'final_input'/'instruction' "
                f"and 'optimized_prompt', or 'paragraph'); got fields {sorted(rec)}"
            )
        if not isinstance(value, str):
            raise DataFormatError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataFormatError(f"{where}: field {field!r} is empty")
    assert isinstance(prompt, str) and isinstance(target, str)  # checked above
    return Pair(prompt.strip(), target.strip(), str(rec.get("source", "")))


def _style_pair(rec: Mapping[str, Any], where: str) -> Pair:
    from bpo_core.formats import STYLES

    style, prompt, target = rec.get("style"), rec.get("prompt"), rec.get("target")
    if style not in STYLES:
        raise DataFormatError(f"{where}: field 'style' must be one of {', '.join(STYLES)}, got {style!r}")
    for field, value in (("prompt", prompt), ("target", target)):
        if not isinstance(value, str):
            raise DataFormatError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    assert isinstance(prompt, str) and isinstance(target, str) and isinstance(style, str)  # checked above
    if not prompt.strip() or (style == "rewrite" and not target.strip()):  # an augment may add nothing
        raise DataFormatError(f"{where}: field {'prompt' if not prompt.strip() else 'target'!r} is empty")
    return Pair(prompt.strip(), target.strip(), str(rec.get("source", "")), style)


def pairs_from_records(records: Iterable[Mapping[str, Any]], origin: str = "<records>") -> list[Pair]:
    """Convert records (dicts) to pairs; errors name ``origin`` and the record number."""
    pairs = []
    for i, rec in enumerate(records, 1):
        if not isinstance(rec, Mapping):
            raise DataFormatError(f"{origin}, record {i}: expected a JSON object, got {type(rec).__name__}")
        pair = _pair_from_record(rec, f"{origin}, record {i}")
        if pair is not None:
            pairs.append(pair)
    return pairs


def load_pairs(source: str | Path | Any) -> list[Pair]:
    """Read pairs from a JSON/JSONL file or a ``datasets.Dataset``; raise :class:`DataFormatError` if bad."""
    if not isinstance(source, (str, Path)):
        if hasattr(source, "column_names") and hasattr(source, "__iter__"):  # a datasets.Dataset
            return _nonempty(pairs_from_records(source, "<dataset>"), "<dataset>")
        raise TypeError(f"source must be a path or a datasets.Dataset, got {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    pairs = []
    for where, rec in read_records(path):
        if not isinstance(rec, Mapping):
            raise DataFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        pair = _pair_from_record(rec, where)
        if pair is not None:
            pairs.append(pair)
    return _nonempty(pairs, str(path))


def _nonempty(pairs: list[Pair], origin: str) -> list[Pair]:
    if not pairs:
        raise DataFormatError(f"{origin}: no usable (prompt, optimized_prompt) pairs")
    return pairs
