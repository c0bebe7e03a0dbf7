"""Loading a causal LM for the local backend: device and dtype choice, hub reachability, adapters.

Kept apart from generation (``hf.py``): nothing here runs a model.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo_core.errors import ModelLoadError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` picks CUDA, then Apple MPS, then CPU."""
    import torch

    if device not in (None, "auto"):
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: Any, device: str) -> torch.dtype:
    """``None``/``"auto"``: bfloat16 (or float16) on accelerators, float32 on CPU."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.startswith("mps"):
            return torch.float16
        return torch.float32
    try:
        chosen = getattr(torch, str(dtype))
    except AttributeError:
        raise ValueError(f"Unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16' or 'auto'") from None
    if device == "cpu" and chosen in (torch.bfloat16, torch.float16) and cpu_has_amx() is False:
        logger.warning(
            "bpo: %s on a CPU without AMX runs many times slower than float32 (the default); use float32 here",
            str(chosen).removeprefix("torch."),
        )
    return chosen


def cpu_has_amx() -> bool | None:
    """Whether the CPU has AMX (Intel Sapphire Rapids and later), where bfloat16 matrix products pay;
    ``None`` where this cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        return None
    return None


def load_causal_lm(
    name_or_path: str,
    *,
    device: str | None = None,
    dtype: Any = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    revision: str | None = None,
    adapter: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """(model, tokenizer, name) of a checkpoint (a hub id or a local folder), an adapter merged in.

    A folder holding a PEFT adapter (``adapter_config.json``) is accepted as ``name_or_path``:
    its base model is loaded and the adapter merged. Only safetensors weights are read unless
    ``allow_pickle=True``. Call it on the engine thread (``engine_thread.load_on_engine``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(name_or_path)
    if adapter is None and (Path(path) / "adapter_config.json").is_file():
        adapter, path = path, _adapter_base(path)
    ensure_reachable(path, revision)
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
    try:
        tokenizer_source = str(adapter) if adapter and _has_tokenizer(adapter) else path
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, **common)
        model: Any = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, use_safetensors=None if allow_pickle else True, **common
        )
    except Exception as exc:
        hint = ""
        if not allow_pickle and "safetensors" in str(exc).lower():
            hint = " (only safetensors weights are loaded by default; pass allow_pickle=True if you trust pickle files)"
        raise ModelLoadError(f"Could not load optimizer model {path!r}: {exc}{hint}") from exc
    if adapter is not None:
        model = merge_adapter(model, adapter)
    model.to(target)
    return model, tokenizer, (f"{path}+{Path(adapter).name}" if adapter else path)


def ensure_reachable(name_or_path: str, revision: str | None = None, timeout_s: float = 3.0) -> None:
    """Fail at once, saying what to do, when a hub model is neither cached nor downloadable.

    Without this, an offline machine spends most of a minute in the hub client's retries.
    """
    if Path(name_or_path).exists():
        return
    if name_or_path.startswith(("/", "./", "../", "~", "\\")) or (os.sep != "/" and os.sep in name_or_path):
        raise ModelLoadError(
            f"Could not load optimizer model {name_or_path!r}: no such folder (hub ids look like 'namespace/name')"
        )
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name_or_path, "config.json", revision=revision), str):
            return  # cached: loads offline
    except Exception:  # an id the hub client rejects: let the loader say why
        return
    hint = "download it once on a machine with internet (it is then cached), or pass a local folder"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ModelLoadError(
            f"{name_or_path!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: {hint}"
        )
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as exc:
        raise ModelLoadError(f"{name_or_path!r} is not cached and {host} cannot be reached ({exc}): {hint}") from None


def _has_tokenizer(folder: str | os.PathLike[str]) -> bool:
    return any((Path(folder) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def _adapter_base(adapter: str) -> str:
    import json

    config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{adapter}/adapter_config.json names no base_model_name_or_path")
    from bpo_core.embedded import EMBEDDED_BASE_ID

    if base == EMBEDDED_BASE_ID:  # adapters trained on the embedded model name it, not a path
        from bpo_core.embedded import converted_base_dir

        return str(converted_base_dir())
    return str(base)


def merge_adapter(model: PreTrainedModel, adapter: str | os.PathLike[str]) -> PreTrainedModel:
    try:
        from peft import PeftModel
    except ImportError as exc:  # pragma: no cover - peft is a core dependency
        raise ModelLoadError("Loading a LoRA adapter needs 'peft': pip install peft") from exc
    try:
        # Merging removes the LoRA indirection: inference runs at the base model's speed.
        with warnings.catch_warnings():  # peft calls transformers APIs that warn of their own deprecation
            warnings.simplefilter("ignore", FutureWarning)
            return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except Exception as exc:
        raise ModelLoadError(f"Could not apply adapter {str(adapter)!r}: {exc}") from exc
