"""Fit the learned addition guard: a probe that reads the optimizer model's own hidden states and
predicts whether its addition helps or harms (see training_data/addition_guard/README.md).

    python scripts/addition_probe.py candidates   # training prompts -> forced additions (runs/probe/cands.jsonl)
    python scripts/addition_probe.py blind        # candidates with an addition -> runs/probe/blind/in_XX.jsonl + key.json
    python scripts/addition_probe.py collect      # judges' labels -> training_data/addition_guard/labels.jsonl
    python scripts/addition_probe.py fit          # committed labels -> addition_probe.json in the shipped adapter
    python scripts/addition_probe.py fit-safety   # judged safety notes -> the probe's safety gate (after fit)

``fit`` reads committed files only (and the model); the other steps make them.

Only training prompts (oneprompted train, BPO train_val300, HH-RLHF's training pool) are used;
never the BPO test split, the eval sets or the held-out prompts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "probe"
DATA = ROOT / "training_data" / "addition_guard"
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from faithful_data import read_jsonl, write_jsonl  # noqa: E402

SLICE = 200
HH_SAMPLE = 300


def training_prompts() -> list[dict]:
    from faithful_data import hh_split

    rows = [
        {"id": f"op-{i:04d}", "source": "oneprompted/train", "prompt": r["prompt"]}
        for i, r in enumerate(read_jsonl(SHARED / "oneprompted" / "train.jsonl"))
    ]
    bpo = json.loads((SHARED / "bpo" / "train_val300.json").read_text(encoding="utf-8"))
    rows += [
        {"id": f"bpo-{i:03d}", "source": "bpo/train_val300", "prompt": r["final_input"]} for i, r in enumerate(bpo)
    ]
    pool, _ = hh_split()
    picked = sorted(random.Random(1).sample(range(len(pool)), HH_SAMPLE))
    rows += [{"id": f"hh-{i:04d}", "source": "hh-rlhf/train-pool", "prompt": pool[i]} for i in picked]
    random.Random(2).shuffle(rows)  # sources mixed, so any prefix is a fair sample
    return rows


def candidates(limit: int | None, prompts_file: str | None, out_name: str, seed: int | None = None) -> None:
    """The shipped pipeline with every prompt pushed to add (``add_below=1``): what it would add if it did.

    ``prompts_file``: other prompts (``{id, prompt}`` rows, e.g. a dev set) instead of the training ones.
    ``seed``: sampled additions (``mode="stable"``) instead of greedy ones.
    """
    from bpo_core import BPOOptimizer
    from bpo_core.guard import GuardConfig

    rows = (read_jsonl(Path(prompts_file)) if prompts_file else training_prompts())[:limit]
    optimizer = BPOOptimizer.default(add_below=1.0, guard=GuardConfig(learned=False), seed=seed, cache=False)
    mode = "stable" if seed is not None else None
    out = []
    RUNS.mkdir(parents=True, exist_ok=True)
    with open(RUNS / out_name, "w", encoding="utf-8") as f:
        for start in range(0, len(rows), 64):
            chunk = rows[start : start + 64]
            for r, res in zip(chunk, optimizer.rewrite_batch([r["prompt"] for r in chunk], mode=mode)):
                out.append({**r, "addition": res.addition, "optimized": res.optimized, "reason": res.reason})
                f.write(json.dumps(out[-1], ensure_ascii=False) + "\n")
            f.flush()
            print(f"{len(out)}/{len(rows)}", flush=True)
    print(f"{sum(bool(r['addition']) for r in out)}/{len(out)} with an addition")


def blind(extra: list[str], final: bool) -> None:
    """New candidates with an addition, under hashed ids, in slices of ``SLICE`` for blind judges.

    Run it while ``candidates`` is still writing: each call adds the full slices it can (``final``:
    the remainder too); ``key.json`` remembers what was sliced. ``extra`` files (``{id, prompt,
    optimized}`` rows, e.g. a dev set's outputs) go in the same way.
    """
    folder = RUNS / "blind"
    folder.mkdir(parents=True, exist_ok=True)
    key_path = folder / "key.json"
    key = json.loads(key_path.read_text(encoding="utf-8")) if key_path.is_file() else {}
    items = []
    for path in [RUNS / "cands.jsonl", *map(Path, extra)]:
        for r in read_jsonl(path):
            blind_id = hashlib.sha1(f"{path.name}:{r['id']}".encode()).hexdigest()[:10]
            if r["optimized"] != r["prompt"] and blind_id not in key:
                items.append((blind_id, {"file": path.name, "id": r["id"]}, r))
    random.Random(len(key)).shuffle(items)
    n = len(list(folder.glob("in_*.jsonl")))
    while len(items) >= SLICE or (final and items):
        part, items = items[:SLICE], items[SLICE:]
        write_jsonl(
            folder / f"in_{n:02d}.jsonl",
            [{"id": b, "original": r["prompt"], "candidate": r["optimized"]} for b, _, r in part],
        )
        key.update((b, k) for b, k, _ in part)
        print(f"in_{n:02d}.jsonl: {len(part)} candidates")
        n += 1
    key_path.write_text(json.dumps(key, indent=0), encoding="utf-8")


def collect() -> None:
    """Judges' labels of the training candidates -> the committed ``labels.jsonl`` (dev items stay in runs/)."""
    folder = RUNS / "blind"
    key = json.loads((folder / "key.json").read_text(encoding="utf-8"))
    labels = {r["id"]: r for path in sorted(folder.glob("out_*.jsonl")) for r in read_jsonl(path)}
    sliced = {r["id"] for path in folder.glob("in_*.jsonl") for r in read_jsonl(path)}
    missing = sliced - set(labels)
    if missing:
        sys.exit(f"{len(missing)} sliced items have no label yet (e.g. {sorted(missing)[:3]})")
    rows = {k["id"]: k for k in key.values()}
    by_file: dict[str, dict[str, dict]] = {}
    for blind_id, k in key.items():
        by_file.setdefault(k["file"], {})[k["id"]] = labels[blind_id]
    cands = read_jsonl(RUNS / "cands.jsonl")
    out = []
    for r in cands:
        judged = by_file.get("cands.jsonl", {}).get(r["id"])
        if r["addition"] and judged is None:
            continue  # generated after the last slice
        label = judged["label"] if judged else "U"
        out.append(
            {
                "id": r["id"],
                "source": r["source"],
                "prompt": r["prompt"],
                "addition": r["addition"] or "",
                "label": label,
                "why": judged["why"] if judged else r["reason"],
            }
        )
    write_jsonl(DATA / "labels.jsonl", out)
    counts = {k: sum(r["label"] == k for r in out) for k in "BNHU"}
    print(f"{len(out)} prompts: {counts} ({len(rows)} judged in all)")
    for name, judged in by_file.items():
        if name != "cands.jsonl":
            write_jsonl(RUNS / f"labels_{name}", [{**v, "id": i} for i, v in judged.items()])


def _load_model():  # noqa: ANN202
    from bpo_core.default_model import load_default_backend
    from bpo_core.formats import ChatFormat

    backend = load_default_backend()
    return backend, ChatFormat().with_style("augment")


def extract(rows: list[dict], layers: list[int]) -> dict[int, Any]:
    """Features of each row's (view, addition) on every layer in ``layers``, as the runtime computes them."""
    import torch

    from bpo_core.addition_probe import features
    from bpo_core.rewrite.segment import segment

    backend, fmt = _load_model()
    tok = backend.tokenizer
    per_layer: dict[int, list[list[float]]] = {layer: [] for layer in layers}
    torch.set_num_threads(2)
    for k, r in enumerate(rows):
        view = segment(r["prompt"]).view()
        got, p_nothing = features(
            backend.model,
            fmt.encode(view, tok),
            tok(r["addition"], add_special_tokens=False)["input_ids"],
            eos_id=tok.eos_token_id,
            layers=layers,
        )
        odds = math.log(max(p_nothing, 1e-6) / max(1 - p_nothing, 1e-6))
        for layer in layers:
            per_layer[layer].append(got[layer] + [odds])  # P(nothing) is kept for fit's add_below simulation
        if k % 100 == 0:
            print(f"features {k}/{len(rows)}", flush=True)
    return {layer: torch.tensor(v) for layer, v in per_layer.items()}


#: Deeper layers cost more at run time (the probe's forward stops at its layer) and separated no
#: better when tried (20, 24, 28, 30: within 0.005 AUC of 16).
LAYERS = [8, 12, 16]
#: Candidate feature sets: which of bpo_core.addition_probe.PARTS a probe reads.
PART_SETS = [("prompt_end", "addition_mean", "end"), ("addition_mean", "end")]
L2 = [0.03, 0.1, 0.3]
FOLDS = 5
#: The thresholds maximize B - H_WEIGHT * H among the judged training prompts (cross-validated).
H_WEIGHT = 4.0


def _columns(parts: tuple[str, ...], hidden: int) -> list[int]:
    from bpo_core.addition_probe import PARTS

    return [k for i, p in enumerate(PARTS) if p in parts for k in range(i * hidden, (i + 1) * hidden)]


def _fit_lr(x: Any, y: Any, l2: float) -> tuple[Any, Any, Any, Any]:
    """Standardized logistic regression (L-BFGS, L2): (mean, scale, weights, bias)."""
    import torch

    mean, scale = x.mean(0), x.std(0).clamp(min=1e-4)
    z = (x - mean) / scale
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mean, scale, w.detach(), b.detach()


def _predict(model: tuple[Any, Any, Any, Any], x: Any) -> Any:
    import torch

    mean, scale, w, b = model
    return torch.sigmoid(((x - mean) / scale) @ w + b)


def _auc(p: list[float], y: list[int]) -> float:
    pos = [a for a, t in zip(p, y) if t]
    neg = [a for a, t in zip(p, y) if not t]
    wins = sum((a > c) + 0.5 * (a == c) for a in pos for c in neg)
    return wins / max(1, len(pos) * len(neg))


def _cv(x: Any, y: Any, l2: float) -> list[float]:
    import torch

    n = len(y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    pred = torch.zeros(n)
    for k in range(FOLDS):
        test = order[k::FOLDS]
        train = torch.tensor(sorted(set(order.tolist()) - set(test.tolist())))
        pred[test] = _predict(_fit_lr(x[train], y[train], l2), x[test])
    return pred.tolist()


def _best_thresholds(
    helps: list[float], harms: list[float], labels: list[str], total: int, writes: list[tuple[float | None, Any]]
) -> tuple[float | None, float, float, dict[str, float]]:
    """The choice with the most B - H_WEIGHT * H over ``total`` prompts, as (gate threshold,
    min_helps, max_harms, the kept rates in %).

    ``writes``: the candidate (gate threshold, which rows get an addition written) pairs; the
    heads' thresholds are searched for each.
    """
    import torch

    hp, hm = torch.tensor(helps), torch.tensor(harms)
    masks = {k: torch.tensor([lab == k for lab in labels]) for k in "BNH"}
    best: tuple[float, float | None, float, float, dict[str, float]] | None = None
    for min_score, written in writes:
        for min_helps in [k / 100 for k in range(5, 80)]:
            for max_harms in [k / 100 for k in range(5, 55)]:
                kept = written & (hp >= min_helps) & (hm < max_harms)
                rates = {k: 100 * float((kept & m).sum()) / total for k, m in masks.items()}
                value = rates["B"] - H_WEIGHT * rates["H"]
                if best is None or value > best[0] + 1e-9:
                    best = (value, min_score, min_helps, max_harms, rates)
    assert best is not None
    return best[1:]


def cached_features(rows: list[dict]) -> dict[int, Any]:
    """``extract`` for ``rows``, reusing runs/probe/features.pt (keyed by prompt and addition)."""
    import torch

    path = RUNS / "features.pt"
    cache: dict[tuple[str, str], dict[int, Any]] = torch.load(path) if path.is_file() else {}
    todo = [r for r in rows if (r["prompt"], r["addition"]) not in cache]
    if todo:
        got = extract(todo, LAYERS)
        for k, r in enumerate(todo):
            cache[(r["prompt"], r["addition"])] = {layer: got[layer][k] for layer in LAYERS}
        torch.save(cache, path)
    return {layer: torch.stack([cache[(r["prompt"], r["addition"])][layer] for r in rows]) for layer in LAYERS}


def fit(out_dir: Path, add_below: float | None) -> None:
    """Choose the layer, features and L2 by cross-validated AUC (B against N and H, and H against
    B and N), refit both heads on all judged training additions, fit the gate (unless
    ``add_below`` is given), choose the thresholds on the cross-validated predictions, and write
    the probe into ``out_dir``."""
    import torch

    from bpo_core.addition_probe import PROBE_FILE, AdditionProbe, Head

    rows = read_jsonl(DATA / "labels.jsonl")
    judged = [r for r in rows if r["label"] in "BNH" and r["addition"]]
    feats = cached_features(judged)
    labels = [r["label"] for r in judged]
    y_b = torch.tensor([lab == "B" for lab in labels], dtype=torch.float32)
    y_h = torch.tensor([lab == "H" for lab in labels], dtype=torch.float32)
    hidden = (feats[LAYERS[0]].shape[1] - 1) // 3
    results = []
    for layer in LAYERS:
        for parts in PART_SETS:
            x = feats[layer][:, _columns(parts, hidden)]
            for l2 in L2:
                helps, harms = _cv(x, y_b, l2), _cv(x, y_h, l2)
                auc_b, auc_h = _auc(helps, y_b.int().tolist()), _auc(harms, y_h.int().tolist())
                results.append(((auc_b + auc_h) / 2, auc_b, auc_h, layer, parts, l2, helps, harms))
                print(f"layer {layer:2d} {'+'.join(parts):30s} l2={l2:g}  AUC B {auc_b:.3f}  H {auc_h:.3f}", flush=True)
    _, auc_b, auc_h, layer, parts, l2, helps, harms = max(results, key=lambda r: r[0])
    print(f"chosen: layer {layer}, {parts}, l2={l2}: AUC B {auc_b:.3f}, H {auc_h:.3f}")
    x = feats[layer][:, _columns(parts, hidden)]
    p_nothing = torch.sigmoid(feats[layer][:, -1]).tolist()
    before = [lab for lab, p in zip(labels, p_nothing) if p < 0.5]
    rules_only = {k: round(100 * before.count(k) / len(rows), 1) for k in "BNH"}
    print(f"of {len(rows)} training prompts, rules only (add_below 0.5): {rules_only}")
    gate = None
    info: dict[str, Any] = {}
    if add_below is None:
        gate, min_helps, max_harms, rates, info = _fit_gate(rows, judged, feats[layer][:, :hidden], layer, helps, harms)
    else:
        written = torch.tensor([p < add_below for p in p_nothing])
        _, min_helps, max_harms, rates = _best_thresholds(helps, harms, labels, len(rows), [(None, written)])
    print(f"with the guard (min_helps {min_helps}, max_harms {max_harms}, cross-validated): {rates}")
    mean, scale, w_b, b_b = _fit_lr(x, y_b, l2)
    _, _, w_h, b_h = _fit_lr(x, y_h, l2)
    probe = AdditionProbe(
        layer=layer,
        parts=parts,
        mean=tuple(mean.tolist()),
        scale=tuple(scale.tolist()),
        helps=Head(tuple(w_b.tolist()), float(b_b)),
        harms=Head(tuple(w_h.tolist()), float(b_h)),
        min_helps=min_helps,
        max_harms=max_harms,
        add_below=add_below,
        gate=gate,
        info={
            "data": "training_data/addition_guard/labels.jsonl",
            "fitted_by": "python scripts/addition_probe.py fit"
            + ("" if add_below is None else f" --add-below {add_below}"),
            "judged_additions": len(judged),
            "prompts": len(rows),
            "l2": l2,
            "cv_auc_helps": round(auc_b, 3),
            "cv_auc_harms": round(auc_h, 3),
            "rules_only_add_below_0.5_pct": rules_only,
            "with_guard_cv_pct": {k: round(v, 1) for k, v in rates.items()},
            "h_weight": H_WEIGHT,
            **info,
        },
    )
    probe.save(out_dir / PROBE_FILE)
    print(f"wrote {out_dir / PROBE_FILE}")


#: The gate may send at most this share of prompts to generation: what ``add_below`` 0.6 sent,
#: so a call's latency stays where it was.
MAX_WRITTEN = 0.43
GATE_L2 = [0.3, 1.0, 3.0]


def _fit_gate(
    rows: list[dict], judged: list[dict], prompt_end: Any, layer: int, helps: list[float], harms: list[float]
) -> tuple[Any, float, float, dict[str, float], dict[str, Any]]:
    """The gate (P(the addition would be judged B) from the prompt's state), and the thresholds of
    gate and heads, chosen together on cross-validated predictions.

    It learns from every prompt the model wrote for: the judged additions and the prompts whose
    addition the clause rules emptied (they count as not better).
    """
    import torch

    from bpo_core.addition_probe import Gate, Head

    emptied = [
        r
        for r in rows
        if r["label"] == "U" and r["why"] and r["why"].startswith(("addition named", "the optimizer had nothing"))
    ]
    x = torch.cat([prompt_end, _prompt_states(emptied, layer)])
    labels = [r["label"] for r in judged] + ["U"] * len(emptied)
    y = torch.tensor([lab == "B" for lab in labels], dtype=torch.float32)
    auc, l2, pred = _best_l2(x, y, "gate")
    g = torch.tensor(pred)
    total = len(rows)
    writes = [(round(t, 4), g >= t) for t in torch.quantile(g, torch.linspace(0.2, 0.9, 71)).tolist()]
    writes = [(t, written) for t, written in writes if float(written.sum()) / total <= MAX_WRITTEN]
    min_score, min_helps, max_harms, rates = _best_thresholds(
        helps + [0.0] * len(emptied), harms + [1.0] * len(emptied), labels, total, writes
    )
    assert min_score is not None
    mean, scale, w, b = _fit_lr(x, y, l2)
    written_pct = 100 * float((g >= min_score).sum()) / total
    print(f"gate: l2={l2}, AUC {auc:.3f}, min_score {min_score}: writes for {written_pct:.1f}% of prompts")
    gate = Gate(tuple(mean.tolist()), tuple(scale.tolist()), Head(tuple(w.tolist()), float(b)), min_score)
    info = {"gate_l2": l2, "gate_cv_auc": round(auc, 3), "gate_written_pct": round(written_pct, 1)}
    return gate, min_helps, max_harms, rates, info


def _best_l2(x: Any, y: Any, what: str) -> tuple[float, float, list[float]]:
    """The L2 of :data:`GATE_L2` with the best cross-validated AUC: (AUC, L2, the predictions)."""
    fitted = []
    for l2 in GATE_L2:
        pred = _cv(x, y, l2)
        fitted.append((_auc(pred, y.int().tolist()), l2, pred))
        print(f"{what} l2={l2:g}: AUC {fitted[-1][0]:.3f}", flush=True)
    return max(fitted, key=lambda f: f[0])


def _prompt_states(rows: list[dict], layer: int) -> Any:
    """The state that predicts the first new token, at ``layer``, per row's prompt (cached)."""
    import torch

    from bpo_core.rewrite.segment import segment

    path = RUNS / f"prompt_states_{layer}.pt"
    cache: dict[str, Any] = torch.load(path) if path.is_file() else {}
    todo = [r for r in rows if r["prompt"] not in cache]
    if todo:
        backend, fmt = _load_model()
        for r in todo:
            ids = fmt.encode(segment(r["prompt"]).view(), backend.tokenizer)
            with torch.inference_mode():
                out = backend.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
            cache[r["prompt"]] = out.hidden_states[layer][0, -1].float().clone()  # not a view: saved alone
        torch.save(cache, path)
    return torch.stack([cache[r["prompt"]] for r in rows])


SAFETY = ROOT / "training_data" / "safety"
#: Safety-gate thresholds maximize notes the judge found better minus this many times the notes
#: written where the teacher saw no need or the judge no gain (cross-validated), for requests the
#: risk rules flag and for the others: most of what users type is harmless, so a note where none
#: is wanted costs more there. The notes a lower threshold adds there fall on risky-looking
#: requests the teacher left alone rather than on ordinary ones, so that weight was lowered on the
#: dev set's judged notes (training_data/safety/README.md).
SAFETY_FP_WEIGHT = 2.0
PLAIN_FP_WEIGHT = 3.0


#: The safety gate reads the mean of the prompt's states: cross-validated AUC 0.952 against 0.929
#: for the state that predicts the first new token, which the addition gate reads.
SAFETY_READS = "prompt_mean"


def prompt_summaries(prompts: list[str], part: str) -> Any:
    """``part`` of each prompt's summaries (``bpo_core.addition_probe.PROMPT_PARTS``), as the
    runtime computes them (``HFBackend.prompt_summaries``, cached in runs/probe)."""
    import torch

    from bpo_core.rewrite.segment import segment

    path = RUNS / "prompt_summaries.pt"
    cache: dict[str, dict[str, Any]] = torch.load(path) if path.is_file() else {}
    todo = list(dict.fromkeys(p for p in prompts if p not in cache))
    if todo:
        backend, fmt = _load_model()
        for start in range(0, len(todo), 200):
            chunk = todo[start : start + 200]
            got = backend.prompt_summaries([segment(p).view() for p in chunk], fmt)
            cache.update({p: {k: torch.tensor(v) for k, v in g.items()} for p, g in zip(chunk, got)})
            print(f"prompt summaries {start + len(chunk)}/{len(todo)}", flush=True)
        torch.save(cache, path)
    return torch.stack([cache[p][part] for p in prompts])


def safety_rows(labels: dict[str, str]) -> list[dict]:
    """The safety gate's training prompts, each with ``label`` 1 (a note judged better) or 0.

    The safety teacher's inputs (``training_data/safety``): 1 where its note was judged B, 0 where
    it wrote none or the note was judged N or H. The first teacher pass's other oneprompted and BPO
    prompts, which no risk rule flags and the safety teacher was not asked about, count as 0, and so
    do the strong LLM's harmless look-alikes of risky requests (``contrast.jsonl``).
    ``labels``: the judge's label per source id. ``kind``: which shipped note a judged-B teacher
    note is sorted into (``notes.json``; ``None`` for the others). ``flagged``: the risk rules flag
    the prompt.
    """
    import re

    from faithful_data import OUT as FAITHFUL

    from bpo_core.rewrite.faithfulness import RISK_CONFLICTS, addition_conflict

    def flagged(prompt: str) -> bool:
        return addition_conflict(prompt) in RISK_CONFLICTS

    sources = read_jsonl(SAFETY / "sources.jsonl")
    notes = {r["id"]: r["safety"] for r in read_jsonl(SAFETY / "teacher_outputs.jsonl")} if labels else {}
    kinds = safety_kinds()
    rows = []
    for s in sources:
        good = labels.get(s["id"]) == "B"
        kind = (
            next((k["kind"] for k in kinds if re.search(k["teacher_pattern"], notes[s["id"]], re.I)), None)
            if good
            else None
        )
        rows.append({"prompt": s["prompt"], "label": int(good), "kind": kind, "flagged": flagged(s["prompt"])})
    asked = {s["id"] for s in sources}

    for src in read_jsonl(FAITHFUL / "sources.jsonl"):
        unasked = src["id"] not in asked and not src["source"].startswith("hh-rlhf")
        if unasked and not flagged(src["prompt"]):
            rows.append({"prompt": src["prompt"], "label": 0, "kind": None, "flagged": False})
    for r in read_jsonl(SAFETY / "contrast.jsonl"):
        rows.append({"prompt": r["prompt"], "label": 0, "kind": None, "flagged": flagged(r["prompt"])})
    return rows


def safety_kinds() -> list[dict]:
    """The shipped safety notes and the pattern that sorts a teacher's note into each (``notes.json``)."""
    return json.loads((SAFETY / "notes.json").read_text(encoding="utf-8"))["kinds"]


def fit_safety(out_dir: Path) -> None:
    """Fit the safety gate (P(a safety note would be judged better) from the mean of the prompt's
    states at the probe's layer), choose its two thresholds (requests the risk rules flag, and the
    rest) on cross-validated predictions, fit the note heads, and add all to the probe in ``out_dir``."""
    import dataclasses

    import torch

    from bpo_core.addition_probe import PROBE_FILE, AdditionProbe, Gate, Head

    probe = AdditionProbe.load(out_dir / PROBE_FILE)
    rows = safety_rows({r["id"]: r["label"] for r in read_jsonl(SAFETY / "judgements.jsonl")})
    x = prompt_summaries([r["prompt"] for r in rows], SAFETY_READS)
    y = torch.tensor([r["label"] for r in rows], dtype=torch.float32)
    auc, l2, pred = _best_l2(x, y, "safety gate")
    p = torch.tensor(pred)
    flagged = torch.tensor([r["flagged"] for r in rows])
    stats = {}
    for name, group, weight in (("flagged", flagged, SAFETY_FP_WEIGHT), ("plain", ~flagged, PLAIN_FP_WEIGHT)):
        t = max(
            (float((group & (p >= t) & (y == 1)).sum() - weight * (group & (p >= t) & (y == 0)).sum()), t)
            for t in [k / 100 for k in range(5, 100)]
        )[1]
        opened = group & (p >= t)
        stats[name] = {
            "min_score": t,
            "prompts": int(group.sum()),
            "precision": round(float((opened & (y == 1)).sum()) / max(1, int(opened.sum())), 3),
            "recall": round(float((opened & (y == 1)).sum()) / max(1, int((group & (y == 1)).sum())), 3),
        }
    min_score, plain_min_score = stats["flagged"]["min_score"], stats["plain"]["min_score"]
    print(f"safety gate: l2={l2}, AUC {auc:.3f}; cross-validated, by what the risk rules say: {stats}")
    mean, scale, w, b = _fit_lr(x, y, l2)
    gate = Gate(tuple(mean.tolist()), tuple(scale.tolist()), Head(tuple(w.tolist()), float(b)), min_score, SAFETY_READS)
    notes, accuracy = _fit_notes(rows, (x - mean) / scale, l2, plain_min_score)
    info = dict(probe.info or {})
    info |= {
        "safety_data": "training_data/safety (sources, judgements)",
        "safety_fitted_by": "python scripts/addition_probe.py fit-safety",
        "safety_prompts": len(rows),
        "safety_positives": int(y.sum()),
        "safety_l2": l2,
        "safety_cv_auc": round(auc, 3),
        "safety_cv": stats,
        "safety_notes_cv_accuracy": round(accuracy, 3),
    }
    dataclasses.replace(probe, safety=gate, safety_notes=notes, info=info).save(out_dir / PROBE_FILE)
    print(f"wrote {out_dir / PROBE_FILE}")


def _fit_notes(rows: list[dict], z: Any, l2: float, plain_min_score: float) -> tuple[Any, float]:
    """One-vs-rest heads over the gate's standardized state ``z``, one per shipped note, fitted on
    the prompts whose judged-B teacher note was sorted into a kind; and their cross-validated
    accuracy (the note picked is the kind's)."""
    import torch

    from bpo_core.addition_probe import Head, SafetyNotes

    kinds = safety_kinds()
    sorted_rows = [i for i, r in enumerate(rows) if r["kind"]]
    zs = z[sorted_rows]
    truth = [[k["kind"] for k in kinds].index(rows[i]["kind"]) for i in sorted_rows]
    cv = torch.stack(
        [
            torch.tensor(_cv(zs, torch.tensor([t == k for t in truth], dtype=torch.float32), l2))
            for k in range(len(kinds))
        ],
        1,
    )
    accuracy = float((cv.argmax(1) == torch.tensor(truth)).float().mean())
    heads = []
    for k in range(len(kinds)):
        m, sc, w, b = _fit_lr(zs, torch.tensor([t == k for t in truth], dtype=torch.float32), l2)
        # _fit_lr standardized zs again: fold that into a head over z itself.
        heads.append(Head(tuple((w / sc).tolist()), float(b - (w * m / sc).sum())))
    counts = {k["kind"]: truth.count(n) for n, k in enumerate(kinds)}
    print(f"safety notes: {counts}; cross-validated accuracy {accuracy:.3f}")
    notes = SafetyNotes(tuple(k["note"] for k in kinds), tuple(heads), tuple(k["kind"] for k in kinds), plain_min_score)
    return notes, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["candidates", "blind", "collect", "features", "fit", "fit-safety", "states"])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--limit", type=int)
    parser.add_argument(
        "--add-below",
        type=float,
        help="fit: no gate; choose the thresholds for this add_below instead (shipped with the probe)",
    )
    parser.add_argument("--seed", type=int, help="candidates: sample (mode=stable) with this seed")
    parser.add_argument("--prompts", help="candidates: a jsonl of {id, prompt} instead of the training prompts")
    parser.add_argument("--out", default="cands.jsonl", help="candidates: output file name under runs/probe")
    parser.add_argument("--final", action="store_true", help="blind: slice the remainder too")
    parser.add_argument("--adapter", help="candidates: an adapter folder instead of the shipped one")
    args = parser.parse_args()
    if args.step == "candidates":
        from faithful_data import use_adapter

        use_adapter(args.adapter)
        candidates(args.limit, args.prompts, args.out, args.seed)
    elif args.step == "blind":
        blind(args.files, args.final)
    elif args.step == "collect":
        collect()
    elif args.step == "features":  # precompute (fit computes what is missing anyway)
        for name in args.files or ["cands.jsonl"]:
            cached_features([r for r in read_jsonl(RUNS / name) if r["addition"]])
    elif args.step == "states":  # precompute the prompt summaries fit-safety reads (before the judging is done)
        prompt_summaries([r["prompt"] for r in safety_rows({})], SAFETY_READS)
    else:
        from bpo_core.default_model import SHIPPED_ADAPTER

        out = Path(args.files[0]) if args.files else SHIPPED_ADAPTER
        fit(out, args.add_below) if args.step == "fit" else fit_safety(out)


if __name__ == "__main__":
    main()
