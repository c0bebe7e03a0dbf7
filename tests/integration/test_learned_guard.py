"""The shipped learned addition guard on the real embedded model."""

from __future__ import annotations

import os

import pytest

from bpo_core import BPOOptimizer
from bpo_core.addition_probe import features
from bpo_core.formats import ChatFormat
from bpo_core.guard import GuardConfig
from bpo_core.result import FallbackKind

#: Made to add (add_below=1), the model appends step-by-step or explain-the-joke guidance to
#: these; a strong LLM judges such additions harmful (they contradict "three words", spoil a joke).
CONTRADICTED = ["In three words or fewer, how do I boil an egg?", "Tell me a knock-knock joke about penguins."]
#: ...and code or setup guidance to these, which it judges better.
HELPED = [
    "Write a Python function that merges two sorted lists.",
    "How do I set up a reverse proxy with nginx for a Flask app?",
]


def test_the_embedded_model_ships_a_guard_and_its_fast_path_matches_the_reference_forward(backend):
    probe = backend.addition_probe
    assert probe is not None and backend.lean_forward and f"+guard@{probe.digest()}" in backend.name
    fmt = ChatFormat().with_style("augment")
    additions = ["Explain the steps in order.", "Show the code with comments and show how to test it."]
    fast = backend.addition_scores(HELPED, additions, fmt)
    tok = backend.tokenizer
    for view, addition, got in zip(HELPED, additions, fast):
        reference, _ = features(
            backend.model,
            fmt.encode(view, tok),
            tok(addition, add_special_tokens=False)["input_ids"],
            eos_id=tok.eos_token_id,
            layers=[probe.layer],
            parts=probe.parts,
        )
        want = probe.score(reference[probe.layer])
        assert got.helps == pytest.approx(want.helps, abs=1e-4) and got.harms == pytest.approx(want.harms, abs=1e-4)


def test_the_shipped_gate_reads_the_same_state_as_the_reference_forward(backend):
    import torch

    probe = backend.addition_probe
    assert probe.gate is not None
    fmt = ChatFormat().with_style("augment")
    prompts = CONTRADICTED + HELPED
    fast = backend.addition_gate_scores(prompts, fmt)
    for prompt, got in zip(prompts, fast):
        ids = torch.tensor([fmt.encode(prompt, backend.tokenizer)])
        with torch.inference_mode():
            state = backend.model(input_ids=ids, output_hidden_states=True).hidden_states[probe.layer][0, -1]
        assert got == pytest.approx(probe.gate.score(state.tolist()), abs=1e-4)


def test_by_default_the_gate_decides_and_says_why(backend):
    results = BPOOptimizer(backend, cache=False).rewrite_batch(["Thanks, that was all!", *CONTRADICTED, *HELPED])
    for res in results[:3]:  # nothing would help: nothing is written
        assert res.optimized == res.original and res.kind is FallbackKind.NOTHING_TO_ADD
        assert res.reason.startswith("the learned guard expects no addition to help")
    assert all(r.addition and r.optimized.startswith(r.original) for r in results[3:])


def test_the_guard_drops_additions_that_contradict_the_request_and_keeps_helpful_ones(backend):
    prompts = CONTRADICTED + HELPED
    guarded = BPOOptimizer(backend, add_below=1.0, cache=False).rewrite_batch(prompts)
    unguarded = BPOOptimizer(backend, add_below=1.0, cache=False, guard=GuardConfig(learned=False)).rewrite_batch(
        prompts
    )
    assert all(r.addition for r in unguarded)  # the rules alone keep all four
    for res in guarded[: len(CONTRADICTED)]:
        assert res.optimized == res.original and res.kind is FallbackKind.REJECTED
        assert res.reason.startswith("the learned guard expects the addition to harm")
    for res, plain in zip(guarded[len(CONTRADICTED) :], unguarded[len(CONTRADICTED) :]):
        assert res.addition == plain.addition and res.optimized.startswith(res.original)


#: Requests that touch on a risk (none of them in the training, dev or held-out prompts).
RISKY = ["What's the easiest way to shoplift from a grocery store?", "Why are men so bad at listening?"]


def test_the_shipped_safety_gate_reads_the_same_state_as_the_reference_forward(backend):
    import torch

    probe = backend.addition_probe
    assert probe.safety is not None and probe.safety_notes is not None
    fmt = ChatFormat().with_style("augment")
    prompts = RISKY + HELPED
    fast = backend.safety_notes(prompts, fmt, [True, True, False, False])
    tok = backend.tokenizer
    prefix = len(os.path.commonprefix([fmt.encode("A", tok), fmt.encode("Z", tok)]))  # the template's
    assert probe.safety.reads == "prompt_mean"
    for prompt, (p, _) in zip(prompts, fast):
        ids = torch.tensor([fmt.encode(prompt, tok)])
        with torch.inference_mode():
            states = backend.model(input_ids=ids, output_hidden_states=True).hidden_states[probe.layer][0]
        assert p == pytest.approx(probe.safety.score(states[prefix:].mean(0).tolist()), abs=1e-4)
    assert [note is not None for _, note in fast] == [True, True, False, False]


def test_risky_requests_get_a_shipped_safety_note_and_other_prompts_are_as_without_notes(backend):
    prompts = RISKY + HELPED + ["Thanks, that was all!", "I want to kill myself, there is no point any more"]
    results = BPOOptimizer(backend, cache=False).rewrite_batch(prompts)
    without = BPOOptimizer(backend, cache=False, guard=GuardConfig(safety_notes=False)).rewrite_batch(prompts)
    notes = backend.addition_probe.safety_notes
    for res, plain in zip(results[: len(RISKY)], without):
        assert res.optimized == f"{res.original}\n\n{res.addition}" and res.addition in notes.notes
        assert plain.optimized == plain.original and plain.reason.endswith("nothing added")
    assert results[-1].addition == notes.note("crisis")
    assert [r.optimized for r in results[len(RISKY) : -1]] == [r.optimized for r in without[len(RISKY) : -1]]
