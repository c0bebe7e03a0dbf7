"""Loading the embedded default optimizer: the SmolLM2 base plus the shipped BPO adapter."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from bpo_core.addition_probe import find_probe
from bpo_core.backends.hf import HFBackend
from bpo_core.embedded import EMBEDDED_BASE_ID, converted_base_dir
from bpo_core.formats import ChatFormat

logger = logging.getLogger(__name__)

#: The BPO LoRA adapter trained on the authors' data (see its MODEL_CARD.md); absent until trained.
SHIPPED_ADAPTER = Path(__file__).parent / "weights" / "bpo-smollm2-135m-lora"


def shipped_adapter() -> Path | None:
    return SHIPPED_ADAPTER if (SHIPPED_ADAPTER / "adapter_config.json").is_file() else None


def load_default_backend(
    *, device: str | None = None, num_threads: int | None = None, adapter: bool = True, dtype: Any = None
) -> HFBackend:
    """Load the embedded base (converted once to safetensors) and merge the shipped adapter.

    ``dtype``: ``None``/``"auto"`` is float32 on a CPU (see ``resolve_dtype``); ``"bfloat16"``
    roughly halves the time of batched rewriting on CPUs with AMX (Intel Sapphire Rapids and
    later), at the cost of slightly different rewrites for some prompts and slightly slower
    single calls; see the README's performance section. Loading runs on the engine thread
    (see ``bpo_core.backends.engine_thread``).
    """
    from bpo_core.backends.engine_thread import load_on_engine

    return load_on_engine(
        lambda: _load(device=device, num_threads=num_threads, adapter=adapter, dtype=dtype), "the embedded optimizer"
    )


def _load(*, device: str | None, num_threads: int | None, adapter: bool, dtype: Any) -> HFBackend:
    import torch
    from transformers import PreTrainedTokenizerFast

    from bpo_core.backends.lite_llama import LiteLlama, lite_config
    from bpo_core.backends.loading import resolve_device, resolve_dtype

    base = converted_base_dir()
    name = EMBEDDED_BASE_ID
    lora = shipped_adapter() if adapter else None
    source = base
    if lora is not None:
        source = _merged_dir(base, lora)
        name += f"+{lora.name}@{source.name.rsplit('-', 1)[-1]}"
    # The fast-tokenizer class is what AutoTokenizer picks for this checkpoint, without the auto
    # machinery's imports (seconds of a cold start).
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(base))
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    config = lite_config(source) if torch_dtype == torch.float32 else None
    model: Any
    if config is not None:  # transformers' modeling code is imported only if a path needs it
        model = LiteLlama(source, config)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch_dtype, use_safetensors=True)
    model.to(device)
    if torch_dtype != torch.float32:
        name += f"[{str(torch_dtype).removeprefix('torch.')}]"  # rewrites differ by dtype: keep caches apart
    # The shipped adapter says which styles it was trained on; additions are the embedded default.
    style = "augment" if lora is not None and "augment" in adapter_styles(lora) else "rewrite"
    return HFBackend(
        model,
        tokenizer,
        name=name,
        num_threads=num_threads,
        default_format=ChatFormat(),
        default_style=style,
        addition_probe=find_probe(lora),
    )


def adapter_styles(adapter: Path) -> list[str]:
    """The edit styles an adapter was trained on (from its ``bpo_training.json``; ``rewrite`` before styles existed)."""
    import json

    info = adapter / "bpo_training.json"
    if not info.is_file():
        return ["rewrite"]
    return list(json.loads(info.read_text(encoding="utf-8")).get("styles", ["rewrite"]))


def _merged_dir(base: Path, lora: Path) -> Path:
    """The base with the adapter merged in, cached as safetensors (keyed by the adapter's hash).

    Merging needs peft (about 2 s to import) and a pass over the weights; a cached merged
    checkpoint loads in a fraction of a second.
    """
    import hashlib

    import torch
    from transformers import AutoModelForCausalLM

    from bpo_core.atomic import atomic_dir
    from bpo_core.backends.loading import merge_adapter
    from bpo_core.embedded import cache_root

    digest = hashlib.sha256()
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((lora / f).read_bytes())
    target = cache_root() / f"{base.name}-bpo-{digest.hexdigest()[:12]}"
    if (target / "model.safetensors").is_file():
        return target
    logger.info("Merging the BPO adapter into the base model (once): %s", target)
    model = merge_adapter(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), lora)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    return target


@functools.lru_cache(maxsize=4)
def shared_default_backend(
    *, device: str | None = None, num_threads: int | None = None, dtype: Any = None
) -> HFBackend:
    """One embedded model per process (per device, thread and dtype setting), however many optimizers use it."""
    return load_default_backend(device=device, num_threads=num_threads, dtype=dtype)
