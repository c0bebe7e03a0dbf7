"""The lean greedy engine (lean Llama forward, shared-prefix KV, continuous batching) must give
exactly what transformers' generate gives, in float32, however the batch is scheduled."""

from __future__ import annotations

import pytest

from bpo_core import BPOOptimizer
from bpo_core.backends.continuous import continuous_greedy
from bpo_core.backends.decode import supports
from bpo_core.backends.lean_llama import LeanLlama, lean_supported
from bpo_core.generation import settings_for_mode
from tests.conftest import PROMPTS

MORE = [*PROMPTS, "hi", "Summarize the plot of Hamlet in two sentences, please.", "why exercise"]


def raw(backend, prompts, settings, fast: bool, lean: bool = True, max_batch_size: int | None = None):
    fmt = BPOOptimizer(backend).fmt
    saved = backend.fast_greedy, backend.lean_forward, backend.max_batch_size
    backend.fast_greedy, backend.lean_forward = fast, lean
    backend.max_batch_size = max_batch_size or saved[2]
    try:
        return backend.generate(prompts, fmt, settings)
    finally:
        backend.fast_greedy, backend.lean_forward, backend.max_batch_size = saved


@pytest.mark.parametrize("max_new_tokens", [1, 24, 64])
def test_fast_greedy_matches_generate(backend, max_new_tokens):
    assert supports(backend.model) and backend.fast_greedy and backend.lean_forward
    settings = settings_for_mode("greedy", max_new_tokens=max_new_tokens)
    expected = raw(backend, MORE, settings, fast=False)
    assert raw(backend, MORE, settings, fast=True) == expected  # lean forward, continuous batching
    assert raw(backend, MORE, settings, fast=True, lean=False) == expected  # transformers forward, fixed batches
    assert [raw(backend, [p], settings, fast=True)[0] for p in MORE[:2]] == expected[:2]  # batches of one


def test_continuous_batching_with_a_small_batch_matches_generate(backend):
    """Two rows at a time over ten prompts: rows finish, leave, and waiting prompts join many times."""
    settings = settings_for_mode("greedy", max_new_tokens=40)
    expected = raw(backend, MORE, settings, fast=False)
    assert raw(backend, MORE, settings, fast=True, max_batch_size=2) == expected
    assert raw(backend, MORE, settings, fast=True, max_batch_size=3) == expected


