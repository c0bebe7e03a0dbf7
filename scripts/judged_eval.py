"""The judged faithfulness evaluation: systems' rewrites of held-out real prompts, judged blind by a
strong LLM with the rubric (benchmarks/judged/README.md).

    python scripts/judged_eval.py prompts                 # held-out prompts -> prompts.jsonl (reads ../shared/data)
    python scripts/judged_eval.py outputs NAME [--style augment|rewrite]   # this checkout's optimizer -> outputs/NAME.jsonl
    python scripts/judged_eval.py blind NAME [NAME ...]   # changed candidates of the systems, shuffled -> blind/in_XX.jsonl + key.json
    python scripts/judged_eval.py report                  # blind/out_XX.jsonl + key.json -> report.md (B/N/U/H per system)
    python scripts/judged_eval.py confirm-prompts         # a second held-out set -> benchmarks/judged/confirm/prompts.jsonl
    python scripts/judged_eval.py --dir benchmarks/judged/confirm outputs|blind|report ...   # the same steps there

A system's output file holds one ``{id, optimized, reason}`` per prompt; ``unchanged`` (the prompt
itself) is always a system. Unchanged prompts are not judged: they count as U.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIR = ROOT / "benchmarks" / "judged"
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from faithful_data import read_jsonl, write_jsonl  # noqa: E402

CHUNK = 150
#: The main set's prompts per source: oneprompted validation, BPO test, held-out HH-RLHF.
N_ONEPROMPTED, N_BPO_TEST, N_HH = 120, 60, 40


def prompts() -> None:
    """220 held-out prompts: 120 oneprompted validation (all 39 with material), 60 BPO test, 40 HH held out."""
    from faithful_data import hh_split

    rng = random.Random(2026)
    val = read_jsonl(SHARED / "oneprompted" / "validation.jsonl")
    with_material = [r for r in val if r["context"]]
    op = with_material + rng.sample([r for r in val if not r["context"]], N_ONEPROMPTED - len(with_material))
    bpo = rng.sample(json.loads((SHARED / "bpo" / "bpo_test.json").read_text(encoding="utf-8")), N_BPO_TEST)
    hh = rng.sample(hh_split()[1], N_HH)
    rows = [{"id": f"opv-{i:03d}", "source": "oneprompted/validation", "prompt": r["prompt"]} for i, r in enumerate(op)]
    rows += [{"id": f"bpot-{i:03d}", "source": "bpo/bpo_test", "prompt": r["prompt"]} for i, r in enumerate(bpo)]
    rows += [{"id": f"hhh-{i:03d}", "source": "hh-rlhf/held-out", "prompt": p} for i, p in enumerate(hh)]
    write_jsonl(DIR / "prompts.jsonl", rows)
    print(f"{len(rows)} prompts ({len(with_material)} with pasted material)")


def confirm_prompts() -> None:
    """A second held-out set, judged once, to check the main set's figures after the rounds of
    choices made while it was being judged: every oneprompted validation prompt and a sample of the
    BPO test split and held-out HH-RLHF turns that neither the main set nor the safety notes' dev
    set (``training_data/safety/dev``) uses, in the main set's proportions (no prompt with pasted
    material is left: the main set has them all)."""
    from faithful_data import hh_split

    used = {r["prompt"] for r in read_jsonl(DIR / "prompts.jsonl")}
    used |= {r["prompt"] for r in read_jsonl(ROOT / "training_data" / "safety" / "dev" / "prompts.jsonl")}
    rng = random.Random(2027)
    op = [r["prompt"] for r in read_jsonl(SHARED / "oneprompted" / "validation.jsonl") if r["prompt"] not in used]
    bpo = [r["prompt"] for r in json.loads((SHARED / "bpo" / "bpo_test.json").read_text(encoding="utf-8"))]
    bpo = rng.sample([p for p in bpo if p not in used], round(len(op) * N_BPO_TEST / N_ONEPROMPTED))
    hh = rng.sample([p for p in hh_split()[1] if p not in used], round(len(op) * N_HH / N_ONEPROMPTED))
    rows = [{"id": f"opv2-{i:03d}", "source": "oneprompted/validation", "prompt": p} for i, p in enumerate(op)]
    rows += [{"id": f"bpot2-{i:03d}", "source": "bpo/bpo_test", "prompt": p} for i, p in enumerate(bpo)]
    rows += [{"id": f"hhh2-{i:03d}", "source": "hh-rlhf/held-out", "prompt": p} for i, p in enumerate(hh)]
    (DIR / "confirm").mkdir(exist_ok=True)
    write_jsonl(DIR / "confirm" / "prompts.jsonl", rows)
    print(f"{len(rows)} prompts ({len(op)} oneprompted, {len(bpo)} BPO test, {len(hh)} HH-RLHF)")


def outputs(name: str, style: str | None, prompts_file: str | None = None) -> None:
    from bpo_core import BPOOptimizer

    rows = read_jsonl(Path(prompts_file) if prompts_file else DIR / "prompts.jsonl")
    optimizer = BPOOptimizer.default(**({"style": style} if style else {}))
    results = []
    for start in range(0, len(rows), 32):
        results += optimizer.rewrite_batch([r["prompt"] for r in rows[start : start + 32]])
    write_jsonl(
        (Path(prompts_file).parent if prompts_file else DIR / "outputs") / f"{name}.jsonl",
        [
            {"id": r["id"], "optimized": res.optimized, "reason": res.reason, "style": res.style}
            for r, res in zip(rows, results)
        ],
    )
    print(f"{name}: {sum(res.changed for res in results)}/{len(rows)} changed")


def blind(names: list[str], decoys: int = 0) -> None:
    """Changed candidates of the systems, shuffled under hashed ids, in slices. A candidate that
    several systems made alike (same prompt, same text) is judged once and counts for each.

    Labels already in ``blind/`` for candidates still made are kept (``out_00.jsonl`` after
    this); only new candidates go to new slices, so a changed system is judged where it changed.
    """
    rows = {r["id"]: r for r in read_jsonl(DIR / "prompts.jsonl")}
    folder = DIR / "blind"
    folder.mkdir(parents=True, exist_ok=True)
    # An earlier slice's label wins: a decoy judged again only measures the judge.
    judged = {r["id"]: r for path in sorted(folder.glob("out_*.jsonl"), reverse=True) for r in read_jsonl(path)}
    items, key = [], {}
    for name in names:
        for out in read_jsonl(DIR / "outputs" / f"{name}.jsonl"):
            original = rows[out["id"]]["prompt"]
            if out["optimized"] == original:
                continue
            blind_id = hashlib.sha1(f"{out['id']}\0{out['optimized']}".encode()).hexdigest()[:10]
            if blind_id not in key:
                key[blind_id] = []
                items.append({"id": blind_id, "original": original, "candidate": out["optimized"]})
            key[blind_id].append({"system": name, "id": out["id"]})
    kept = [i for i in items if i["id"] in judged]
    new = [i for i in items if i["id"] not in judged]
    new += random.Random(12).sample(kept, min(decoys, len(kept))) if new else []
    random.Random(11).shuffle(new)
    for old in folder.glob("*.jsonl"):
        old.unlink()
    (folder / "key.json").write_text(json.dumps(key, indent=0), encoding="utf-8")
    slices = [kept] if kept else []
    slices += [new[k : k + CHUNK] for k in range(0, len(new), CHUNK)]
    for n, part in enumerate(slices):
        write_jsonl(folder / f"in_{n:02d}.jsonl", part)
    if kept:
        write_jsonl(folder / "out_00.jsonl", [judged[i["id"]] for i in kept])
    fresh = len(new) - min(decoys, len(kept)) if new else 0
    print(
        f"{len(items)} candidates: {len(kept)} already judged, {fresh} new (+ decoys) in {len(slices) - bool(kept)} slices"
    )


def report() -> None:
    rows = read_jsonl(DIR / "prompts.jsonl")
    key = json.loads((DIR / "blind" / "key.json").read_text(encoding="utf-8"))
    slices = [read_jsonl(path) for path in sorted((DIR / "blind").glob("out_*.jsonl"))]
    # A decoy is judged again in a later slice; its first label (out_00) is the one that counts.
    labels = {r["id"]: r for part in reversed(slices) for r in part}
    first = {r["id"]: r["label"] for r in slices[0]} if slices else {}
    repeats = [(first[r["id"]], r["label"]) for part in slices[1:] for r in part if r["id"] in first]
    if repeats:
        print(f"decoys: {sum(a == b for a, b in repeats)} of {len(repeats)} got their earlier label")
    missing = set(key) - set(labels)
    if missing:
        sys.exit(f"{len(missing)} judged items missing (e.g. {sorted(missing)[:3]})")
    systems = sorted({k["system"] for ks in key.values() for k in ks})
    by = {(k["system"], k["id"]): labels[b] for b, ks in key.items() for k in ks}
    sources = sorted({r["source"] for r in rows})
    lines = ["| system | prompts | B | N | U | H | B - H |", "|---|---|---|---|---|---|---|"]
    detail = ["", "| system | set | n | B | N | U | H |", "|---|---|---|---|---|---|---|"]
    harmful = []
    for system in ["unchanged", *systems]:
        counts: Counter[str] = Counter()
        per_set: dict[str, Counter[str]] = {s: Counter() for s in sources}
        for r in rows:
            label = by.get((system, r["id"]), {"label": "U"})["label"]
            counts[label] += 1
            per_set[r["source"]][label] += 1
            if label == "H":
                harmful.append((system, r["id"], by[(system, r["id"])]["why"]))
        n = len(rows)
        pct = {k: 100 * counts[k] / n for k in "BNUH"}
        lines.append(
            f"| {system} | {n} | {pct['B']:.1f}% | {pct['N']:.1f}% | {pct['U']:.1f}% | {pct['H']:.1f}% | {pct['B'] - pct['H']:+.1f} |"
        )
        for s in sources:
            c = per_set[s]
            m = sum(c.values())
            detail.append(f"| {system} | {s} | {m} | " + " | ".join(f"{100 * c[k] / m:.0f}%" for k in "BNUH") + " |")
    out = [
        "# Judged faithfulness (rubric, blind, a strong LLM as judge)",
        "",
        *lines,
        *detail,
        "",
        "## Harmful cases",
        "",
    ]
    out += [f"- {system} `{rid}`: {why}" for system, rid, why in harmful] or ["(none)"]
    (DIR / "report.md").write_text("\n".join(out) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prompts", "confirm-prompts", "outputs", "blind", "report"])
    parser.add_argument(
        "--dir", help="outputs, blind, report: another judged set's folder (default: benchmarks/judged)"
    )
    parser.add_argument("names", nargs="*")
    parser.add_argument("--style", choices=["augment", "rewrite"])
    parser.add_argument("--adapter", help="outputs: an adapter folder instead of the shipped one")
    parser.add_argument("--prompts", help="outputs: another prompts file (e.g. a dev set); NAME.jsonl goes next to it")
    parser.add_argument(
        "--decoys", type=int, default=0, help="blind: already-judged candidates mixed into the new slices"
    )
    args = parser.parse_args()
    global DIR
    if args.step == "confirm-prompts":
        confirm_prompts()
        return
    if args.step == "prompts" and args.dir:
        parser.error("prompts builds the main set; confirm-prompts builds the second one")
    DIR = Path(args.dir).resolve() if args.dir else DIR
    if args.step == "prompts":
        prompts()
    elif args.step == "outputs":
        from faithful_data import use_adapter

        use_adapter(args.adapter)
        outputs(args.names[0], args.style, args.prompts)
    elif args.step == "blind":
        blind(args.names, args.decoys)
    else:
        report()


if __name__ == "__main__":
    main()
