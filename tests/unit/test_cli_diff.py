"""bpo optimize --diff: a word-level diff of the prompt and what the optimizer made of it."""

from __future__ import annotations

from bpo_core.cli import render_diff
from bpo_core.result import FallbackKind, OptimizationResult


def test_diff_marks_added_and_removed_words():
    res = OptimizationResult(
        "Explain gravity", "Explain gravity\n\nUse an example.", style="augment", addition="Use an example."
    )
    text = render_diff(res)
    added = [text.plain[s.start : s.end] for s in text.spans if s.style == "green"]
    assert added == ["\n\nUse an example."] and text.plain.startswith("Explain gravity")
    assert "[augment]" in text.plain
    swapped = render_diff(OptimizationResult("Explain gravity", "Describe gravity", style="rewrite"))
    assert [swapped.plain[s.start : s.end] for s in swapped.spans if s.style == "red strike"] == ["Explain"]


def test_unchanged_prompt_says_why():
    res = OptimizationResult(
        "hola", "hola", True, "non-English prompt passed through unchanged", kind=FallbackKind.NON_ENGLISH
    )
    assert "[unchanged: non-English prompt passed through unchanged]" in render_diff(res).plain


def test_serve_with_a_bad_target_spec_is_a_usage_error_before_any_model_loads(monkeypatch):
    from typer.testing import CliRunner

    from bpo_core import cli

    def no_model(*args, **kwargs):
        raise AssertionError("the optimizer model was loaded")

    monkeypatch.setattr(cli, "_optimizer", no_model)
    result = CliRunner().invoke(cli.app, ["serve", "--target", "not-a-spec"])
    assert result.exit_code == 2 and "chat model spec" in result.output
