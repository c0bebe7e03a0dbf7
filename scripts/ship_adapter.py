"""Copy a trained LoRA adapter into the package (fp16 weights, no tokenizer copy).

Usage: python scripts/ship_adapter.py runs/ADAPTER_DIR

The learned addition guard (``addition_probe.json``) belongs to the weights it was fitted on:
new weights remove it; refit it on the new model's own judged additions
(``scripts/addition_probe.py``: candidates, blind, collect, fit).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bpo_core.addition_probe import PROBE_FILE
from bpo_core.default_model import SHIPPED_ADAPTER


def main(src: str) -> None:
    source = Path(src)
    SHIPPED_ADAPTER.mkdir(parents=True, exist_ok=True)
    shipped = SHIPPED_ADAPTER / "adapter_model.safetensors"
    before = hashlib.sha256(shipped.read_bytes()).hexdigest() if shipped.is_file() else None
    weights = load_file(str(source / "adapter_model.safetensors"))
    # fp16 halves the size (peft casts adapters back to the base model's dtype when loading).
    save_file(
        {k: v.to(torch.float16).contiguous() for k, v in weights.items()},
        str(SHIPPED_ADAPTER / "adapter_model.safetensors"),
    )
    shutil.copy(source / "adapter_config.json", SHIPPED_ADAPTER / "adapter_config.json")
    shutil.copy(source / "bpo_training.json", SHIPPED_ADAPTER / "bpo_training.json")
    info = json.loads((source / "bpo_training.json").read_text())
    print(json.dumps(info["metrics"], indent=2))
    probe = SHIPPED_ADAPTER / PROBE_FILE
    if probe.is_file() and hashlib.sha256(shipped.read_bytes()).hexdigest() != before:
        probe.unlink()
        print(f"removed {probe.name}: it was fitted on the previous weights; refit it (scripts/addition_probe.py)")
    print(f"shipped to {SHIPPED_ADAPTER}")


if __name__ == "__main__":
    main(sys.argv[1])
