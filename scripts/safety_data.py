"""Build the safety-note training set (see training_data/safety/README.md).

    python scripts/safety_data.py inputs     # source prompts -> sources.jsonl and the teacher's chunks
    python scripts/safety_data.py blind      # teacher notes -> shuffled judge chunks under hashed ids
    python scripts/safety_data.py collect    # runs/safety/{teacher,judge}/ -> the committed jsonl files
    python scripts/safety_data.py contrast   # the strong LLM's harmless look-alike prompts -> contrast.jsonl
    python scripts/safety_data.py dev        # a dev set disjoint from training and benchmarks/judged

A third teacher pass, after the two of ``faithful_data.py``: for requests that touch on a risk
(harm, crime, health, privacy, a stereotyping premise) a strong LLM wrote the note that makes the
answer more harmless and still helpful, or nothing. The notes teach the model's safety gate (where a
note is wanted) and which of the shipped notes fits (``scripts/addition_probe.py fit-safety``).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faithful_data import OUT as FAITHFUL  # noqa: E402
from faithful_data import ROOT, hh_split, read_jsonl, unblind, write_jsonl

OUT = ROOT / "training_data" / "safety"
RUNS = ROOT / "runs" / "safety"
#: Teacher chunks (one strong-LLM session each) and judge slices.
CHUNKS = 8
#: Prompts of the first teacher pass's oneprompted/BPO sources that no rule flags, asked too, so the
#: teacher's "" teaches when no note is wanted.
UNFLAGGED = 200


def build_inputs() -> None:
    from bpo_core.rewrite.faithfulness import RISK_CONFLICTS, addition_conflict

    pool, _ = hh_split()  # never the held-out turns
    items = [{"id": f"hs-{i:04d}", "source": "hh-rlhf/harmless-base_test", "prompt": p} for i, p in enumerate(pool)]
    flagged, unflagged = [], []
    for src in read_jsonl(FAITHFUL / "sources.jsonl"):
        if src["source"].startswith("hh-rlhf"):
            continue
        (flagged if addition_conflict(src["prompt"]) in RISK_CONFLICTS else unflagged).append(src)
    random.Random(0).shuffle(unflagged)
    items += [{k: s[k] for k in ("id", "source", "prompt")} for s in flagged + unflagged[:UNFLAGGED]]
    write_jsonl(OUT / "sources.jsonl", items)
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    for k in range(CHUNKS):
        write_jsonl(
            RUNS / "teacher" / f"in_{k}.jsonl", [{"id": s["id"], "prompt": s["prompt"]} for s in shuffled[k::CHUNKS]]
        )
    print(
        f"{len(items)} teacher inputs ({len(pool)} HH, {len(flagged)} flagged, {min(UNFLAGGED, len(unflagged))} unflagged)"
    )


def _hashed(text: str) -> str:
    return "s" + hashlib.sha256(text.encode()).hexdigest()[:10]


def teacher_notes() -> dict[str, str]:
    """The teacher's notes by source id, from its chunk files (checked one to one with the inputs)."""
    asked = [row["id"] for path in sorted((RUNS / "teacher").glob("in_*.jsonl")) for row in read_jsonl(path)]
    notes = {
        row["id"]: row["safety"].strip()
        for path in sorted((RUNS / "teacher").glob("out_*.jsonl"))
        for row in read_jsonl(path)
    }
    missing, extra = set(asked) - set(notes), set(notes) - set(asked)
    assert not missing and not extra, (
        f"teacher outputs do not match the inputs: {len(missing)} missing, {len(extra)} extra"
    )
    return notes


def build_blind() -> None:
    """Every non-empty note, appended to its prompt, shuffled under a hashed id into judge slices."""
    from bpo_core.rewrite.assemble import append_addition

    sources = {row["id"]: row for row in read_jsonl(OUT / "sources.jsonl")}
    items, key = [], {}
    for sid, note in teacher_notes().items():
        if note:
            hid = _hashed(sid + note)
            key[hid] = sid
            items.append(
                {
                    "id": hid,
                    "original": sources[sid]["prompt"],
                    "candidate": append_addition(sources[sid]["prompt"], note),
                }
            )
    random.Random(2).shuffle(items)
    for k in range(CHUNKS):
        write_jsonl(RUNS / "judge" / f"in_{k}.jsonl", items[k::CHUNKS])
    (RUNS / "judge" / "key.json").write_text(json.dumps(key, indent=0), encoding="utf-8")
    print(f"{len(items)} notes to judge in {CHUNKS} slices")


def collect() -> None:
    """Merge the teacher's and the judges' chunk files into the committed files, un-blinded."""
    notes = teacher_notes()
    order = [row["id"] for row in read_jsonl(OUT / "sources.jsonl")]
    write_jsonl(OUT / "teacher_outputs.jsonl", [{"id": i, "safety": notes[i]} for i in order])
    key, labels = unblind(RUNS / "judge", "note")
    pos = {i: n for n, i in enumerate(order)}
    rows = [
        {"id": key[h], "label": labels[h]["label"], "why": labels[h]["why"]}
        for h in sorted(key, key=lambda h: pos[key[h]])
    ]
    write_jsonl(OUT / "judgements.jsonl", rows)
    print(f"{len(notes)} teacher notes, {len(rows)} judged")


def collect_contrast() -> None:
    """The strong LLM's harmless look-alike prompts -> ``contrast.jsonl`` (negatives of the safety gate)."""
    unique: dict[str, dict] = {}
    for path in sorted((RUNS / "contrast").glob("out_*.jsonl")):
        for r in read_jsonl(path):
            unique.setdefault(r["prompt"].strip(), r)
    rows = [{"id": r["id"], "prompt": prompt} for prompt, r in unique.items()]
    write_jsonl(OUT / "contrast.jsonl", rows)
    print(f"{len(rows)} contrast prompts -> {OUT / 'contrast.jsonl'}")


def build_dev() -> None:
    """A dev set for the safety notes, disjoint from training and from ``benchmarks/judged``: 100
    held-out HH-RLHF turns and 60 oneprompted validation / BPO test prompts the judged set left out."""
    judged = {r["prompt"] for r in read_jsonl(ROOT / "benchmarks" / "judged" / "prompts.jsonl")}
    rng = random.Random(7)
    hh = rng.sample([p for p in hh_split()[1] if p not in judged], 100)
    shared = ROOT.parent / "shared" / "data"
    op = [r["prompt"] for r in read_jsonl(shared / "oneprompted" / "validation.jsonl") if not r["context"]]
    bpo = [r["prompt"] for r in json.loads((shared / "bpo" / "bpo_test.json").read_text(encoding="utf-8"))]
    rest = rng.sample([p for p in op if p not in judged], 30) + rng.sample([p for p in bpo if p not in judged], 30)
    rows = [{"id": f"dev-hh-{i:03d}", "prompt": p} for i, p in enumerate(hh)]
    rows += [{"id": f"dev-op-{i:03d}", "prompt": p} for i, p in enumerate(rest)]
    write_jsonl(OUT / "dev" / "prompts.jsonl", rows)
    print(f"{len(rows)} dev prompts -> {OUT / 'dev' / 'prompts.jsonl'}")


if __name__ == "__main__":
    steps = {
        "inputs": build_inputs,
        "blind": build_blind,
        "collect": collect,
        "contrast": collect_contrast,
        "dev": build_dev,
    }
    steps[sys.argv[1]]()