def test_buffer_squeeze_and_growth_keep_results(backend):
    """A buffer too small for the run is squeezed and grown on the way; results do not change."""
    import torch

    from bpo_core.backends import continuous

    lean = LeanLlama(backend.model)
    tok = backend.tokenizer
    seqs = [tok(p)["input_ids"] for p in MORE]
    with torch.inference_mode():
        expected = continuous_greedy(lean, seqs, max_new_tokens=30, eos_ids=[tok.eos_token_id], max_batch_size=4)
        original = continuous._Scheduler.__init__

        def tiny(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self.kv = lean.new_buffers(0, 8)  # far too small: forces _squeeze and grow
            self.valid = self.valid.new_zeros((0, 8))

        continuous._Scheduler.__init__ = tiny
        try:
            got = continuous_greedy(lean, seqs, max_new_tokens=30, eos_ids=[tok.eos_token_id], max_batch_size=4)
        finally:
            continuous._Scheduler.__init__ = original
    assert got == expected


def test_shared_prefix_is_computed_once_and_used(backend):
    import torch

    fmt = BPOOptimizer(backend).fmt
    template = backend._template_prefix(fmt)
    encoded = [fmt.encode(p, backend.tokenizer) for p in MORE]
    assert len(template) >= 8 and all(e[: len(template)] == template for e in encoded)
    lean = LeanLlama(backend.model)
    with torch.inference_mode():
        first = lean.prefix_state(template)
        assert lean.prefix_state(template) is first  # cached, not recomputed
        with_prefix = continuous_greedy(lean, encoded, prefix_length=len(template), max_new_tokens=20, eos_ids=[2])
        without = continuous_greedy(lean, encoded, prefix_length=0, max_new_tokens=20, eos_ids=[2])
    assert with_prefix == without


@pytest.mark.parametrize("half", [False, True], ids=["float32", "fp16-copies"])
def test_padded_prefill_multiplies_only_real_tokens(backend, half):
    """With ``real``, a left-padded batch runs the projections on its real tokens only, and each
    row gets the logits it gets alone (on the float32 weights and on the fp16 copies)."""
    import torch

    from bpo_core.backends.engine_thread import run_on_engine

    tok = backend.tokenizer
    rows = [tok(p, add_special_tokens=False)["input_ids"] for p in ("hi", MORE[0], "why exercise")]
    width = max(map(len, rows))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    real = torch.zeros((len(rows), width), dtype=torch.bool)
    for g, r in enumerate(rows):
        ids[g, width - len(r) :] = torch.tensor(r)
        real[g, width - len(r) :] = True
    positions = (real.long().cumsum(-1) - 1).clamp(min=0)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    mask = (causal[None] & real[:, None, :]) | torch.eye(width, dtype=torch.bool)[None]

    def run():  # on the engine thread, where the copies are packed
        lean = LeanLlama(backend.model, half_weights=half)
        while half and not lean.pack_half_weights(budget_s=1.0):
            pass
        if half and not lean.half_weights:
            return None  # this torch build has no fp16-weight GEMM
        seen: list[int] = []
        norm = lean._norm
        lean._norm = lambda x, weight: (seen.append(x.shape[0]), norm(x, weight))[1]  # token rows in
        with torch.inference_mode():
            batched = lean.forward(ids, positions, lean.new_buffers(len(rows), width), mask[:, None], real=real)
            alone = [
                lean.forward(
                    torch.tensor([r]),
                    torch.arange(len(r))[None],
                    lean.new_buffers(1, len(r)),
                    torch.ones((len(r), len(r)), dtype=torch.bool).tril()[None, None],
                )[0]
                for r in rows
            ]
        return seen[0], batched, alone, lean._half_weights(sum(map(len, rows))) is not None

    got = run_on_engine(run)
    if got is None:
        pytest.skip("this torch build has no fp16-weight GEMM (fbgemm)")
    token_rows, batched, alone, used_half = got
    assert token_rows == sum(map(len, rows)) < len(rows) * width
    assert used_half == half
    for got_row, want in zip(batched, alone):
        assert torch.allclose(got_row, want, atol=1e-4)
        assert int(got_row.argmax()) == int(want.argmax())


def test_bad_prefix_and_batch_size_are_refused(backend):
    lean = LeanLlama(backend.model)
    with pytest.raises(ValueError, match="prefix_length"):
        continuous_greedy(lean, [[1, 2, 3], [1, 5, 6]], prefix_length=2, max_new_tokens=2, eos_ids=[2])
    with pytest.raises(ValueError, match="prefix_length"):
        continuous_greedy(lean, [[1, 2], [1, 2, 3]], prefix_length=2, max_new_tokens=2, eos_ids=[2])
    with pytest.raises(ValueError, match="max_batch_size"):
        continuous_greedy(lean, [[1, 2]], max_new_tokens=2, eos_ids=[2], max_batch_size=0)
    assert continuous_greedy(lean, [], max_new_tokens=2, eos_ids=[2]) == []


def test_max_time_returns_what_it_has(backend):
    import torch

    lean = LeanLlama(backend.model)
    seqs = [backend.tokenizer(p)["input_ids"] for p in MORE]
    with torch.inference_mode():
        rows = continuous_greedy(lean, seqs, max_new_tokens=200, eos_ids=[], max_time=0.0, max_batch_size=4)
    assert len(rows) == len(seqs) and all(len(r) <= 1 for r in rows)


def test_unsupported_architectures_keep_transformers_forward(backend):
    assert lean_supported(backend.model)

    class Other:
        config = type("C", (), {"model_type": "gpt2"})()

    assert not lean_supported(Other())
    with pytest.raises(ValueError, match="gpt2"):
        LeanLlama(Other())


def test_sampling_modes_keep_generate(backend):
    assert not backend._plain_greedy(settings_for_mode("stable"))
    assert not backend._plain_greedy(settings_for_mode("aggressive"))
    assert backend._plain_greedy(settings_for_mode("greedy"))


def test_bfloat16_embedded_model_loads_and_rewrites():
    import torch

    from bpo_core.default_model import shared_default_backend

    bf16 = shared_default_backend(dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16 and "[bfloat16]" in bf16.name  # own cache keys
    out = BPOOptimizer(bf16, max_new_tokens=24, cache=False).rewrite_batch(PROMPTS[:3])
    assert all(r.optimized.strip() for r in out)


def _fresh_engine(backend, **kwargs):
    from bpo_core.backends.continuous import ContinuousDecoder

    return ContinuousDecoder(LeanLlama(backend.model), eos_ids=[backend.tokenizer.eos_token_id], **kwargs)


def _wait_for(predicate, timeout=60.0):
    import time

    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_a_call_made_during_another_joins_its_batch(backend):
    import threading

    import torch

    fmt = BPOOptimizer(backend).fmt
    first_seqs = [fmt.encode(p, backend.tokenizer) for p in MORE[:2]]
    second_seqs = [fmt.encode(p, backend.tokenizer) for p in MORE[2:5]]
    with torch.inference_mode():
        alone_first = continuous_greedy(LeanLlama(backend.model), first_seqs, max_new_tokens=48, eos_ids=[2])
        alone_second = continuous_greedy(LeanLlama(backend.model), second_seqs, max_new_tokens=16, eos_ids=[2])
    assert max(len(r) for r in alone_first) >= 8  # long enough for the second call to arrive mid-way
    engine = _fresh_engine(backend)
    got = {}
    first = threading.Thread(target=lambda: got.update(first=engine.generate(first_seqs, max_new_tokens=48)))
    first.start()
    _wait_for(lambda: engine.steps >= 2)
    got["second"] = engine.generate(second_seqs, max_new_tokens=16)
    first.join()
    assert engine.peak_rows == 5  # 2 + 3: the second call decoded in the first one's batch
    assert got["first"] == alone_first and got["second"] == alone_second


def test_engine_errors_reach_every_caller_and_the_engine_recovers(backend, monkeypatch):
    import threading

    engine = _fresh_engine(backend)
    fmt = BPOOptimizer(backend).fmt
    seqs = [fmt.encode(p, backend.tokenizer) for p in MORE[:3]]
    calls = {"n": 0}
    forward = LeanLlama.forward

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("device fell over")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LeanLlama, "forward", flaky)
    errors = []

    def call():
        try:
            engine.generate(seqs, max_new_tokens=20)
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["device fell over"] * 2
    assert len(engine.generate(seqs, max_new_tokens=5)) == 3  # a later call starts afresh


def test_queued_engine_work_is_not_starved_by_a_stream_of_greedy_calls(backend):
    import threading

    from bpo_core.backends.engine_thread import submit

    engine = _fresh_engine(backend)
    engine.eos = set()
    seq = backend.tokenizer(MORE[0])["input_ids"]
    order, firsts = [], []
    first = threading.Thread(target=lambda: firsts.extend(engine.generate([seq], max_new_tokens=40)))
    first.start()
    _wait_for(lambda: engine.steps >= 1)
    # Recorded on the engine thread when the queued work runs, so no thread-wake race decides it.
    other = submit(lambda: order.append(("other work", engine.steps)))
    later = threading.Thread(target=lambda: (engine.generate([seq], max_new_tokens=2), order.append("later call")))
    later.start()
    other.result(timeout=120)
    first.join()
    later.join()
    # The running call finished all its 40 tokens first (no step was lost to the queued work),
    # then the queued work ran, then the call that came after it.
    assert [len(row) for row in firsts] == [40]
    assert [o if isinstance(o, str) else o[0] for o in order] == ["other work", "later call"]
    assert order[0][1] >= 40  # the first call's 40 decode steps were done before the work ran
