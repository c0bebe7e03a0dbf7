"""A lean inference forward for Llama-family decoders, over the model's own weights.

On a CPU a 135M-parameter model spends most of a decode step outside its matrix products:
transformers' forward rebuilds masks, concatenates the KV cache and goes through many small
modules per layer. This forward does the same arithmetic in fewer operations:

- the KV cache is allocated once per batch and written in place (no per-step concatenation);
- masks are built once per batch and sliced per step;
- the key/value states of a prompt prefix shared by every row (the optimizer's fixed template)
  are computed once, kept, and copied into each batch instead of recomputed for every prompt;
- a decode step attends with the query heads grouped onto their key/value head, so no copy
  of the cache is made for grouped-query attention;
- on CPUs, the projections can run on half-precision copies of the weights (:class:`HalfWeights`):
  batch-1 decoding is bound by reading the weights, and fbgemm's fp16-weight GEMM reads half the
  bytes while it still computes in float32.

It reads the weights of the transformers model in place (no copy), so it follows the model's
device and dtype. Only plain Llama-style blocks qualify (see :func:`lean_supported`); anything
else keeps the transformers forward.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Architectures whose decoder block is exactly: RMSNorm, q/k/v projections (optional bias),
#: rotary embedding, attention, o projection, RMSNorm, SiLU-gated MLP.
LEAN_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})


def lean_config_supported(config: Any) -> bool:
    """Whether a model config describes a block the lean forward computes exactly."""
    if getattr(config, "model_type", None) not in LEAN_MODEL_TYPES:
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    return (
        getattr(config, "hidden_act", None) == "silu"
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "pretraining_tp", 1) == 1
    )


def lean_supported(model: Any) -> bool:
    core = getattr(model, "model", None)
    return (
        lean_config_supported(getattr(model, "config", None))
        and core is not None
        and hasattr(core, "rotary_emb")
        and hasattr(model, "lm_head")
    )


class KVBuffers:
    """Key/value storage for a batch of rows: per layer ``[rows, kv_heads, slots, head_dim]``.

    The storage is allocated once per batch session: rows join at the end of the active range
    and leave by having a later row moved into their place, so neither copies the whole cache.
    (Keeping the storage from one call to the next made every call about twice as slow in a
    measurement taken while the loop still ran with autograd on; not re-measured since.)
    ``length`` is the next slot to write. A slot is a storage column, not a position: the
    decoder tracks each row's positions and which slots it may attend to, so rows of different
    lengths (and rows that join later) share one buffer. Slots a row may not attend to can hold
    anything finite (zeros, or an earlier row's values): they are masked.
    """

    def __init__(
        self,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        length: int = 0,
        *,
        start: int = 0,
        batch: int | None = None,
    ) -> None:
        self.storage_keys, self.storage_values = keys, values
        self.start = start
        self.batch = keys[0].shape[0] - start if batch is None else batch
        self.length = length

    @property
    def capacity(self) -> int:
        return self.storage_keys[0].shape[2]

    @property
    def keys(self) -> list[torch.Tensor]:
        """Per-layer views of the active rows (writes go to the storage)."""
        a, b = self.start, self.start + self.batch
        return [k[a:b] for k in self.storage_keys]

    @property
    def values(self) -> list[torch.Tensor]:
        a, b = self.start, self.start + self.batch
        return [v[a:b] for v in self.storage_values]

    def rows_from(self, first: int) -> KVBuffers:
        """A view of active rows ``first:`` (writes go to this storage), for prefilling rows that just joined."""
        return KVBuffers(
            self.storage_keys, self.storage_values, self.length, start=self.start + first, batch=self.batch - first
        )

    def add_rows(self, n: int, *, reserve: int = 0) -> None:
        """Append ``n`` rows to the active range; a full storage grows to fit them, or to ``reserve`` rows."""

        need = self.start + self.batch + n
        if need > self.storage_keys[0].shape[0]:
            rows = max(need, reserve)

            def grow(t: torch.Tensor) -> torch.Tensor:
                out = t.new_empty((rows, *t.shape[1:]))  # each element written once: copied or zeroed
                out[: t.shape[0]] = t
                out[t.shape[0] :] = 0
                return out

            self.storage_keys = [grow(k) for k in self.storage_keys]
            self.storage_values = [grow(v) for v in self.storage_values]
        self.batch += n

    def compact(self, keep: list[int]) -> list[int]:
        """Keep only active rows ``keep`` (ascending); returns the old index now at each position.

        Each kept row past the new end moves into the place of a dropped row before it: a copy of
        the moved rows only, never of the whole cache.
        """
        import torch

        n = len(keep)
        kept = set(keep)
        holes = [r for r in range(n) if r not in kept]
        movers = [j for j in keep if j >= n]
        order = list(range(n))
        if holes:
            src = torch.tensor(movers, device=self.storage_keys[0].device) + self.start
            dst = torch.tensor(holes, device=self.storage_keys[0].device) + self.start
            for t in (*self.storage_keys, *self.storage_values):
                t[dst] = t[src]
            for h, m in zip(holes, movers):
                order[h] = m
        self.batch = n
        return order

    def select_slots(self, index: torch.Tensor) -> None:
        """Keep only the slots in ``index`` (in order), packing them to the left."""
        a, b = self.start, self.start + self.batch
        for t in (*self.storage_keys, *self.storage_values):
            t[a:b, :, : len(index)] = t[a:b].index_select(2, index)
        self.length = len(index)

    def grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra > 0:

            def widen(t: torch.Tensor) -> torch.Tensor:
                out = t.new_empty((t.shape[0], t.shape[1], capacity, t.shape[3]))
                out[:, :, : t.shape[2]] = t
                out[:, :, t.shape[2] :] = 0
                return out

            self.storage_keys = [widen(k) for k in self.storage_keys]
            self.storage_values = [widen(v) for v in self.storage_values]


class HalfWeights:
    """Half-precision copies of a model's projections, prepacked for fbgemm's fp16-weight GEMM.

    Arithmetic stays float32 (each weight is widened as it is read), so results differ from the
    float32 weights' only by rounding the weights to fp16 (10-bit mantissa, unlike bfloat16's 7).
    q/k/v and gate/up are packed as one matrix each: fewer, larger GEMMs. The copies come on top
    of the float32 weights (still used by large forwards and by sampling), and fbgemm's packed
    layout takes more than the fp16 bytes alone.

    Packing is slow (single-threaded, seconds for the whole model), so it is done a matrix at a
    time (:meth:`pack_some`), in the engine thread's idle time; forwards use the copies once all
    are packed. Copies are of the weights as they were: changing the weights in place needs a
    new ``HalfWeights``.
    """

    #: The output projection is packed in slices of this many rows (one slice is one packing step).
    HEAD_SLICE_ROWS = 8192

    def __init__(self, model: Any) -> None:
        n = len(model.model.layers)
        self.layers: list[list[Any]] = [[None] * 4 for _ in range(n)]
        self.head: list[Any] = []
        rows = model.lm_head.weight.shape[0]
        self._todo = [(i, j) for i in range(n) for j in range(4)]
        self._todo += [(-1, start) for start in range(0, rows, self.HEAD_SLICE_ROWS)]
        self._todo.reverse()  # popped from the end: layers first, in order
        self._model = model

    @property
    def ready(self) -> bool:
        return not self._todo

    def pack_some(self, budget_s: float = 0.05) -> bool:
        """Pack matrices until ``budget_s`` is spent (at least one); returns whether all are packed."""
        import time

        import torch

        pack = torch.ops.quantized.linear_prepack_fp16
        started = time.monotonic()
        with torch.no_grad():
            while self._todo:
                i, j = self._todo[-1]
                if i < 0:
                    head = self._model.lm_head
                    bias = getattr(head, "bias", None)
                    rows = slice(j, j + self.HEAD_SLICE_ROWS)
                    self.head.append(pack(head.weight[rows].float(), None if bias is None else bias[rows].float()))
                else:
                    weight, bias = self._matrix(self._model.model.layers[i], j)
                    self.layers[i][j] = pack(weight.float(), None if bias is None else bias.float())
                self._todo.pop()
                if time.monotonic() - started >= budget_s:
                    break
        return self.ready

    @staticmethod
    def _matrix(layer: Any, j: int) -> tuple[Any, Any]:
        import torch

        attn, mlp = layer.self_attn, layer.mlp
        if j == 0:
            qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
            bias = torch.cat([p.bias for p in qkv]) if attn.q_proj.bias is not None else None
            return torch.cat([p.weight for p in qkv]), bias
        if j == 1:
            return attn.o_proj.weight, attn.o_proj.bias
        if j == 2:
            return torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), None
        return mlp.down_proj.weight, None

    @staticmethod
    def linear(x: torch.Tensor, packed: Any) -> torch.Tensor:
        import torch

        out = torch.ops.quantized.linear_dynamic_fp16(x.reshape(-1, x.shape[-1]), packed)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.cat([self.linear(x, part) for part in self.head], dim=-1)


#: Forwards over at most this many token rows (batch x new tokens) use :class:`HalfWeights`:
#: there reading the weights dominates. Larger ones are bound by arithmetic, where float32 GEMMs
#: are faster.
HALF_WEIGHTS_MAX_ROWS = 96


def half_weights_default() -> bool:
    """``BPO_HALF_WEIGHTS=0`` keeps the float32 weights for every forward."""
    return os.environ.get("BPO_HALF_WEIGHTS", "1").strip().lower() not in ("0", "off", "false", "no")


class LeanLlama:
    """The decode-time forward of a transformers Llama-family causal LM (inference only)."""

    def __init__(self, model: Any, *, prefix_cache_size: int = 8, half_weights: bool | None = None) -> None:
        if not lean_supported(model):
            raise ValueError(f"LeanLlama does not support model type {getattr(model.config, 'model_type', None)!r}")
        config = model.config
        self.model = model
        self.n_heads = config.num_attention_heads
        self.n_kv = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.group = self.n_heads // self.n_kv
        self.scale = self.head_dim**-0.5
        self.eps = config.rms_norm_eps
        self._prefixes: OrderedDict[tuple[int, ...], tuple[list[Any], list[Any]]] = OrderedDict()
        self._prefix_cache_size = prefix_cache_size
        self._weights_id = self._weights_signature()
        import torch

        # Only where the weights are float32 on a CPU: elsewhere they are read fast enough, or
        # already half precision. Whether this torch build has the kernel is found out on the
        # first forward, on the thread that runs the model (see engine_thread.py for why no
        # other thread may run torch's parallel kernels: a probe here, on the caller's thread,
        # made every later decode step about 1.8x slower).
        wanted = half_weights_default() if half_weights is None else half_weights
        #: Small forwards read fp16 copies of the weights (see :class:`HalfWeights`).
        self.half_weights = wanted and self.device.type == "cpu" and self.dtype == torch.float32
        self._half: HalfWeights | None = None

    def _weights_signature(self) -> tuple[Any, ...]:
        w = self.model.lm_head.weight
        return (w.data_ptr(), w.dtype, w.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    # ----------------------------------------------------------------- caches
    def new_buffers(self, batch: int, capacity: int) -> KVBuffers:
        import torch

        shape = (batch, self.n_kv, capacity, self.head_dim)
        n = len(self.model.model.layers)

        def zeros() -> torch.Tensor:
            return torch.zeros(shape, dtype=self.dtype, device=self.device)

        return KVBuffers([zeros() for _ in range(n)], [zeros() for _ in range(n)])

    def _check_weights(self) -> None:
        import torch

        if self._weights_signature() != self._weights_id:  # the model moved or changed dtype
            self._prefixes.clear()
            self._half = None
            self._weights_id = self._weights_signature()
            if self.device.type != "cpu" or self.dtype != torch.float32:
                self.half_weights = False

    def pack_half_weights(self, budget_s: float = 0.05) -> bool:
        """Pack some of the fp16 weight copies (see :class:`HalfWeights`); returns whether none are left.

        Call it on the thread that runs the model, when it has nothing else to do.
        """
        if not self.half_weights:
            return True
        self._check_weights()
        try:
            if self._half is None:
                self._half = HalfWeights(self.model)
            return self._half.pack_some(budget_s)
        except Exception as exc:  # no fbgemm (ARM, macOS builds) or an op that moved
            logger.info("bpo: float32 weights kept (no fp16-weight GEMM in this torch build: %s)", exc)
            self.half_weights, self._half = False, None
            return True

    def _half_weights(self, rows: int) -> HalfWeights | None:
        if not self.half_weights or rows > HALF_WEIGHTS_MAX_ROWS or self._half is None or not self._half.ready:
            return None
        return self._half

    def prefix_state(self, prefix: list[int]) -> tuple[list[Any], list[Any]]:
        """Key/value states of ``prefix`` alone (cached: the template prefix repeats every call)."""
        import torch

        self._check_weights()
        key = tuple(prefix)
        if key in self._prefixes:
            self._prefixes.move_to_end(key)
            return self._prefixes[key]
        buffers = self.new_buffers(1, len(prefix))
        ids = torch.tensor([prefix], device=self.device)
        positions = torch.arange(len(prefix), device=self.device)[None]
        self.forward(ids, positions, buffers, _causal_mask(len(prefix), len(prefix), ids.device))
        state = (buffers.storage_keys, buffers.storage_values)
        self._prefixes[key] = state
        while len(self._prefixes) > self._prefix_cache_size:
            self._prefixes.popitem(last=False)
        return state

    # ---------------------------------------------------------------- forward
    def hidden_states(self, prefix: list[int], ids: list[int], layers: int) -> torch.Tensor:
        """The hidden states of ``ids`` read after ``prefix`` (its KV cached), at the output of the
        first ``layers`` layers (transformers' ``hidden_states[layers]``): ``[len(ids), hidden]``.

        Only those layers run; float32 weights throughout, so the states match transformers'.
        """
        import torch

        if not 0 < layers < len(self.model.model.layers) or not ids:
            raise ValueError(f"hidden_states needs ids and 0 < layers < {len(self.model.model.layers)}")
        p, n = len(prefix), len(ids)
        buffers = self.new_buffers(1, p + n)
        if p:
            keys, values = self.prefix_state(prefix)
            for dst, src in zip([*buffers.keys, *buffers.values], [*keys, *values]):
                dst[:, :, :p] = src
            buffers.length = p
        positions = torch.arange(p, p + n, device=self.device)[None]
        mask = torch.arange(p + n, device=self.device)[None, :] <= positions[0][:, None]
        return self.forward(
            torch.tensor([ids], device=self.device), positions, buffers, mask[None, None], until_layer=layers
        )[0]

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        kv: KVBuffers,
        mask: torch.Tensor,
        *,
        until_layer: int | None = None,
        real: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run ``ids`` (``[B, T]``) through the model, appending to ``kv``; returns last-position logits.

        ``mask`` is boolean, ``[B, 1, T, kv.length + T]`` (True: may attend). ``until_layer``: stop
        after that many layers and return their output for every position (``[B, T, hidden]``),
        in float32 weights. ``real`` (boolean ``[B, T]``, every row with at least one True) marks
        the positions that hold tokens in a padded batch: the projections and the MLP then run on
        those only, padding's keys and values are written as zeros (it is masked anyway), and
        each row's logits are those of its last real position.
        """
        import torch
        import torch.nn.functional as F

        self._check_weights()
        core = self.model.model
        batch, steps = ids.shape
        # Token rows: every position, or only the real ones of a padded prefill (which can be a
        # third padding when prompt lengths differ, all of it matrix products for nothing).
        pick = last_real = None
        if real is not None and until_layer is None and not bool(real.all()) and bool(real.any(1).all()):
            pick = real.reshape(-1).nonzero().squeeze(1)
            last_real = real.sum(1).cumsum(0) - 1  # token rows are in row order: a row's last ends its run
        flat_ids = ids.reshape(-1) if pick is None else ids.reshape(-1)[pick]
        flat_positions = positions.expand(batch, steps).reshape(-1)
        if pick is not None:
            flat_positions = flat_positions[pick]
        x = core.embed_tokens(flat_ids)  # [tokens, hidden]
        cos, sin = core.rotary_emb(x, flat_positions[None])
        cos, sin = cos[0, :, None], sin[0, :, None]  # [tokens, 1, head_dim]
        tokens = x.shape[0]
        start, end = kv.length, kv.length + steps
        cache_keys, cache_values = kv.keys, kv.values
        single = steps == 1 and self.group > 1
        half = self._half_weights(tokens) if until_layer is None else None
        # The additive form SDPA would derive from the boolean mask in every layer, made once.
        mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        heads, kv_heads, head_dim = self.n_heads, self.n_kv, self.head_dim

        def batched(t: torch.Tensor) -> torch.Tensor:
            """Token rows ``[tokens, h, d]`` -> ``[B, h, T, d]`` (zeros at padding)."""
            if pick is not None:
                t = t.new_zeros((batch * steps, *t.shape[1:])).index_copy_(0, pick, t)
            return t.view(batch, steps, *t.shape[1:]).transpose(1, 2)

        for i, layer in enumerate(core.layers):
            if i == until_layer:
                kv.length = end
                return x.view(batch, steps, -1)
            attn, mlp = layer.self_attn, layer.mlp
            h = self._norm(x, layer.input_layernorm)
            if half is not None:  # q, k and v from one GEMM; q and k rotated together
                qkv = half.linear(h, half.layers[i][0]).view(tokens, heads + 2 * kv_heads, head_dim)
                qk = qkv[:, : heads + kv_heads]
                qk = qk * cos + _rotate_half(qk) * sin
                q, k = qk[:, :heads], qk[:, heads:]
                v = qkv[:, heads + kv_heads :]
            else:
                q = attn.q_proj(h).view(tokens, heads, head_dim)
                k = attn.k_proj(h).view(tokens, kv_heads, head_dim)
                v = attn.v_proj(h).view(tokens, kv_heads, head_dim)
                q = q * cos + _rotate_half(q) * sin
                k = k * cos + _rotate_half(k) * sin
            cache_keys[i][:, :, start:end] = batched(k)
            cache_values[i][:, :, start:end] = batched(v)
            keys, values = cache_keys[i][:, :, :end], cache_values[i][:, :, :end]
            if single:  # query heads grouped on their key/value head: no copy of the cache
                out = F.scaled_dot_product_attention(
                    q.reshape(batch, kv_heads, self.group, head_dim), keys, values, attn_mask=mask, scale=self.scale
                ).reshape(batch, heads * head_dim)
            else:
                out = F.scaled_dot_product_attention(
                    batched(q), keys, values, attn_mask=mask, scale=self.scale, enable_gqa=self.group > 1
                )
                out = out.transpose(1, 2).reshape(batch * steps, heads * head_dim)
                if pick is not None:
                    out = out.index_select(0, pick)
            if half is not None:
                x = x + half.linear(out, half.layers[i][1])
                h = self._norm(x, layer.post_attention_layernorm)
                gate, up = half.linear(h, half.layers[i][2]).chunk(2, dim=-1)
                x = x + half.linear(F.silu(gate) * up, half.layers[i][3])
            else:
                x = x + attn.o_proj(out)
                h = self._norm(x, layer.post_attention_layernorm)
                x = x + mlp.down_proj(F.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
        kv.length = end
        last = self._norm(x.view(batch, steps, -1)[:, -1] if last_real is None else x[last_real], core.norm)
        return half.logits(last) if half is not None else self.model.lm_head(last)

    def _norm(self, x: torch.Tensor, norm: Any) -> torch.Tensor:
        # Same arithmetic as transformers' LlamaRMSNorm (variance in float32), so results match;
        # in float32 torch's fused rms_norm gives the same bits in one call instead of six.
        import torch

        dtype = x.dtype
        if dtype == torch.float32 and norm.weight.dtype == torch.float32:
            return torch.nn.functional.rms_norm(x, x.shape[-1:], norm.weight, self.eps)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return norm.weight * h.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _causal_mask(steps: int, length: int, device: Any) -> torch.Tensor:
    """``[1, 1, steps, length]``: query j (at absolute position length - steps + j) sees keys <= itself."""
    import torch

    q = torch.arange(length - steps, length, device=device)[:, None]
    return (torch.arange(length, device=device)[None, :] <= q)[None, None]
