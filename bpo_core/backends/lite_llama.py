"""A Llama checkpoint loaded without transformers' modeling code, for a fast cold start.

Importing transformers' modeling stack (``modeling_utils``, the auto classes and what they pull
in: torch's compiler and distributed-tensor packages) costs about as long as importing torch
itself. The embedded default never runs that code on its usual path: every greedy rewrite, the
add-or-not gate and the addition guard run on :class:`~bpo_core.backends.lean_llama.LeanLlama`,
which reads the weights by transformers' attribute names and nothing else.

:class:`LiteLlama` holds exactly those weights, read with safetensors, under the same names.
Anything else (a transformers forward, ``generate`` for sampling, ``output_hidden_states``) loads
the transformers model on first use, sharing these tensors, so every path still works; only the
paths that need transformers pay for importing it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from bpo_core.backends.lean_llama import lean_config_supported

#: transformers' LlamaConfig defaults for the settings the lean forward checks, for configs that
#: omit them.
_LLAMA_DEFAULTS = {"hidden_act": "silu", "mlp_bias": False, "pretraining_tp": 1, "attention_bias": False}


def lite_config(folder: str | Path) -> SimpleNamespace | None:
    """The folder's ``config.json`` as attributes when :class:`LiteLlama` can load it, else ``None``.

    Only plain Llama checkpoints the lean forward computes exactly qualify
    (:func:`~bpo_core.backends.lean_llama.lean_config_supported`), with default RoPE and a single
    ``model.safetensors``.
    """
    folder = Path(folder)
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = SimpleNamespace(**{**_LLAMA_DEFAULTS, **raw})
    if raw.get("model_type") != "llama" or not lean_config_supported(config):
        return None
    if not (folder / "model.safetensors").is_file():
        return None
    rope = raw.get("rope_parameters") or {
        "rope_theta": raw.get("rope_theta", 10000.0),
        "rope_type": (raw.get("rope_scaling") or {}).get("rope_type", "default"),
    }
    if rope.get("rope_type", "default") != "default":
        return None
    config.rope_theta = float(rope["rope_theta"])
    config.num_key_value_heads = raw.get("num_key_value_heads") or raw["num_attention_heads"]
    config.head_dim = raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"]
    config._name_or_path = str(folder)
    return config


class _Rotary(nn.Module):
    """Default RoPE, the same arithmetic as transformers' ``LlamaRotaryEmbedding`` (same bits)."""

    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        dim = config.head_dim
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        self.inv_freq: torch.Tensor
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


def _placeholder(*shape: int) -> nn.Parameter:
    # Filled by load_state_dict(assign=True). No torch.nn initializer runs: on the meta device they
    # import torch's compiler (a second of a cold start).
    return nn.Parameter(torch.empty(*shape, device="meta"), requires_grad=False)


class _Linear(nn.Module):
    def __init__(self, n_in: int, n_out: int, bias: bool) -> None:
        super().__init__()
        self.weight = _placeholder(n_out, n_in)
        self.bias = _placeholder(n_out) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class _Embedding(nn.Module):
    def __init__(self, rows: int, size: int) -> None:
        super().__init__()
        self.weight = _placeholder(rows, size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight)


class _Norm(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = _placeholder(size)


class _Layer(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        hidden, q_out, kv_out = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        bias = bool(c.attention_bias)
        self.self_attn = nn.Module()
        self.self_attn.q_proj = _Linear(hidden, q_out, bias)
        self.self_attn.k_proj = _Linear(hidden, kv_out, bias)
        self.self_attn.v_proj = _Linear(hidden, kv_out, bias)
        self.self_attn.o_proj = _Linear(q_out, hidden, bias)
        self.mlp = nn.Module()
        self.mlp.gate_proj = _Linear(hidden, c.intermediate_size, False)
        self.mlp.up_proj = _Linear(hidden, c.intermediate_size, False)
        self.mlp.down_proj = _Linear(c.intermediate_size, hidden, False)
        self.input_layernorm = _Norm(hidden)
        self.post_attention_layernorm = _Norm(hidden)


class LiteLlama(nn.Module):
    """A Llama causal LM's weights under transformers' names, for the lean forward (inference only).

    ``model(...)``, ``generate`` and any other transformers attribute are served by the
    transformers model, loaded on first use (see :meth:`transformers_model`).
    """

    def __init__(self, folder: str | Path, config: SimpleNamespace | None = None) -> None:
        super().__init__()
        from safetensors.torch import load_file

        config = config or lite_config(folder)
        if config is None:
            raise ValueError(f"{folder} is not a checkpoint LiteLlama can load (see lite_config)")
        self.folder = Path(folder)
        self.config = config
        self.model = nn.Module()
        self.model.embed_tokens = _Embedding(config.vocab_size, config.hidden_size)
        self.model.layers = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))
        self.model.norm = _Norm(config.hidden_size)
        self.model.rotary_emb = _Rotary(config)
        state = load_file(str(self.folder / "model.safetensors"))
        tied = config.tie_word_embeddings if hasattr(config, "tie_word_embeddings") else "lm_head.weight" not in state
        self.lm_head = _Linear(config.hidden_size, config.vocab_size, False)
        if tied:
            state.pop("lm_head.weight", None)
        missing, unexpected = self.load_state_dict(state, strict=False, assign=True)
        if unexpected or set(missing) - ({"lm_head.weight"} if tied else set()):
            raise ValueError(
                f"{folder}: weights do not match a Llama checkpoint (missing {missing}, unexpected {unexpected})"
            )
        if tied:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.requires_grad_(False)
        self.eval()
        self._full: Any = None
        self._full_lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def transformers_model(self) -> Any:
        """The transformers model of the same checkpoint, sharing these weights (loaded once)."""
        with self._full_lock:
            if self._full is None:
                from transformers import AutoModelForCausalLM

                from bpo_core.backends.engine_thread import quiet_progress

                with quiet_progress():
                    full: Any = AutoModelForCausalLM.from_pretrained(
                        str(self.folder), dtype=self.dtype, use_safetensors=True
                    )
                full.load_state_dict(self.state_dict(), assign=True)  # strict: the same names, every one
                if getattr(full.config, "tie_word_embeddings", False):
                    full.tie_weights()
                # Not a submodule: the same weights must not appear twice in state_dict().
                object.__setattr__(self, "_full", full.to(self.device).eval())
            return self._full

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.transformers_model()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):
                raise
            return getattr(self.transformers_model(), name)
