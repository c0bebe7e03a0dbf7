"""The lean greedy decoder must give exactly what transformers' generate gives."""

from __future__ import annotations

import pytest

from bpo_core import BPOOptimizer
from bpo_core.backends.decode import supports
from bpo_core.generation import settings_for_mode
from tests.conftest import PROMPTS

MORE = [*PROMPTS, "hi", "Summarize the plot of Hamlet in two sentences, please.", "why exercise"]


def raw(backend, prompts, settings, fast: bool):
    fmt = BPOOptimizer(backend).fmt
    backend.fast_greedy = fast
    try:
        return backend.generate(prompts, fmt, settings)
    finally:
        backend.fast_greedy = True


@pytest.mark.parametrize("max_new_tokens", [1, 24, 64])
def test_fast_greedy_matches_generate(backend, max_new_tokens):
    assert supports(backend.model) and backend.fast_greedy
    settings = settings_for_mode("greedy", max_new_tokens=max_new_tokens)
    expected = raw(backend, MORE, settings, fast=False)
    assert raw(backend, MORE, settings, fast=True) == expected
    assert [raw(backend, [p], settings, fast=True)[0] for p in MORE[:2]] == expected[:2]  # batches of one


def test_sampling_modes_keep_generate(backend):
    assert not backend._plain_greedy(settings_for_mode("stable"))
    assert not backend._plain_greedy(settings_for_mode("aggressive"))
    assert backend._plain_greedy(settings_for_mode("greedy"))
