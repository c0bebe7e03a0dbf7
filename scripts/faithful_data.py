"""Build and assemble the faithful BPO training set (see training_data/faithful/README.md).

    python scripts/faithful_data.py inputs    # source prompts -> teacher inputs (sources.jsonl)
    python scripts/faithful_data.py collect   # runs/faithful/{teacher,judge,teacher2,judge2}/ -> the committed jsonl files
    python scripts/faithful_data.py lexicon   # generic additions -> bpo_core/data/guidance_words.json
    python scripts/faithful_data.py pairs     # sources + teacher outputs + judgements -> pairs.jsonl

Two teacher passes: the first wrote an ``augment`` and a ``rewrite`` for every prompt (the training
pairs); the second (``generic_*``) wrote additions made of generic guidance only, whose recurring
vocabulary is the guard's guidance lexicon (see the data card).

``pairs`` reads committed files only, so the training set is rebuilt from the repository alone;
``inputs`` reads ../shared/data and ``collect`` the strong LLM's raw answers (not committed).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "training_data" / "faithful"
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

#: How many HH-RLHF first turns go to the teacher; the last HH_HELD_OUT unique ones are kept for evaluation.
HH_TRAIN = 1100
HH_HELD_OUT = 300


def _hh_first_turns() -> list[str]:
    seen: dict[str, None] = {}
    with gzip.open(SHARED / "hh-rlhf" / "harmless-base_test.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*Human: (.*?)\n\nAssistant:", json.loads(line)["chosen"], re.S)
            if m:
                seen.setdefault(m.group(1).strip())
    return list(seen)


def hh_split() -> tuple[list[str], list[str]]:
    """(training pool, held-out) HH-RLHF first human turns, disjoint, in file order."""
    turns = _hh_first_turns()
    return turns[: len(turns) - HH_HELD_OUT], turns[len(turns) - HH_HELD_OUT :]


def _view(record: dict) -> str | None:
    """What the optimizer model sees of a labelled prompt: the instruction, material as a placeholder."""
    from bpo_core.segment import material_placeholder

    prompt, context = record["prompt"], record["context"]
    if not context:
        return prompt.strip()
    at = prompt.find(context)
    if at < 0:
        return None
    before, after = prompt[:at].strip(), prompt[at + len(context) :].strip()
    parts = [p for p in (before, material_placeholder(context), after) if p]
    return "\n".join(parts)


def build_inputs() -> None:
    from bpo_core.language import looks_english

    items: list[dict] = []
    with open(SHARED / "oneprompted" / "train.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    for i, record in enumerate(records):
        view = _view(record)
        if view and looks_english(view):
            items.append({"id": f"op-{i:04d}", "source": "oneprompted/train", "prompt": view})
    for i, rec in enumerate(json.loads((SHARED / "bpo" / "train_val300.json").read_text(encoding="utf-8"))):
        view = _view({"prompt": rec["final_input"], "context": rec.get("context") or ""})
        if view and looks_english(view):
            items.append({"id": f"bpo-{i:03d}", "source": "bpo/train_val300", "prompt": view})
    pool, _ = hh_split()
    random.Random(0).shuffle(pool)
    for i, turn in enumerate(pool[:HH_TRAIN]):
        items.append({"id": f"hh-{i:04d}", "source": "hh-rlhf/harmless-base_test", "prompt": turn})
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "sources.jsonl", "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"{len(items)} teacher inputs -> {OUT / 'sources.jsonl'}")


def use_adapter(folder: str | None) -> None:
    """Make ``BPOOptimizer.default()`` in this process load the adapter in ``folder`` instead of the
    shipped one (a candidate round measured before it is shipped); ``None`` keeps the shipped one."""
    if folder is not None:
        import bpo_core.default_model as default_model

        if not (Path(folder) / "adapter_config.json").is_file():
            sys.exit(f"{folder}: not an adapter folder (no adapter_config.json)")
        default_model.SHIPPED_ADAPTER = Path(folder).resolve()


def read_jsonl(path: Path) -> list[dict]:
    """One dict per non-blank line (the scripts' data files)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """``rows`` one JSON object a line, UTF-8 kept readable; the folder is made if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def unblind(folder: Path, what: str) -> tuple[dict, dict[str, dict]]:
    """A judged folder's key (blind id -> what was judged) and the judges' rows by blind id, checked
    to have come back exactly once each."""
    key = json.loads((folder / "key.json").read_text(encoding="utf-8"))
    labels = {row["id"]: row for path in sorted(folder.glob("out_*.jsonl")) for row in read_jsonl(path)}
    assert set(labels) == set(key), f"every judged {what} must come back exactly once"
    return key, labels


def collect() -> None:
    """Merge the teacher's and the judges' chunk files; un-blind the judgements with the key."""
    runs = ROOT / "runs" / "faithful"
    teacher = [row for path in sorted((runs / "teacher").glob("out_*.jsonl")) for row in read_jsonl(path)]
    ids = [row["id"] for row in read_jsonl(OUT / "sources.jsonl")]
    by_id = {row["id"]: row for row in teacher}
    assert sorted(by_id) == sorted(ids), "teacher outputs do not match the sources one to one"
    write_jsonl(OUT / "teacher_outputs.jsonl", [{k: by_id[i][k] for k in ("id", "augment", "rewrite")} for i in ids])
    key, labels = unblind(runs / "judge", "item")
    rows = [
        {"id": key[j]["id"], "style": key[j]["kind"], "label": labels[j]["label"], "why": labels[j]["why"]}
        for j in sorted(key, key=lambda j: (ids.index(key[j]["id"]), key[j]["kind"]))
    ]
    write_jsonl(OUT / "judgements.jsonl", rows)
    print(f"{len(by_id)} teacher outputs, {len(rows)} judgements")
    generic = {row["id"]: row for path in sorted((runs / "teacher2").glob("out_*.jsonl")) for row in read_jsonl(path)}
    asked = [row["id"] for path in sorted((runs / "teacher2").glob("in_*.jsonl")) for row in read_jsonl(path)]
    assert sorted(generic) == sorted(asked), "generic teacher outputs do not match its inputs one to one"
    write_jsonl(OUT / "generic_outputs.jsonl", [{"id": i, "addition": generic[i]["addition"]} for i in asked])
    key, labels = unblind(runs / "judge2", "generic addition")
    order = {i: n for n, i in enumerate(asked)}
    rows = [
        {"id": key[j], "label": labels[j]["label"], "why": labels[j]["why"]}
        for j in sorted(key, key=lambda j: order[key[j]])
    ]
    write_jsonl(OUT / "generic_judgements.jsonl", rows)
    print(f"{len(generic)} generic additions, {len(rows)} judged")


#: Labels a candidate needs to become a training pair, per style. Additions must help (B); a
#: faithful rewrite may be cosmetic (N) as well. H never passes.
KEEP = {"augment": {"B"}, "rewrite": {"B", "N"}}


def build_pairs() -> None:
    """Training pairs: the teacher's output where the judge and the shipped faithfulness guard accept it,
    or where it left the prompt alone."""
    from bpo_core.rewrite.faithfulness import check_addition, check_rewrite

    checks = {"augment": check_addition, "rewrite": check_rewrite}
    sources = read_jsonl(OUT / "sources.jsonl")
    teacher = {row["id"]: row for row in read_jsonl(OUT / "teacher_outputs.jsonl")}
    labels = {(row["id"], row["style"]): row["label"] for row in read_jsonl(OUT / "judgements.jsonl")}
    pairs, dropped = [], {"augment": {}, "rewrite": {}}
    for src in sources:
        out = teacher[src["id"]]
        for style in ("augment", "rewrite"):
            target = out[style].strip()
            unchanged = not target if style == "augment" else target == src["prompt"].strip()
            label = "U" if unchanged else labels[(src["id"], style)]
            if label != "U" and label not in KEEP[style]:
                dropped[style][label] = dropped[style].get(label, 0) + 1
                continue
            verdict = checks[style](src["prompt"], target) if label != "U" else None
            if verdict is not None and not verdict.ok:
                why = f"guard: {(verdict.reason or '').split(':')[0]}"
                dropped[style][why] = dropped[style].get(why, 0) + 1
                continue
            pairs.append(
                {
                    "id": src["id"],
                    "source": src["source"],
                    "style": style,
                    "prompt": src["prompt"],
                    "target": src["prompt"].strip() if unchanged and style == "rewrite" else target,
                    "label": label,
                }
            )
    write_jsonl(OUT / "pairs.jsonl", pairs)
    counts = {style: sum(p["style"] == style for p in pairs) for style in ("augment", "rewrite")}
    print(f"{len(pairs)} pairs {counts}; dropped {dropped}")


def build_generic_pairs() -> None:
    """Training pairs with generic additions: the second pass's judged-B additions (and its empty
    answers, "nothing helps") as the augment targets, the first pass's accepted rewrites as before."""
    sources = {row["id"]: row for row in read_jsonl(OUT / "sources.jsonl")}
    labels = {row["id"]: row["label"] for row in read_jsonl(OUT / "generic_judgements.jsonl")}
    pairs, dropped = [], {"N": 0, "H": 0}
    for row in read_jsonl(OUT / "generic_outputs.jsonl"):
        src, target = sources[row["id"]], row["addition"].strip()
        label = labels[row["id"]] if target else "U"
        if label in dropped:
            dropped[label] += 1
            continue
        pairs.append(
            {
                "id": src["id"],
                "source": src["source"],
                "style": "augment",
                "prompt": src["prompt"],
                "target": target,
                "label": label,
            }
        )
    pairs += [p for p in read_jsonl(OUT / "pairs.jsonl") if p["style"] == "rewrite"]
    write_jsonl(OUT / "pairs_generic.jsonl", pairs)
    counts = {style: sum(p["style"] == style for p in pairs) for style in ("augment", "rewrite")}
    print(f"{len(pairs)} pairs {counts}; dropped augment {dropped}")


#: A word is guidance vocabulary when the generic teacher used it, beyond the prompt's own words, in this many additions.
LEXICON_MIN_ADDITIONS = 8


def build_lexicon() -> None:
    """The words an addition may use without the prompt using them: the generic teacher's recurring
    vocabulary in the additions the judge found better ("explain", "step", "example", "table", ...),
    as the guard's word stems."""
    from collections import Counter

    from bpo_core.guard import STOPWORDS, stem, words

    sources = {row["id"]: row["prompt"] for row in read_jsonl(OUT / "sources.jsonl")}
    labels = {row["id"]: row["label"] for row in read_jsonl(OUT / "generic_judgements.jsonl")}
    counts: Counter[str] = Counter()
    for row in read_jsonl(OUT / "generic_outputs.jsonl"):
        if row["addition"].strip() and labels.get(row["id"]) == "B":
            added = {stem(w) for w in words(row["addition"]) if w not in STOPWORDS}
            counts.update(added - {stem(w) for w in words(sources[row["id"]])})
    lexicon = sorted(w for w, c in counts.items() if c >= LEXICON_MIN_ADDITIONS)
    path = ROOT / "bpo_core" / "data" / "guidance_words.json"
    note = f"stems in at least {LEXICON_MIN_ADDITIONS} judged-better generic additions beyond the prompt; scripts/faithful_data.py lexicon"
    path.write_text(json.dumps({"about": note, "stems": lexicon}, indent=0) + "\n", encoding="utf-8")
    print(f"{len(lexicon)} guidance stems -> {path}")


if __name__ == "__main__":
    steps = {
        "inputs": build_inputs,
        "collect": collect,
        "pairs": build_pairs,
        "lexicon": build_lexicon,
        "generic-pairs": build_generic_pairs,
    }
    steps[sys.argv[1]]()
