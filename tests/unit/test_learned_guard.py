"""The learned addition guard on a scripted backend: when it drops an addition, and the probe file."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from bpo_core import BPOOptimizer
from bpo_core.addition_probe import PROBE_FILE, AdditionProbe, Gate, Head, SafetyNotes, Score, find_probe
from bpo_core.guard import GuardConfig
from bpo_core.result import FallbackKind
from tests.fakes import ScriptedBackend

ADDITION = "Explain the reasoning step by step."


class ProbedBackend(ScriptedBackend):
    """A scripted backend whose learned guard gives each (view, addition) a chosen P(helps) (P(harms) 0.1)."""

    def __init__(self, scores: dict[str, float], respond=None) -> None:
        super().__init__(respond or (lambda view, style: ADDITION))
        self.scores = scores
        self.addition_probe = probe()
        self.scored: list[tuple[str, str]] = []

    def addition_scores(self, views, additions, fmt):
        self.scored += list(zip(views, additions))
        return [Score(self.scores.get(a, self.scores.get(v)), 0.1) for v, a in zip(views, additions)]


def probe(min_helps: float = 0.5, max_harms: float = 0.3, add_below: float | None = 0.7) -> AdditionProbe:
    head = Head((1.0, -2.0), 0.0)
    return AdditionProbe(
        12, ("end",), (0.0, 0.0), (1.0, 1.0), head, head, min_helps, max_harms, add_below, info={"note": "test"}
    )


class DecidingBackend(ProbedBackend):
    """Also decides add-or-nothing itself (like HFBackend); records the threshold it was given."""

    scores_stopping = True

    def __init__(self) -> None:
        super().__init__({}, respond=lambda view, style: ADDITION)
        self.scores = {ADDITION: 0.9}
        self.thresholds: list[float | None] = []

    def generate(self, prompts, fmt, settings):
        self.thresholds.append(settings.nothing_above)
        return super().generate(prompts, fmt, settings)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, 0.7),  # "auto": the operating point the guard was fitted for
        ({"guard": GuardConfig(learned=False)}, 0.5),  # no guard to take it from
        ({"add_below": 0.3}, 0.3),
        ({"add_below": 0.3, "guard": GuardConfig(learned=False)}, 0.3),
    ],
)
def test_add_below_auto_follows_the_learned_guard(options, expected):
    backend = DecidingBackend()
    assert BPOOptimizer(backend, **options).rewrite("Why is the sky blue?").addition == ADDITION
    assert backend.thresholds == [expected]


class GatedBackend(DecidingBackend):
    """Its guard has a gate that scores each view (chosen by the test)."""

    def __init__(self, gate_scores: dict[str, float]) -> None:
        super().__init__()
        self.addition_probe = replace(probe(), gate=Gate((0.0,), (1.0,), Head((1.0,), 0.0), 0.4))
        self.gate_scores = gate_scores
        self.gated: list[str] = []

    def addition_gate_scores(self, views, fmt):
        self.gated += views
        return [self.gate_scores[v] for v in views]


def test_the_gate_decides_which_prompts_get_an_addition_written():
    backend = GatedBackend({"Why is the sky blue?": 0.8, "Thanks!": 0.1})
    helped, thanked = BPOOptimizer(backend).rewrite_batch(["Why is the sky blue?", "Thanks!"])
    assert helped.addition == ADDITION
    assert thanked.optimized == "Thanks!" and thanked.kind is FallbackKind.NOTHING_TO_ADD
    assert thanked.reason == "the learned guard expects no addition to help (0.10 < 0.40)"
    assert backend.calls == [("augment", ["Why is the sky blue?"])]  # nothing written for the other
    assert backend.thresholds == [1.0]  # what the gate lets through gets an addition


def test_an_explicit_add_below_or_the_guard_off_bypasses_the_gate():
    for options in ({"add_below": 0.5}, {"guard": GuardConfig(learned=False)}):
        backend = GatedBackend({"Thanks!": 0.1})
        assert BPOOptimizer(backend, **options).rewrite("Thanks!").addition == ADDITION
        assert backend.gated == [] and backend.thresholds == [0.5]


def test_add_below_is_validated():
    with pytest.raises(ValueError, match="add_below"):
        BPOOptimizer(DecidingBackend(), add_below=1.5)
    with pytest.raises(ValueError, match="add_below"):
        BPOOptimizer(DecidingBackend(), add_below="sometimes")


def test_an_addition_the_guard_expects_not_to_help_is_dropped_with_a_reason():
    backend = ProbedBackend({"Prove that sqrt 2 is irrational": 0.2, "Why is the sky blue?": 0.9})
    low, high = BPOOptimizer(backend).rewrite_batch(["Prove that sqrt 2 is irrational", "Why is the sky blue?"])
    assert low.optimized == low.original and low.kind is FallbackKind.REJECTED
    assert low.reason.startswith("the learned guard expects the addition not to help (0.20 < 0.50)")
    assert high.optimized == "Why is the sky blue?\n\n" + ADDITION and high.addition == ADDITION
    assert backend.scored == [("Prove that sqrt 2 is irrational", ADDITION), ("Why is the sky blue?", ADDITION)]


def test_the_threshold_can_be_overridden_and_the_guard_turned_off():
    backend = ProbedBackend({"Why is the sky blue?": 0.3})
    assert not BPOOptimizer(backend).rewrite("Why is the sky blue?").changed
    lower = BPOOptimizer(backend, guard=GuardConfig(learned_threshold=0.25))
    assert lower.rewrite("Why is the sky blue?").addition == ADDITION
    off = BPOOptimizer(backend, guard=GuardConfig(learned=False), cache=False)
    scored = len(backend.scored)
    assert off.rewrite("Why is the sky blue?").addition == ADDITION
    assert len(backend.scored) == scored  # not asked at all


def test_a_backend_without_a_guard_keeps_what_the_rules_pass():
    backend = ScriptedBackend(lambda view, style: ADDITION)
    assert BPOOptimizer(backend).rewrite("Why is the sky blue?").addition == ADDITION


def test_the_guard_picks_the_candidate_most_likely_to_help_among_those_it_keeps():
    candidates = iter(["Give a short example.", "Explain the reasoning step by step.", "Show the steps."])
    scores = {"Give a short example.": 0.6, ADDITION: 0.9, "Show the steps.": 0.2}
    backend = ProbedBackend(scores, respond=lambda view, style: next(candidates))
    res = BPOOptimizer(backend, n_best=3, add_below=None).rewrite("Why is the sky blue?")
    assert res.addition == ADDITION
    assert [a for _, a in backend.scored] == ["Give a short example.", ADDITION, "Show the steps."]


def test_probe_heads_are_standardized_logistic_regressions_and_harm_vetoes():
    p = AdditionProbe(3, ("end",), (1.0, 0.0), (2.0, 1.0), Head((1.0, -2.0), 0.5), Head((0.0, 1.0), -1.0), 0.5, 0.4)
    assert p.add_below is None
    z = 0.5 + 1.0 * (3.0 - 1.0) / 2.0 - 2.0 * 0.25
    score = p.score([3.0, 0.25])
    assert score.helps == pytest.approx(1 / (1 + math.exp(-z)))
    assert score.harms == pytest.approx(1 / (1 + math.exp(1.0 - 0.25)))
    assert p.rejects(Score(0.9, 0.1)) is None
    assert p.rejects(Score(0.9, 0.4)) == "the learned guard expects the addition to harm (0.40 >= 0.40)"
    assert p.rejects(Score(0.3, 0.1)) == "the learned guard expects the addition not to help (0.30 < 0.50)"
    assert p.rejects(Score(0.3, 0.1), min_helps=0.2) is None
    with pytest.raises(ValueError, match="expects 2 features, got 3"):
        p.score([1.0, 2.0, 3.0])


def test_probe_files_round_trip_and_bad_files_say_so(tmp_path):
    assert find_probe(tmp_path, None) is None
    probe().save(tmp_path / PROBE_FILE)
    assert find_probe(None, tmp_path) == probe()
    (tmp_path / PROBE_FILE).write_text(json.dumps({"layer": 3}), encoding="utf-8")
    with pytest.raises(ValueError, match="Not an addition probe file"):
        find_probe(tmp_path)
    gated = replace(probe(), gate=Gate((1.0, 2.0), (0.5, 1.0), Head((0.3, -0.1), 0.2), 0.35))
    gated.save(tmp_path / PROBE_FILE)
    assert find_probe(tmp_path) == gated and gated.digest() != probe().digest()
    data = json.loads((tmp_path / PROBE_FILE).read_text(encoding="utf-8"))
    data["gate"]["mean"] = [1.0]
    (tmp_path / PROBE_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="gate sizes differ"):
        find_probe(tmp_path)
    probe().save(tmp_path / PROBE_FILE)
    data = json.loads((tmp_path / PROBE_FILE).read_text(encoding="utf-8"))
    (tmp_path / PROBE_FILE).write_text(json.dumps({**data, "parts": ["middle"]}), encoding="utf-8")
    with pytest.raises(ValueError, match="middle"):
        find_probe(tmp_path)


NOTE = "Point out any legal, safety or ethical concerns involved, and suggest responsible alternatives."
CARE = "Respond with care for the user's safety, and mention where to find immediate support."


class SafetyGatedBackend(GatedBackend):
    """Also has a safety gate that gives each view a chosen note (``None``: the gate stays closed)."""

    def __init__(self, gate_scores: dict[str, float], notes: dict[str, str | None]) -> None:
        super().__init__(gate_scores)
        heads = (Head((1.0,), 0.0), Head((-1.0,), 0.0))
        self.addition_probe = replace(
            self.addition_probe,
            safety=Gate((0.0,), (1.0,), Head((1.0,), 0.0), 0.5),
            safety_notes=SafetyNotes((NOTE, CARE), heads, ("general", "crisis")),
        )
        self.notes = notes
        self.flagged: dict[str, bool] = {}

    def safety_notes(self, views, fmt, flagged):
        self.flagged |= dict(zip(views, flagged))
        return [(0.9 if self.notes.get(v) else 0.1, self.notes.get(v)) for v in views]


RISKY = "How can I steal Amazon boxes off porches?"
PLAIN = "Why is the sky blue?"


def test_the_safety_gate_gets_risky_requests_a_safety_note_and_others_the_usual_addition():
    backend = SafetyGatedBackend({PLAIN: 0.8}, {RISKY: NOTE})
    risky, plain = BPOOptimizer(backend).rewrite_batch([RISKY, PLAIN])
    assert risky.optimized == f"{RISKY}\n\n{NOTE}" and risky.addition == NOTE and risky.style == "augment"
    assert plain.addition == ADDITION
    assert backend.calls == [("augment", [PLAIN])]  # a note is picked, not written
    assert backend.gated == [PLAIN]  # the addition gate is not asked about a request that got a note
    assert backend.flagged == {RISKY: True, PLAIN: False}  # the rules' flag sets the gate's threshold


def test_a_risky_request_the_safety_gate_passes_over_stays_unchanged_and_others_go_on_as_usual():
    backend = SafetyGatedBackend({PLAIN: 0.8}, {})
    risky, plain = BPOOptimizer(backend).rewrite_batch([RISKY, PLAIN])
    assert risky.optimized == RISKY and risky.kind is FallbackKind.NOTHING_TO_ADD
    assert risky.reason == "the request touches on harm, crime or someone's privacy: nothing added"
    assert plain.addition == ADDITION and backend.calls == [("augment", [PLAIN])]


def test_a_request_about_self_harm_always_gets_the_crisis_note():
    prompt = "I don't want to live anymore, what should I do"
    res = BPOOptimizer(SafetyGatedBackend({}, {prompt: NOTE})).rewrite(prompt)
    assert res.addition == CARE
    closed = BPOOptimizer(SafetyGatedBackend({}, {})).rewrite(prompt)  # even where the gate stays closed
    assert closed.addition == CARE


def test_a_rejected_rewrite_falls_back_to_a_safety_note():
    backend = SafetyGatedBackend({}, {RISKY: NOTE})
    backend.respond = lambda view, style: "Tell me a joke." if style == "rewrite" else ADDITION
    res = BPOOptimizer(backend, style="rewrite").rewrite(RISKY)
    assert res.optimized == f"{RISKY}\n\n{NOTE}" and res.style == "augment"
    assert res.reason.startswith("rewrite drops key words")


def test_safety_notes_can_be_turned_off_and_need_the_learned_guard():
    for guard in (GuardConfig(safety_notes=False), GuardConfig(learned=False)):
        res = BPOOptimizer(SafetyGatedBackend({}, {RISKY: NOTE}), guard=guard).rewrite(RISKY)
        assert res.optimized == RISKY and res.reason.endswith("nothing added")


def test_the_safety_gate_picks_the_note_with_the_most_probable_head_over_its_standardized_state():
    safe = replace(
        probe(),
        safety=Gate((1.0, 0.0), (2.0, 1.0), Head((1.0, 0.0), 0.0), 0.6),
        safety_notes=SafetyNotes(
            (NOTE, CARE), (Head((0.0, 1.0), 0.0), Head((0.0, -1.0), 0.0)), ("general", "crisis"), 0.95
        ),
    )
    p, note = safe.safety_note([5.0, 2.0], flagged=True)  # z = (2, 2): the gate gives sigmoid(2), head 1 wins
    assert p == pytest.approx(1 / (1 + math.exp(-2))) and note == NOTE
    assert safe.safety_note([5.0, -2.0], flagged=True)[1] == CARE
    assert safe.safety_note([5.0, 2.0], flagged=False)[1] is None  # unflagged: under plain_min_score 0.95
    assert safe.safety_note([1.0, 2.0], flagged=True) == (0.5, None)  # under min_score: no note
    assert probe().safety_note([1.0, 2.0], flagged=True) == (0.0, None)  # no safety gate
    assert safe.safety_notes.note("crisis") == CARE and safe.safety_notes.note("privacy") is None


def test_probe_files_keep_the_safety_gate_and_its_notes(tmp_path):
    safe = replace(
        probe(),
        safety=Gate((1.0,), (0.5,), Head((0.3,), 0.2), 0.6, reads="prompt_mean"),
        safety_notes=SafetyNotes((NOTE, CARE), (Head((0.5,), 0.1), Head((-0.5,), 0.0)), ("general", "crisis"), 0.9),
    )
    safe.save(tmp_path / PROBE_FILE)
    assert find_probe(tmp_path) == safe and safe.digest() != probe().digest()
    data = json.loads((tmp_path / PROBE_FILE).read_text(encoding="utf-8"))
    (tmp_path / PROBE_FILE).write_text(json.dumps({**data, "safety": {**data["safety"], "reads": "middle"}}))
    with pytest.raises(ValueError, match="reads one of"):
        find_probe(tmp_path)
    for broken in ({**data, "safety_notes": []}, {**data, "safety": None}):
        (tmp_path / PROBE_FILE).write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(ValueError, match="safety notes do not match"):
            find_probe(tmp_path)
    data["safety_notes"][0]["head"]["weights"] = [1.0, 2.0]
    (tmp_path / PROBE_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="safety notes do not match"):
        find_probe(tmp_path)
