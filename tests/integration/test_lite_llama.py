"""The embedded default loads without transformers' modeling code, and gives what transformers gives."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from bpo_core.backends.lean_llama import LeanLlama
from bpo_core.backends.lite_llama import LiteLlama, lite_config


def test_default_backend_is_lite_and_matches_transformers(backend):
    lite = backend.model
    assert isinstance(lite, LiteLlama)
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(str(lite.folder), dtype=torch.float32).eval()
    ids = backend.tokenizer("Give two good examples of customer service.")["input_ids"]
    with torch.inference_mode():
        ours = LeanLlama(lite, half_weights=False).hidden_states([], ids, 16)
        theirs = LeanLlama(reference, half_weights=False).hidden_states([], ids, 16)
        assert torch.equal(ours, theirs)  # same weights, same rotary tables, bit for bit
        batch = torch.tensor([ids])
        assert torch.equal(lite(input_ids=batch).logits, reference(input_ids=batch).logits)


def test_transformers_model_shares_the_weights(backend):
    lite = backend.model
    full = lite.transformers_model()
    assert full is lite.transformers_model()  # loaded once
    assert full.model.layers[3].mlp.up_proj.weight.data_ptr() == lite.model.layers[3].mlp.up_proj.weight.data_ptr()
    assert full.lm_head.weight.data_ptr() == lite.model.embed_tokens.weight.data_ptr()  # still tied
    assert lite.generation_config is full.generation_config  # other attributes come from transformers
    assert set(lite.state_dict()) == set(full.state_dict())  # the transformers model is no submodule


def test_default_path_never_imports_transformers_modeling():
    """A greedy rewrite (gate, addition, guard) runs without transformers' modeling stack or
    torch's compiler: importing them is seconds of every cold start."""
    code = (
        "import sys; from bpo_core import BPOOptimizer; "
        "r = BPOOptimizer.default(max_new_tokens=24, cache=False).rewrite('how can I create a profile on Facebook?'); "
        "print(repr(r.optimized)); "
        "print([m for m in ('transformers.modeling_utils', 'torch._dynamo') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "[]", out.stdout + out.stderr
    assert lines[-2].startswith("'how can I create a profile on Facebook?")


@pytest.mark.parametrize(
    "change",
    [
        {"model_type": "mistral"},
        {"rope_parameters": {"rope_theta": 10000.0, "rope_type": "llama3", "factor": 8.0}},
        {"rope_scaling": {"rope_type": "linear", "factor": 2.0}, "rope_parameters": None},
        {"mlp_bias": True},
        {"hidden_act": "gelu"},
    ],
)
def test_lite_config_declines_what_it_cannot_reproduce(backend, tmp_path, change):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    config = json.loads((backend.model.folder / "config.json").read_text())
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps(config))
    assert lite_config(folder) is not None
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    assert lite_config(folder) is None
    with pytest.raises(ValueError, match="not a checkpoint LiteLlama can load"):
        LiteLlama(folder)


def test_lite_config_needs_safetensors_weights(backend, tmp_path):
    (tmp_path / "config.json").write_text((backend.model.folder / "config.json").read_text())
    assert lite_config(tmp_path) is None
