"""The rewrite path (segment -> generate -> clean -> guard -> assemble) on a scripted backend."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpo_core import BPOOptimizer
from bpo_core.errors import GenerationError
from bpo_core.result import FallbackKind
from bpo_core.rewrite import round as rewrite_round
from bpo_core.rewrite.segment import SegmenterModel, default_model
from tests.fakes import ScriptedBackend, broken

DOC = "The quarterly report shows revenue grew 12% to $4.1M.\nCosts fell in every region except EMEA.\nHeadcount stayed flat at 212."
PROMPT = f"Summarize the report below in two sentences.\n\n{DOC}\n"


def addition(text: str):
    return lambda view, style: text


def test_augment_keeps_the_prompt_verbatim_and_appends():
    backend = ScriptedBackend(addition("Give each main point of the report in its own sentence."))
    res = BPOOptimizer(backend).rewrite(PROMPT)
    assert res.optimized == PROMPT + "\nGive each main point of the report in its own sentence."
    assert res.optimized.startswith(PROMPT)
    assert (res.style, res.addition, res.fell_back, res.kind) == (
        "augment",
        "Give each main point of the report in its own sentence.",
        False,
        None,
    )


def test_material_never_reaches_the_model():
    backend = ScriptedBackend(addition("Give a short example."))
    BPOOptimizer(backend).rewrite(PROMPT)
    assert backend.views == ["Summarize the report below in two sentences.\n\n[pasted text]"]
    assert not any("EMEA" in v or "212" in v for v in backend.views)


def test_rewrite_puts_material_back_byte_for_byte():
    backend = ScriptedBackend(
        lambda view, style: (
            "Summarize the report below in two sentences, leading with its most important figure.\n\n[pasted text]"
        ),
        default_style="rewrite",
    )
    res = BPOOptimizer(backend).rewrite(PROMPT)
    assert res.style == "rewrite" and res.addition is None
    assert (
        res.optimized
        == f"Summarize the report below in two sentences, leading with its most important figure.\n\n{DOC}\n"
    )


def test_words_sharing_a_line_with_material_are_not_rewritten():
    backend = ScriptedBackend(lambda view, style: "Please extract the frames from this sentence: [pasted text]")
    prompt = 'extract frames for this sentence: {"sentence": "After months of fighting, the town fell.", "frames": []}'
    res = BPOOptimizer(backend, style="rewrite", rewrite_fallback="original").rewrite(prompt)
    assert res.optimized == prompt and res.kind is FallbackKind.REJECTED and "mid-line" in res.reason
    assert backend.calls == []


def test_a_rejected_rewrite_falls_back_to_an_addition_or_the_original():
    def model(view, style):
        return "How do I use the DAO pattern in Python?" if style == "rewrite" else "Explain with a short example."

    backend = ScriptedBackend(model, default_style="rewrite")
    res = BPOOptimizer(backend).rewrite("How to use DAO")
    assert res.optimized == "How to use DAO\n\nExplain with a short example."
    assert res.style == "augment" and "invents specifics: Python" in res.reason
    assert [style for style, _ in backend.calls] == ["rewrite", "augment"]
    kept = BPOOptimizer(backend, rewrite_fallback="original").rewrite("How to use DAO")
    assert kept.optimized == "How to use DAO" and kept.fell_back and kept.kind is FallbackKind.REJECTED


def test_an_addition_that_invents_is_rejected_with_the_reason():
    res = BPOOptimizer(ScriptedBackend(addition("Answer for a Python developer, in 3 steps."))).rewrite(
        "How to use DAO"
    )
    assert res.optimized == "How to use DAO" and res.fell_back and res.kind is FallbackKind.REJECTED
    assert res.reason == "addition named things the user did not give: python, developer"


def test_an_addition_is_cut_to_its_grounded_guidance():
    text = "Show a short code example, cover the GIL and asyncio, and note that threads are slow."
    res = BPOOptimizer(ScriptedBackend(addition(text))).rewrite("how do I run two functions at once in python")
    assert res.addition == "Show a short code example."


def test_prompts_an_addition_would_contradict_get_none_without_a_model_call():
    backend = ScriptedBackend(addition("Show a short code example."))
    prompts = [
        "Reply with the SQL only, no explanation: list all users",
        "Act as a Linux terminal",
        "Write a poem about rain",
        "Why are women so shallow?",
        "I am going to give you a taxonomy, then some messages to sort into it.",
        "As a travel planner, I can create the perfect itinerary for you.",
    ]
    results = BPOOptimizer(backend).rewrite_batch(prompts)
    assert [r.optimized for r in results] == prompts and backend.calls == []
    assert [r.kind for r in results] == [FallbackKind.NOTHING_TO_ADD] * 6
    assert "limits what the answer may contain" in results[0].reason


def test_a_clause_about_what_the_user_excluded_is_dropped():
    text = "Show how to create a table for the dates, and explain the approach step by step."
    res = BPOOptimizer(ScriptedBackend(addition(text))).rewrite("List the dates in MySQL without creating a table")
    assert res.addition == "Explain the approach step by step."


def test_nothing_to_add_is_not_a_failure():
    res = BPOOptimizer(ScriptedBackend(addition(""))).rewrite("hello there")
    assert (res.optimized, res.fell_back, res.kind) == ("hello there", False, FallbackKind.NOTHING_TO_ADD)


def test_an_echo_of_the_prompt_before_the_addition_is_dropped():
    prompt = "Explain how   inflation works\n\nin a small economy?"
    echo = addition("Explain how inflation works in a small economy? Give a short example.")
    res = BPOOptimizer(ScriptedBackend(echo)).rewrite(prompt)
    assert res.addition == "Give a short example."
    assert res.optimized.startswith(prompt) and res.optimized.endswith("\nGive a short example.")


def test_a_half_sentence_cut_by_the_token_budget_is_dropped():
    res = BPOOptimizer(
        ScriptedBackend(addition("Give a short example. Then list the main effects and how they"))
    ).rewrite("Explain inflation")
    assert res.addition == "Give a short example."


def test_unsure_segmentation_abstains(monkeypatch):
    strict = SegmenterModel(**{**default_model().__dict__, "min_confidence": 1.01})
    monkeypatch.setattr(rewrite_round, "default_model", lambda: strict)
    backend = ScriptedBackend(addition("Give a short example."))
    res = BPOOptimizer(backend).rewrite(PROMPT)
    assert res.optimized == PROMPT and res.kind is FallbackKind.UNSEGMENTED and backend.calls == []


def test_blank_non_english_and_too_long_pass_through_without_the_model():
    backend = ScriptedBackend(addition("Give a short example."))
    opt = BPOOptimizer(backend, max_input_tokens=5)
    results = opt.rewrite_batch(["   ", "¿Cómo está usted hoy? Qué tal el día", "one two three four five six seven"])
    assert [r.kind for r in results] == [FallbackKind.BLANK, FallbackKind.NON_ENGLISH, FallbackKind.TOO_LONG]
    assert [r.optimized for r in results] == [r.original for r in results] and backend.calls == []


def test_errors_fall_back_or_raise_and_are_not_cached():
    backend = ScriptedBackend(addition("Give a short example."), fail=broken())
    opt = BPOOptimizer(backend)
    res = opt.rewrite("Explain inflation")
    assert res.fell_back and res.kind is FallbackKind.ERROR and "device fell over" in res.reason
    backend.fail = None
    assert opt.rewrite("Explain inflation").style == "augment"  # the failure was not cached
    backend.fail = broken()
    with pytest.raises(GenerationError):
        BPOOptimizer(backend, on_error="raise", cache=False).rewrite("Explain inflation")


def test_an_addition_is_made_once_whatever_the_rounds():
    backend = ScriptedBackend(addition("Give a short example."))
    res = BPOOptimizer(backend, rounds=3).rewrite("Explain inflation")
    assert res.optimized == "Explain inflation\n\nGive a short example." and len(backend.calls) == 1


def test_rewrite_rounds_chain_and_keep_history():
    backend = ScriptedBackend(lambda view, style: view.rstrip("?.") + ", with examples?", default_style="rewrite")
    res = BPOOptimizer(backend, rounds=2).rewrite("What is inflation?")
    assert res.history == ("What is inflation, with examples?", "What is inflation, with examples, with examples?")


def test_duplicate_views_are_generated_once():
    backend = ScriptedBackend(addition("Give a short example."))
    BPOOptimizer(backend, cache=False).rewrite_batch(["Explain inflation", "Explain inflation", "Explain gravity"])
    assert backend.calls == [("augment", ["Explain inflation", "Explain gravity"])]


def test_options_live_in_one_config():
    opt = BPOOptimizer(ScriptedBackend(addition("x.")), style="rewrite", mode="stable")
    other = opt.with_options(mode="greedy", timeout_s=2)
    assert (opt.mode, other.mode, other.config.timeout_s, other.style) == ("stable", "greedy", 2, "rewrite")
    with pytest.raises(ValueError, match="style"):
        opt.with_options(style="shout")
    with pytest.raises(TypeError, match="bogus"):
        opt.with_options(bogus=1)
    assert opt.config.result_key() == other.config.with_updates(mode="stable", timeout_s=None).result_key()


def _adversarial(view: str, style: str) -> str:
    """A model that misbehaves in every way the guard must survive."""
    choice = len(view) % 6
    return [
        view,  # echoes the prompt
        view + "\n[pasted text]\n[pasted code]",  # invents placeholders
        "Sure! Here is the answer: 42.",  # answers
        "Explain it with 3 examples in Python, citing NASA.",  # invents specifics
        "",  # nothing
        "Cover the main points and give one example.",  # a plain, faithful addition
    ][choice]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_property_any_text_gives_the_original_or_a_faithful_result(text):
    from bpo_core.rewrite.assemble import append_addition
    from bpo_core.rewrite.segment import segment

    for style in ("augment", "rewrite"):
        res = BPOOptimizer(ScriptedBackend(_adversarial, default_style=style), cache=False).rewrite(text)
        assert res.original == text
        if not res.changed:
            assert res.optimized == text and (res.reason or res.kind is None)
        elif res.style == "augment":
            assert res.optimized == append_addition(text, res.addition)
        else:
            assert all(m in res.optimized for m in segment(text).materials)


def test_offline_hub_load_fails_at_once_with_what_to_do(monkeypatch, tmp_path):
    import time

    from bpo_core.errors import ModelLoadError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        BPOOptimizer.from_pretrained("THUDM/BPO")
    assert time.monotonic() - started < 5
    lazy = BPOOptimizer.from_pretrained("THUDM/BPO", lazy=True)  # lazy: the first call falls back instead
    res = lazy.rewrite("Explain inflation")
    assert res.fell_back and res.kind is FallbackKind.ERROR and "HF_HUB_OFFLINE" in res.reason


class StopScoringBackend(ScriptedBackend):
    """A scripted model that also decides on how likely it is to add nothing (like HFBackend)."""

    scores_stopping = True

    def __init__(self, respond, stops: dict[str, float]) -> None:
        super().__init__(respond)
        self.stops = stops
        self.settings = []

    def generate(self, prompts, fmt, settings):
        self.settings.append(settings)
        texts = super().generate(prompts, fmt, settings)
        if settings.nothing_above is None:
            return texts
        return [t if self.stops[p] < settings.nothing_above else "" for p, t in zip(prompts, texts)]


def test_adding_or_not_is_decided_on_the_probability_of_adding_nothing():
    sure, unsure = "Explain how tides work", "What is contrastive loss"
    backend = StopScoringBackend(addition("Give a simple example."), {sure: 0.2, unsure: 0.8})
    results = BPOOptimizer(backend).rewrite_batch([sure, unsure])
    assert results[0].addition == "Give a simple example." and results[1].kind is FallbackKind.NOTHING_TO_ADD
    # add_below="auto" without a learned guard; the backend decides, in the same pass
    assert backend.settings[0].nothing_above == 0.5
    # add_below=None: plain greedy decides, for every prompt
    plain = StopScoringBackend(addition("Give a simple example."), {sure: 0.2, unsure: 0.8})
    results = BPOOptimizer(plain, add_below=None).rewrite_batch([sure, unsure])
    assert plain.settings[0].nothing_above is None and all(r.addition for r in results)
    # n_best > 1 samples more candidates only where the model decided to add, none of them empty
    sampled = StopScoringBackend(addition("Give a simple example."), {sure: 0.2, unsure: 0.8})
    BPOOptimizer(sampled, n_best=3).rewrite_batch([sure, unsure])
    assert sampled.calls[-1] == ("augment", [sure, sure])
    assert sampled.settings[-1].do_sample and sampled.settings[-1].min_new_tokens == 1


def test_prompts_no_model_may_change_never_load_one():
    def load():
        raise AssertionError("the model was loaded")

    results = BPOOptimizer(load).rewrite_batch(["   ", "Wie spät ist es bei euch in Berlin gerade?"])
    assert [r.kind for r in results] == [FallbackKind.BLANK, FallbackKind.NON_ENGLISH]
    assert all(r.optimized == r.original for r in results)
