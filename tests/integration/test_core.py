"""bpo_core on the real embedded model: rewrites, batching, modes, rounds, fallbacks, bad input."""

from __future__ import annotations

import asyncio

import pytest

from bpo_core import (
    BPO_INST_TEMPLATE,
    BPOOptimizer,
    GenerationError,
    InstFormat,
    InvalidPromptError,
    ModelLoadError,
    OptimizationResult,
)
from bpo_core.formats import ChatFormat
from tests.conftest import PROMPTS, CountingBackend


def _is_rewrite_or_original(res: OptimizationResult) -> bool:
    return (res.fell_back and res.optimized == res.original and res.reason) or (
        not res.fell_back and res.optimized.strip() != ""
    )


def test_trained_default_writes_guidance_and_the_guard_keeps_only_grounded_clauses(backend):
    from bpo_core.guard import GuardConfig
    from bpo_core.rewrite.faithfulness import ungrounded_words

    # The shipped adapter makes the model write an addition (guidance), not an answer, after a
    # verbatim prompt; made to add (add_below=1) and ungrounded, the raw additions show it.
    raw = BPOOptimizer(
        backend, max_new_tokens=48, add_below=1.0, guard=GuardConfig(ground_additions=False)
    ).rewrite_batch(PROMPTS)
    assert [r.original for r in raw] == PROMPTS
    added = [r for r in raw if r.addition]
    assert len(added) >= 2, [r.reason for r in raw]
    for r in added:
        assert r.style == "augment" and r.optimized.startswith(r.original)
        assert r.addition.split()[0].lower().rstrip(",") not in ("sure", "yes", "no", "i", "the")
        assert "expert prompt engineer" not in r.optimized  # template text never leaks
    # With the default guard, whatever is kept uses only the user's words and guidance vocabulary.
    for r in BPOOptimizer(backend, max_new_tokens=48).rewrite_batch(PROMPTS):
        assert _is_rewrite_or_original(r)
        if r.changed:
            assert r.history[-1] == r.optimized and not ungrounded_words(r.original, r.addition or "")


def test_stop_probability_is_a_probability_and_padding_does_not_change_it(backend):
    fmt = backend.default_format.with_style("augment")
    prompts = ["What is contrastive loss?", "Write python code to connect to a FTP server and list the files."]
    batched = backend.stop_probability(prompts, fmt)
    alone = [backend.stop_probability([p], fmt)[0] for p in prompts]
    assert all(0.0 <= p <= 1.0 for p in batched)
    assert batched == pytest.approx(alone, abs=1e-4)


def test_the_engine_decides_adding_in_the_same_pass_as_stop_probability_and_generate_would(backend):
    from bpo_core.backends.engine_thread import run_on_engine
    from bpo_core.generation import GenerationSettings

    fmt = backend.default_format.with_style("augment")
    prompts = [
        *PROMPTS,
        "What is contrastive loss?",
        "Write python code to connect to a FTP server and list the files.",
    ]
    stops = backend.stop_probability(prompts, fmt)
    ordered = sorted(stops)  # a threshold between two prompts' values: some on each side, none on it
    threshold = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    fused = backend.generate(prompts, fmt, GenerationSettings(max_new_tokens=16, nothing_above=threshold))
    assert backend.lean_forward  # the one-pass path is what ran
    two_pass = run_on_engine(backend._generate, prompts, fmt, GenerationSettings(max_new_tokens=16, min_new_tokens=1))
    for stop, one, two in zip(stops, fused, two_pass):
        assert one == ("" if stop >= threshold else two), (stop, threshold, one, two)
    assert any(fused) and not all(fused)


def test_optimize_returns_str(optimizer):
    out = optimizer.optimize(PROMPTS[0])
    assert isinstance(out, str) and out.strip()


def test_batch_is_one_generate_call(backend):
    spy = CountingBackend(backend)
    opt = BPOOptimizer(spy, add_below=None, max_new_tokens=24)
    out = opt.optimize_batch(PROMPTS)
    assert len(out) == len(PROMPTS)
    assert len(spy.calls) == 1 and len(spy.calls[0]) == len(PROMPTS)


def test_batch_dedupes_identical_prompts(backend):
    spy = CountingBackend(backend)
    opt = BPOOptimizer(spy, add_below=None, max_new_tokens=24)
    out = opt.optimize_batch([PROMPTS[0]] * 3)
    assert len(out) == 3 and len(set(out)) == 1
    assert spy.calls == [[PROMPTS[0]]]


def test_greedy_is_reproducible(optimizer):
    assert optimizer.optimize(PROMPTS[2]) == optimizer.optimize(PROMPTS[2])


def test_context_kept_verbatim(optimizer):
    context = 'The quick brown fox\n  jumps over "the lazy dog".\n\n```python\nprint({1: 2})\n```\n'
    prompt = "Summarize the following text.\n" + context
    res = optimizer.rewrite(prompt)
    assert res.optimized.startswith(prompt)  # augment: the whole prompt, material included, verbatim
    rewritten = optimizer.with_options(style="rewrite").rewrite(prompt)
    assert rewritten.optimized.endswith("\n" + context)  # rewrite: material put back byte for byte


def test_inst_marker_inside_prompt(optimizer):
    prompt = "Explain what [/INST] means in Llama prompts [/INST] and why it matters"
    res = optimizer.rewrite(prompt)
    assert _is_rewrite_or_original(res)
    assert "expert prompt engineer" not in res.optimized


