"""The learned addition guard: a linear probe on the optimizer model's own hidden states.

The clause rules (``rewrite.faithfulness``) keep an addition made of grounded guidance words, but
cannot tell whether "explain the reasoning step by step" suits *this* prompt (a proof, a
role-play, a pasted conversation with no question). The probe can: it reads the model's hidden
states over ``template(prompt) + addition`` and was fitted on additions of this model that a
strong LLM judged blind with the rubric (``training_data/addition_guard``). An addition is kept
when the probe expects it to help and not to harm.

The probe ships next to the adapter it was fitted for (``addition_probe.json``); a model without
one keeps every addition the rules pass. Features: :func:`features`; fitting:
``scripts/addition_probe.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

#: Where a probe is looked for in a model or adapter folder.
PROBE_FILE = "addition_probe.json"

#: The summaries of one layer's hidden states a probe may read, in this order.
PARTS = ("prompt_end", "addition_mean", "end")
#: The summaries of a prompt's states a gate may read: the state that predicts the first new token,
#: or the mean over the prompt's tokens (after the template's shared prefix).
PROMPT_PARTS = ("prompt_end", "prompt_mean")


@dataclass(frozen=True)
class Head:
    """One logistic regression over the probe's standardized features."""

    weights: tuple[float, ...]
    bias: float

    def probability(self, z: Sequence[float]) -> float:
        logit = self.bias + sum(w * x for w, x in zip(self.weights, z))
        return 1 / (1 + math.exp(-logit)) if logit > -700 else 0.0


@dataclass(frozen=True)
class Gate:
    """Before anything is written: the probability that an addition would help this prompt, from
    one summary of the prompt's states (standardized, one logistic regression)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    head: Head
    #: Write an addition when :meth:`score` is at least this.
    min_score: float
    #: Which of :data:`PROMPT_PARTS` it reads.
    reads: str = "prompt_end"

    def score(self, feature: Sequence[float]) -> float:
        return self.head.probability(_standardized(feature, self.mean, self.scale, "gate"))


@dataclass(frozen=True)
class SafetyNotes:
    """Which safety note a request gets: one logistic head per note over the safety gate's
    standardized state; the note with the most probable head wins.

    The notes are fixed, reviewed texts ("Point out the legal and safety risks involved, ..."): a
    small model asked to write one garbles the request ("suggest lawful ways to shoplift"), while a
    fixed note cannot change or invent anything, and the heads learn from a strong LLM's judged
    notes which kind fits.
    """

    notes: tuple[str, ...]
    heads: tuple[Head, ...]
    #: What each note is for ("crisis", "stereotype", ...).
    kinds: tuple[str, ...]
    #: The safety gate's threshold for a request the risk rules do not flag (``Gate.min_score`` is
    #: for the ones they flag): most such requests are harmless, so a note needs more confidence.
    plain_min_score: float = 1.0

    def pick(self, z: Sequence[float]) -> str:
        return max(zip(self.notes, self.heads), key=lambda nh: nh[1].probability(z))[0]

    def note(self, kind: str) -> str | None:
        """The note for ``kind``, if there is one."""
        return next((n for n, k in zip(self.notes, self.kinds) if k == kind), None)


class Score(NamedTuple):
    """The probe's probabilities that an addition makes the answer better, and that it harms."""

    helps: float
    harms: float


