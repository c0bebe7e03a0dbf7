"""Loading the embedded default optimizer: the SmolLM2 base plus the shipped BPO adapter."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from bpo_core.backends.hf import HFBackend
from bpo_core.embedded import converted_base_dir
from bpo_core.formats import ChatFormat

logger = logging.getLogger(__name__)

#: The BPO LoRA adapter trained on the authors' data (see its MODEL_CARD.md); absent until trained.
SHIPPED_ADAPTER = Path(__file__).parent / "weights" / "bpo-smollm2-135m-lora"


def shipped_adapter() -> Path | None:
    return SHIPPED_ADAPTER if (SHIPPED_ADAPTER / "adapter_config.json").is_file() else None


def load_default_backend(*, device: str | None = None, num_threads: int | None = None, adapter: bool = True) -> HFBackend:
    """Load the embedded base (converted once to safetensors) and merge the shipped adapter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bpo_core.backends.hf import _merge_adapter, resolve_device

    base = converted_base_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, use_safetensors=True)
    name = "embedded:smollm2-135m-instruct"
    lora = shipped_adapter() if adapter else None
    if lora is not None:
        model = _merge_adapter(model, lora)
        name += f"+{lora.name}"
    model.to(resolve_device(device))
    backend = HFBackend(model, tokenizer, name=name, num_threads=num_threads)
    backend.default_format = ChatFormat()  # type: ignore[attr-defined]
    return backend


@functools.lru_cache(maxsize=4)
def shared_default_backend(*, device: str | None = None, num_threads: int | None = None) -> HFBackend:
    """One embedded model per process (per device and thread setting), however many optimizers use it."""
    return load_default_backend(device=device, num_threads=num_threads)