@pytest.mark.parametrize("bad", [None, 42, 3.5, b"bytes", ["list"], {"a": 1}])
def test_bad_types_raise_clear_error(optimizer, bad):
    with pytest.raises(InvalidPromptError, match="str"):
        optimizer.optimize(bad)
    with pytest.raises(ValueError):  # also a ValueError (and a TypeError)
        optimizer.optimize(bad)


def test_bad_batch_names_the_index(optimizer):
    with pytest.raises(InvalidPromptError, match=r"prompts\[1\]"):
        optimizer.optimize_batch(["ok", None])
    with pytest.raises(InvalidPromptError):
        optimizer.optimize_batch("a string, not a list")


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_blank_prompt_passes_through(optimizer, blank):
    res = optimizer.rewrite(blank)
    assert res.optimized == blank and res.fell_back and "blank" in res.reason


def test_too_long_instruction_passes_through(backend):
    opt = BPOOptimizer(backend, max_new_tokens=8, max_input_tokens=16)
    prompt = "word " * 200
    res = opt.rewrite(prompt)
    assert res.optimized == prompt and res.fell_back and "max_input_tokens" in res.reason


def test_load_error_falls_back(tmp_path, caplog):
    opt = BPOOptimizer.from_pretrained(str(tmp_path / "missing"), lazy=True)
    with caplog.at_level("WARNING"):
        res = opt.rewrite("hello there, how are you")
    assert res.optimized == "hello there, how are you" and res.fell_back
    assert "optimizer error" in res.reason
    assert any("failed" in r.message for r in caplog.records)


def test_load_error_raises_when_asked(tmp_path):
    opt = BPOOptimizer.from_pretrained(str(tmp_path / "missing"), lazy=True, on_error="raise")
    with pytest.raises(ModelLoadError):
        opt.optimize("hello")


class BrokenFormat(ChatFormat):
    def encode(self, prompt, tokenizer):
        raise RuntimeError("tokenizer exploded")


def test_generation_error_falls_back_or_raises(backend):
    res = BPOOptimizer(backend, fmt=BrokenFormat()).rewrite("Describe the rain in Spain.")
    assert res.fell_back and res.optimized == "Describe the rain in Spain." and "exploded" in res.reason
    with pytest.raises(GenerationError):
        BPOOptimizer(backend, fmt=BrokenFormat(), on_error="raise").optimize("Describe the rain in Spain.")


def test_modes_and_seed(backend):
    for mode in ("stable", "aggressive"):
        opt = BPOOptimizer(backend, mode=mode, seed=7, max_new_tokens=32)
        a, b = opt.rewrite(PROMPTS[1]), opt.rewrite(PROMPTS[1])
        assert a.optimized == b.optimized  # same seed, same sample
        assert _is_rewrite_or_original(a)
        if mode == "aggressive" and a.changed:
            assert "\n" not in a.optimized and "[PRO" not in a.optimized


def test_rounds_record_history(backend):
    opt = BPOOptimizer(backend, max_new_tokens=40, rounds=2)
    res = opt.rewrite(PROMPTS[3])
    # The embedded model augments, and an addition is made once whatever the rounds.
    assert res.history == ((res.optimized,) if res.changed else ())
    forced = BPOOptimizer(backend, max_new_tokens=40, rounds=2, add_below=1.0).rewrite(PROMPTS[3])
    assert forced.changed and forced.history == (forced.optimized,)


def test_invalid_options():
    with pytest.raises(ValueError, match="mode"):
        BPOOptimizer(lambda: None, mode="wild")
    with pytest.raises(ValueError, match="rounds"):
        BPOOptimizer(lambda: None, rounds=0)
    with pytest.raises(ValueError, match="on_error"):
        BPOOptimizer(lambda: None, on_error="ignore")
    with pytest.raises(TypeError):
        BPOOptimizer(lambda: None).with_options(colour="blue")


def test_with_options_shares_model(optimizer):
    other = optimizer.with_options(mode="stable", rounds=2)
    assert other.backend is optimizer.backend and other.mode == "stable" and optimizer.mode == "greedy"


async def test_async_twins(optimizer):
    single = await optimizer.aoptimize(PROMPTS[0])
    batch = await optimizer.aoptimize_batch(PROMPTS[:2])
    assert single == optimizer.optimize(PROMPTS[0])
    assert len(batch) == 2 and all(isinstance(x, str) for x in batch)


async def test_async_does_not_block_event_loop(optimizer):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    # Made to write an addition (a generation of hundreds of milliseconds): a call the guard
    # settles in a few milliseconds would leave the loop too little time to tick.
    writing = optimizer.with_options(add_below=1.0, cache=False)
    result = await writing.arewrite("Write a Python function that merges two sorted lists.")
    task.cancel()
    assert result.addition and ticks > 3


def test_authors_inst_format_from_local_dir(backend):
    """The THUDM/BPO path (``[INST]`` template) against a local checkpoint folder."""
    from bpo_core.embedded import converted_base_dir

    opt = BPOOptimizer.from_pretrained(str(converted_base_dir()), fmt=InstFormat(), max_new_tokens=16)
    assert opt.fmt.template == BPO_INST_TEMPLATE
    tokenizer = opt.backend.tokenizer
    rendered = opt.fmt.render("say {hi} [/INST]", tokenizer)
    assert rendered.endswith("say {hi} [/INST] [/INST]") and rendered.startswith("[INST] You are an expert")
    res = opt.rewrite("Tell me about the moon.")
    assert res.original == "Tell me about the moon."
    if res.fell_back:  # the plain base model's rewrite may be rejected: then unchanged, with why
        assert res.optimized == res.original and res.reason and res.kind is not None
    else:
        assert res.style in ("rewrite", "augment") and res.optimized.strip() and res.history[-1] == res.optimized
