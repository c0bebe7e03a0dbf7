"""Reading preference feedback: (instruction, optional context, good response, bad response).

Three input shapes, detected per file (or forced with ``format=``):

* ``bpo``: the authors' records, ``instruction``, optional ``context``, ``good_res``, ``bad_res``
  (JSON array or JSONL; ``../shared/data/bpo/examples_*.json``);
* ``hh``: Anthropic HH-RLHF dialogues, ``chosen``/``rejected`` with ``\\n\\nHuman:`` /
  ``\\n\\nAssistant:`` turns (JSONL, optionally ``.gz``). The first human turn is the instruction and
  the final assistant turns are the good and bad responses. Multi-turn dialogues are skipped
  (their final answers reply to a later turn, not to the instruction), with that reason;
* ``jsonl``: any JSON/JSONL records, with ``fields`` mapping our names to yours
  (``{"instruction": "question", "good_res": "chosen", "bad_res": "rejected"}``).

Every record gets a stable ``key`` (file name, position and a content digest) so a re-run knows
what it has done; records that cannot be used come back as :class:`Skipped` with the reason.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bpo_core.errors import DataFormatError
from bpo_core.records import read_records

FeedbackFormat = Literal["auto", "bpo", "hh", "jsonl"]
FIELDS = ("instruction", "context", "good_res", "bad_res")
_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


@dataclass(frozen=True)
class Feedback:
    """One preference record, ready for the teacher."""

    key: str
    instruction: str
    good_res: str
    bad_res: str
    context: str = ""
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: The record has a context field (even an empty one): the authors then use their with-context prompt.
    has_context_field: bool = False


@dataclass(frozen=True)
class Skipped:
    """An input record that cannot be used, and why."""

    key: str
    reason: str
    record: Mapping[str, Any]


def _key(origin: str, index: int, *parts: str) -> str:
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:10]
    return f"{origin}#{index}:{digest}"


def split_dialogue(text: str) -> list[tuple[str, str]]:
    """``"\\n\\nHuman: hi\\n\\nAssistant: hello"`` -> ``[("Human", "hi"), ("Assistant", "hello")]``."""
    parts = _TURN.split(text)
    return [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]


def detect_format(rec: Mapping[str, Any]) -> str | None:
    if isinstance(rec.get("chosen"), str) and isinstance(rec.get("rejected"), str) and "Human:" in rec["chosen"]:
        return "hh"
    if all(k in rec for k in ("instruction", "good_res", "bad_res")):
        return "bpo"
    return None


def _from_hh(rec: Mapping[str, Any], key_base: tuple[str, int]) -> Feedback | Skipped:
    chosen, rejected = split_dialogue(rec["chosen"]), split_dialogue(rec["rejected"])
    key = _key(*key_base, rec["chosen"], rec["rejected"])
    humans = [t for role, t in chosen if role == "Human"]
    if not humans or not chosen or chosen[-1][0] != "Assistant" or not rejected or rejected[-1][0] != "Assistant":
        return Skipped(key, "not a Human/Assistant dialogue ending with an assistant turn", rec)
    if len(humans) > 1:
        return Skipped(
            key, f"multi-turn dialogue ({len(humans)} human turns): the final answers do not answer the first turn", rec
        )
    return Feedback(key, humans[0], chosen[-1][1], rejected[-1][1], "", "hh-rlhf")


def _from_fields(
    rec: Mapping[str, Any], names: Mapping[str, str], key_base: tuple[str, int], where: str
) -> Feedback | Skipped:
    values: dict[str, str] = {}
    for ours in FIELDS:
        theirs = names.get(ours, ours)
        value = rec.get(theirs)
        if value is None:
            if ours == "context":
                value = ""
            else:
                raise DataFormatError(
                    f"{where}: missing field {theirs!r} (our {ours!r}); fields present: {sorted(rec)}. "
                    f"Map fields with e.g. --field {ours}=<your field>"
                )
        if not isinstance(value, str):
            raise DataFormatError(f"{where}: field {theirs!r} must be a string, got {type(value).__name__}")
        values[ours] = value
    key = _key(*key_base, values["instruction"], values["context"], values["good_res"], values["bad_res"])
    for ours in ("instruction", "good_res", "bad_res"):
        if not values[ours].strip():
            return Skipped(key, f"field {names.get(ours, ours)!r} is empty", rec)
    extra = {k: v for k, v in rec.items() if k not in {names.get(f, f) for f in FIELDS}}
    return Feedback(
        key,
        values["instruction"].strip(),
        values["good_res"],
        values["bad_res"],
        values["context"].strip(),
        str(rec.get("source", "")),
        extra,
        has_context_field=names.get("context", "context") in rec,
    )


def read_feedback(
    path: str | Path,
    *,
    format: FeedbackFormat = "auto",
    fields: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> tuple[list[Feedback], list[Skipped]]:
    """Read a feedback file; return usable records and skipped ones (with reasons).

    Raises :class:`DataFormatError` naming the file, line and field for malformed input.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    unknown = set(fields or {}) - set(FIELDS)
    if unknown:
        raise DataFormatError(f"unknown field mapping {sorted(unknown)}; map any of {', '.join(FIELDS)}")
    good: list[Feedback] = []
    skipped: list[Skipped] = []
    for index, (where, rec) in enumerate(read_records(path)):
        if limit is not None and index >= limit:
            break
        if not isinstance(rec, Mapping):
            raise DataFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        kind = format if format != "auto" else ("jsonl" if fields else detect_format(rec))
        if kind is None:
            raise DataFormatError(
                f"{where}: cannot tell the format from fields {sorted(rec)}; expected the BPO fields "
                f"(instruction, good_res, bad_res), HH-RLHF (chosen, rejected), or a mapping such as "
                f"--field instruction=question --field good_res=chosen --field bad_res=rejected"
            )
        key_base = (path.name, index)
        if kind == "hh":
            for name in ("chosen", "rejected"):
                if not isinstance(rec.get(name), str):
                    raise DataFormatError(f"{where}: HH-RLHF record needs string field {name!r}")
            item = _from_hh(rec, key_base)
        else:
            item = _from_fields(rec, fields or {}, key_base, where)
        if isinstance(item, Feedback) and item.good_res.strip() == item.bad_res.strip():
            item = Skipped(item.key, "good and bad responses are identical", rec)
        (good if isinstance(item, Feedback) else skipped).append(item)  # type: ignore[arg-type]
    return good, skipped
