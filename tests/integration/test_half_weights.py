"""fp16 weight copies for small forwards (lean_llama.HalfWeights) on the real embedded model."""

from __future__ import annotations

import time

import pytest
import torch

from bpo_core.backends.continuous import continuous_greedy
from bpo_core.backends.engine_thread import run_on_engine
from bpo_core.backends.lean_llama import HALF_WEIGHTS_MAX_ROWS, LeanLlama, _causal_mask
from tests.conftest import PROMPTS


def _packed(model) -> LeanLlama:
    lean = LeanLlama(model, half_weights=True)
    while not lean.pack_half_weights(budget_s=1.0):
        pass
    return lean


def _logits(lean: LeanLlama, ids: list[list[int]]) -> torch.Tensor:
    kv = lean.new_buffers(len(ids), len(ids[0]))
    batch = torch.tensor(ids)
    positions = torch.arange(len(ids[0]))[None].expand(len(ids), -1)
    with torch.inference_mode():
        return lean.forward(batch, positions, kv, _causal_mask(len(ids[0]), len(ids[0]), batch.device))


def test_half_weights_change_logits_by_rounding_only_and_greedy_rewrites_not_at_all(backend):
    if not run_on_engine(lambda: _packed(backend.model).half_weights):
        pytest.skip("this torch build has no fp16-weight GEMM (fbgemm)")
    fmt = backend.default_format.with_style("augment")
    ids = [fmt.encode(p, backend.tokenizer) for p in PROMPTS]

    def compare():
        full, half = LeanLlama(backend.model, half_weights=False), _packed(backend.model)
        small = ids[0][-20:]
        exact, rounded = _logits(full, [small]), _logits(half, [small])
        with torch.inference_mode():
            outs = [continuous_greedy(m, ids, max_new_tokens=16, eos_ids=[], max_batch_size=1) for m in (full, half)]
        big = [ids[0][:HALF_WEIGHTS_MAX_ROWS]] * 2  # more rows than the limit: the float32 weights
        return exact, rounded, outs, _logits(full, big), _logits(half, big)

    exact, rounded, (greedy_full, greedy_half), big_full, big_half = run_on_engine(compare)
    assert not torch.equal(exact, rounded)  # the copies were used...
    assert (exact - rounded).abs().max() < 0.05 * exact.abs().max()  # ...and differ by rounding only
    assert exact.argmax(-1).tolist() == rounded.argmax(-1).tolist()
    assert greedy_full == greedy_half and any(greedy_full)
    assert torch.equal(big_full, big_half)


def test_forwards_use_float32_weights_until_every_copy_is_packed(backend):
    def check():
        lean = LeanLlama(backend.model, half_weights=True)
        small = [[1, 2, 3, 4]]
        first = _logits(lean, small)
        lean.pack_half_weights(budget_s=0.0)  # one matrix: not ready
        assert lean._half is None or not lean._half.ready
        assert torch.equal(first, _logits(LeanLlama(backend.model, half_weights=False), small))
        assert torch.equal(first, _logits(lean, small))

    run_on_engine(check)


def test_the_backend_packs_its_copies_while_idle_and_the_switch_turns_them_off(backend, monkeypatch):
    lean = backend._continuous_decoder().lean
    if lean.half_weights:
        deadline = time.monotonic() + 120
        while not (lean._half is not None and lean._half.ready) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lean._half is not None and lean._half.ready
    monkeypatch.setenv("BPO_HALF_WEIGHTS", "0")
    assert not LeanLlama(backend.model).half_weights