@dataclass(frozen=True)
class AdditionProbe:
    """Two heads on standardized features of one layer's hidden states.

    An addition is kept when P(helps) is at least ``min_helps`` and P(harms) is below
    ``max_harms``: the judges' labels B and H are learned separately because what makes an
    addition harmful (a format the request contradicts, compliance with a harmful request) is
    not simply the absence of what makes one better.
    """

    layer: int
    parts: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    helps: Head
    harms: Head
    min_helps: float
    max_harms: float
    #: The ``add_below`` its thresholds were chosen with; ``add_below="auto"`` uses it when there is no gate.
    add_below: float | None = None
    #: Decides whether to write an addition at all (``add_below="auto"``), instead of the model's
    #: probability of adding nothing.
    gate: Gate | None = None
    #: Decides whether a request needs a safety note instead of a generic addition: P(a note
    #: would be judged better), from the same prompt state as ``gate``.
    safety: Gate | None = None
    #: The note a request the safety gate opens for gets (needed with ``safety``).
    safety_notes: SafetyNotes | None = None
    #: What the probe was fitted on and how well it did (free-form, for people).
    info: dict[str, Any] | None = None

    def score(self, feature: Sequence[float]) -> Score:
        z = _standardized(feature, self.mean, self.scale, "probe")
        return Score(self.helps.probability(z), self.harms.probability(z))

    def safety_note(self, feature: Sequence[float], *, flagged: bool) -> tuple[float, str | None]:
        """The safety gate's probability for a prompt's summary (the one its gate ``reads``), and the
        note it gets (``None``: none).

        ``flagged``: the risk rules flag the request (``bpo_core.rewrite.faithfulness.RISK_CONFLICTS``).
        """
        gate, notes = self.safety, self.safety_notes
        if gate is None or notes is None:
            return 0.0, None
        z = _standardized(feature, gate.mean, gate.scale, "safety gate")
        p = gate.head.probability(z)
        return p, notes.pick(z) if p >= (gate.min_score if flagged else notes.plain_min_score) else None

    def rejects(self, score: Score, min_helps: float | None = None) -> str | None:
        """Why an addition with ``score`` is dropped (``min_helps`` overrides the shipped threshold), or ``None``."""
        floor = self.min_helps if min_helps is None else min_helps
        if score.harms >= self.max_harms:
            return f"the learned guard expects the addition to harm ({score.harms:.2f} >= {self.max_harms:.2f})"
        if score.helps < floor:
            return f"the learned guard expects the addition not to help ({score.helps:.2f} < {floor:.2f})"
        return None

    def digest(self) -> str:
        """A short hash of what decides (layer, features, weights, thresholds): cached results key on it."""
        blob = json.dumps(self._data(with_info=False), sort_keys=True)
        return hashlib.blake2b(blob.encode(), digest_size=6).hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> AdditionProbe:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        try:
            probe = cls(
                layer=int(data["layer"]),
                parts=tuple(data["parts"]),
                mean=tuple(data["mean"]),
                scale=tuple(data["scale"]),
                helps=Head(tuple(data["helps"]["weights"]), float(data["helps"]["bias"])),
                harms=Head(tuple(data["harms"]["weights"]), float(data["harms"]["bias"])),
                min_helps=float(data["min_helps"]),
                max_harms=float(data["max_harms"]),
                add_below=None if data.get("add_below") is None else float(data["add_below"]),
                gate=_gate(data["gate"]) if data.get("gate") else None,
                safety=_gate(data["safety"]) if data.get("safety") else None,
                safety_notes=_notes(data["safety_notes"], float(data.get("safety_plain_min_score", 1.0)))
                if data.get("safety_notes")
                else None,
                info=data.get("info"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"Not an addition probe file: {path} ({type(exc).__name__}: {exc})") from exc
        unknown = set(probe.parts) - set(PARTS)
        sizes = {len(probe.mean), len(probe.scale), len(probe.helps.weights), len(probe.harms.weights)}
        for name, gate in (("gate", probe.gate), ("safety", probe.safety)):
            if gate is not None and len({len(gate.mean), len(gate.scale), len(gate.head.weights)}) != 1:
                raise ValueError(f"Not an addition probe file: {path} ({name} sizes differ)")
        safety, notes = probe.safety, probe.safety_notes
        if (safety is None) != (notes is None) or (
            safety is not None
            and notes is not None
            and not (
                len(notes.notes) == len(notes.heads) > 0
                and all(len(h.weights) == len(safety.mean) for h in notes.heads)
            )
        ):
            raise ValueError(f"Not an addition probe file: {path} (safety notes do not match the safety gate)")
        if unknown or len(sizes) != 1:
            raise ValueError(f"Not an addition probe file: {path} (unknown parts {sorted(unknown)} or sizes differ)")
        return probe

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self._data(with_info=True)) + "\n", encoding="utf-8")

    def _data(self, *, with_info: bool) -> dict[str, Any]:
        def r(xs: Sequence[float]) -> list[float]:
            return [round(x, 6) for x in xs]

        data: dict[str, Any] = {
            "layer": self.layer,
            "parts": list(self.parts),
            "min_helps": self.min_helps,
            "max_harms": self.max_harms,
            "add_below": self.add_below,
        }
        if with_info:
            data["info"] = self.info
        data |= {
            "mean": r(self.mean),
            "scale": r(self.scale),
            "helps": {"bias": self.helps.bias, "weights": r(self.helps.weights)},
            "harms": {"bias": self.harms.bias, "weights": r(self.harms.weights)},
        }
        for name, gate in (("gate", self.gate), ("safety", self.safety)):
            if gate is not None:
                data[name] = {
                    "min_score": gate.min_score,
                    **({"reads": gate.reads} if gate.reads != "prompt_end" else {}),
                    "mean": r(gate.mean),
                    "scale": r(gate.scale),
                    "head": {"bias": gate.head.bias, "weights": r(gate.head.weights)},
                }
        if self.safety_notes is not None:
            data["safety_plain_min_score"] = self.safety_notes.plain_min_score
            notes = self.safety_notes
            data["safety_notes"] = [
                {"kind": kind, "note": note, "head": {"bias": head.bias, "weights": r(head.weights)}}
                for kind, note, head in zip(notes.kinds, notes.notes, notes.heads)
            ]
        return data


