"""Copy a trained LoRA adapter into the package (fp16 weights, no tokenizer copy).

Usage: python scripts/ship_adapter.py runs/ADAPTER_DIR

The learned addition guard (``addition_probe.json``) reads the hidden states of its layer, so it
belongs to the weights below that layer: it stays when those are unchanged (a self-training round
trained with ``--frozen-layers``), and is removed otherwise; then refit it on the new model's own
judged additions (``scripts/addition_probe.py``: candidates, blind, collect, fit). A probe in the
adapter's own folder (fitted there, e.g. ``fit-safety`` on a copy of the shipped one) ships with it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bpo_core.addition_probe import PROBE_FILE, AdditionProbe
from bpo_core.default_model import SHIPPED_ADAPTER
from bpo_core.training.sft import layer_index


def main(src: str) -> None:
    source = Path(src)
    SHIPPED_ADAPTER.mkdir(parents=True, exist_ok=True)
    shipped = SHIPPED_ADAPTER / "adapter_model.safetensors"
    before = load_file(str(shipped)) if shipped.is_file() else {}
    before_config = _config(SHIPPED_ADAPTER / "adapter_config.json") if before else None
    # fp16 halves the size (peft casts adapters back to the base model's dtype when loading).
    weights = {
        k: v.to(torch.float16).contiguous() for k, v in load_file(str(source / "adapter_model.safetensors")).items()
    }
    save_file(weights, str(shipped))
    shutil.copy(source / "adapter_config.json", SHIPPED_ADAPTER / "adapter_config.json")
    shutil.copy(source / "bpo_training.json", SHIPPED_ADAPTER / "bpo_training.json")
    info = json.loads((source / "bpo_training.json").read_text())
    print(json.dumps(info["metrics"], indent=2))
    probe = SHIPPED_ADAPTER / PROBE_FILE
    if (source / PROBE_FILE).is_file():  # fitted in the adapter's folder, so for these weights
        shutil.copy(source / PROBE_FILE, probe)
        print(f"shipped {probe.name} from {source}")
    elif probe.is_file():
        layer = AdditionProbe.load(probe).layer
        same_config = _config(SHIPPED_ADAPTER / "adapter_config.json") == before_config
        if same_config and _below(before, layer) == _below(weights, layer):
            print(f"kept {probe.name}: the weights of the {layer} layers it reads are unchanged")
        else:
            probe.unlink()
            print(f"removed {probe.name}: it was fitted on the previous weights; refit it (scripts/addition_probe.py)")
    print(f"shipped to {SHIPPED_ADAPTER}")


def _config(path: Path) -> dict:
    """An adapter config, compared as settings (peft writes ``target_modules``, a set, in any order)."""
    config = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    return config


def _below(weights: dict[str, torch.Tensor], layer: int) -> dict[str, bytes]:
    """The adapter tensors of the decoder layers under ``layer`` (what a probe at ``layer`` reads), as bytes."""
    below = {name: t for name, t in weights.items() if (index := layer_index(name)) is None or index < layer}
    return {name: t.to(torch.float16).numpy().tobytes() for name, t in below.items()}


if __name__ == "__main__":
    main(sys.argv[1])
