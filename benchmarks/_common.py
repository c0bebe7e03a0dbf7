"""Shared set-up for the benchmark scripts (run them as scripts: they print figures)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BPO_TEST = ROOT / "bpo_core" / "data" / "bpo_test.json"


def test_prompts(n: int) -> list[str]:
    return [r["prompt"] for r in json.loads(BPO_TEST.read_text(encoding="utf-8"))[:n]]


def machine_line() -> str:
    import torch

    return (
        f"machine: {platform.machine()} cpus={os.cpu_count()} torch={torch.__version__} "
        f"threads={torch.get_num_threads()} cuda={torch.cuda.is_available()}"
    )


def wait_for_half_weights(backend: Any, timeout_s: float = 120.0) -> str:
    """Let the engine finish packing its fp16 weight copies (idle work) before timing."""
    lean = backend._continuous_decoder().lean
    if not lean.half_weights:
        return "off"
    start = time.monotonic()
    while not (lean._half is not None and lean._half.ready) and time.monotonic() - start < timeout_s:
        time.sleep(0.05)
    return f"packed (waited {time.monotonic() - start:.1f} s)"
