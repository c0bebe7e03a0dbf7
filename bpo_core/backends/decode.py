"""A lean greedy decoder for batched rewrites on small models.

``model.generate`` spends a large share of each step on bookkeeping when the model is as small as
the embedded 135M one, and it keeps finished rows in the batch until the longest is done. This
loop calls the model directly, and drops a row (and its KV cache) as soon as it emits EOS, so
a batch costs what its unfinished rows cost. Greedy only; sampling and constrained decoding
(banned words, minimum lengths) stay with ``generate``.

It stays for the architectures the lean forward refuses (``lean_llama.lean_supported``), where it
still beats ``generate`` (64 rewrites: 19.6 s against 30 s, see benchmarks/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from bpo_core import waits

if TYPE_CHECKING:
    pass

#: Model types whose forward takes (input_ids, attention_mask, position_ids, past_key_values,
#: cache_position) with full attention, which this loop relies on.
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "granite", "olmo", "olmo2"})


def supports(model: Any) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) in SUPPORTED_MODEL_TYPES and not getattr(config, "sliding_window", None)


def greedy_decode(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    *,
    max_new_tokens: int,
    eos_ids: Collection[int],
    max_time: float | None = None,
) -> list[list[int]]:
    """Greedy continuation of each left-padded row; returns the new token ids (EOS excluded)."""
    import torch
    from transformers import DynamicCache

    start = time.monotonic()
    device = input_ids.device
    cache = DynamicCache(config=model.config)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    results: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    alive = list(range(input_ids.shape[0]))  # original row of each row still decoding
    mask = attention_mask
    next_position = attention_mask.sum(-1, keepdim=True)
    cache_length = input_ids.shape[1]
    eos = set(eos_ids)
    for step in range(max_new_tokens):
        waits.beat()
        tokens = out.logits[:, -1].argmax(-1)
        keep = []
        for j, token in enumerate(tokens.tolist()):
            if token in eos:
                continue
            results[alive[j]].append(token)
            keep.append(j)
        if not keep or step == max_new_tokens - 1 or (max_time is not None and time.monotonic() - start > max_time):
            break
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, next_position, tokens = mask[index], next_position[index], tokens[index]
            alive = [alive[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_position,
            past_key_values=cache,
            use_cache=True,
            cache_position=torch.tensor([cache_length], device=device),
        )
        next_position = next_position + 1
        cache_length += 1
    return results
