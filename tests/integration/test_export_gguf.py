"""GGUF export of the embedded optimizer (bpo_core.export): what llama.cpp reads is our model."""

from __future__ import annotations

import gguf
import pytest
import torch

from bpo_core.embedded import find_gguf
from bpo_core.export import export_gguf


def test_f32_export_reads_back_as_the_same_model(backend, tmp_path):
    from transformers import AutoModelForCausalLM

    path = export_gguf(backend.model, tmp_path / "bpo.gguf", reference=find_gguf(), qtype="F32")
    # transformers undoes llama.cpp's rotary row order on reading: equal weights mean it was right.
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name)
    ours = backend.model.state_dict()
    theirs = back.state_dict()
    for name in (
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.7.self_attn.k_proj.weight",
        "model.layers.29.mlp.down_proj.weight",
        "model.embed_tokens.weight",
        "model.norm.weight",
    ):
        assert torch.equal(ours[name], theirs[name]), name
    reader = gguf.GGUFReader(str(path))
    assert (
        reader.fields["tokenizer.chat_template"].contents()
        == gguf.GGUFReader(str(find_gguf())).fields["tokenizer.chat_template"].contents()
    )


def test_q8_export_quantizes_matrices_and_keeps_norms_f32(backend, tmp_path):
    path = export_gguf(backend.model, tmp_path / "bpo-q8.gguf", reference=find_gguf())
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32" and "output.weight" not in types  # tied head
    assert path.stat().st_size < 200e6


def test_unknown_type_is_refused_before_anything_is_written(backend, tmp_path):
    with pytest.raises(ValueError, match="Unknown GGUF type 'Q3'"):
        export_gguf(backend.model, tmp_path / "x.gguf", reference=find_gguf(), qtype="Q3")
    assert not (tmp_path / "x.gguf").exists()