def _standardized(feature: Sequence[float], mean: Sequence[float], scale: Sequence[float], what: str) -> list[float]:
    if len(feature) != len(mean):
        raise ValueError(f"{what} expects {len(mean)} features, got {len(feature)}")
    return [(x - m) / s for x, m, s in zip(feature, mean, scale)]


def _gate(data: dict[str, Any]) -> Gate:
    head = data["head"]
    reads = str(data.get("reads", "prompt_end"))
    if reads not in PROMPT_PARTS:
        raise ValueError(f"a gate reads one of {PROMPT_PARTS}, not {reads!r}")
    return Gate(
        tuple(data["mean"]),
        tuple(data["scale"]),
        Head(tuple(head["weights"]), float(head["bias"])),
        float(data["min_score"]),
        reads,
    )


def _notes(data: list[dict[str, Any]], plain_min_score: float) -> SafetyNotes:
    return SafetyNotes(
        tuple(str(d["note"]) for d in data),
        tuple(Head(tuple(d["head"]["weights"]), float(d["head"]["bias"])) for d in data),
        tuple(str(d["kind"]) for d in data),
        plain_min_score,
    )


def find_probe(*folders: str | os.PathLike[str] | None) -> AdditionProbe | None:
    """The probe shipped in the first of ``folders`` that has one."""
    for folder in folders:
        if folder is not None and (Path(folder) / PROBE_FILE).is_file():
            return AdditionProbe.load(Path(folder) / PROBE_FILE)
    return None


def prompt_summaries(states: Any) -> dict[str, list[float]]:
    """Each of :data:`PROMPT_PARTS` of a prompt's states (``[tokens, hidden]``, after the template's
    shared prefix, up to the state that predicts the first new token)."""
    states = states.float()
    return {"prompt_end": states[-1].tolist(), "prompt_mean": states.mean(0).tolist()}


def summarize(states: Any, cut: int, parts: Sequence[str]) -> list[float]:
    """One layer's ``parts`` summaries of ``states`` (``[tokens, hidden]``, the addition from ``cut`` on).

    ``prompt_end``: the state that predicts the first new token (it holds the prompt's reading);
    ``addition_mean``: the mean over the addition's tokens; ``end``: the last token's state.
    """
    import torch

    states = states.float()
    pieces = {"prompt_end": states[cut - 1], "addition_mean": states[cut:].mean(0), "end": states[-1]}
    return torch.cat([pieces[p] for p in parts]).tolist()


def features(
    model: Any,
    prompt_ids: list[int],
    addition_ids: list[int],
    *,
    eos_id: int,
    layers: Sequence[int],
    parts: Sequence[str] = PARTS,
) -> tuple[dict[int, list[float]], float]:
    """Per layer, :func:`summarize` of transformers' hidden states over ``prompt_ids +
    addition_ids``, and the model's P(nothing) after the prompt (one full forward; the runtime
    uses ``LeanLlama.hidden_states``, which stops at the probe's layer)."""
    import torch

    if not addition_ids or not prompt_ids:
        raise ValueError("features() needs a prompt and a non-empty addition")
    ids = torch.tensor([prompt_ids + addition_ids], dtype=torch.long, device=model.device)
    with torch.inference_mode():
        out = model(input_ids=ids, output_hidden_states=True)
    cut = len(prompt_ids)
    p_nothing = float(torch.softmax(out.logits[0, cut - 1].float(), dim=-1)[eos_id])
    return {layer: summarize(out.hidden_states[layer][0], cut, parts) for layer in layers}, p_nothing
