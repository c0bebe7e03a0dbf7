"""Single-call latency: what one ``BPORunnable.invoke`` adds, one prompt at a time, cache off.

The same prompts then go through the same optimizer with llama.cpp as its engine, on the same
weights: our merged optimizer exported to GGUF (``bpo_core.export``; F32 by default, so both
engines compute with identical weights), the same template tokens, the same add-or-nothing
decision, greedy decoding and the same token limit. Only the engine differs, so the ratio of the
two medians is the engine's share of the latency.

Setup for the llama.cpp half (optional; builds from source, 4-10 minutes):
    pip install -e '.[bench]'
Usage: python benchmarks/latency.py [--n 60] [--rounds 2] [--gguf-type F32] [--no-llamacpp]
Last lines: ``latency_p50_ms=<ours>`` and ``vs_llamacpp=<llama.cpp p50 / ours p50>``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_line, test_prompts, wait_for_half_weights

from bpo_core import BPOOptimizer
from bpo_core.default_model import shared_default_backend
from bpo_core.formats import PromptFormat
from bpo_core.generation import GenerationSettings


class LlamaCppBackend:
    """The optimizer's Backend protocol on llama-cpp-python, one prompt at a time.

    Prompts are encoded with our tokenizer and template (identical token ids); the KV of the
    longest prefix shared with the previous call is kept, as our engine keeps the template's.
    Greedy only, with the same add-or-nothing decision on the first step as our engine.
    """

    scores_stopping = True
    default_style = "augment"

    def __init__(self, gguf_path: Path, like: Any, threads: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf_path), n_ctx=2048, n_batch=512, n_threads=threads, verbose=False)
        self.tokenizer, self.default_format = like.tokenizer, like.default_format
        self.name = f"llama.cpp:{gguf_path.name}"
        self.eos = like.tokenizer.eos_token_id

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: list[str], fmt: PromptFormat, settings: GenerationSettings) -> list[str]:
        if settings.do_sample:
            raise ValueError("this benchmark backend decodes greedily only")
        out = []
        for prompt in prompts:
            tokens = self._greedy(fmt.encode(prompt, self.tokenizer), settings)
            out.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return out

    def _logits(self) -> Any:
        import numpy as np

        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))

    def _greedy(self, ids: list[int], settings: GenerationSettings) -> list[int]:
        import numpy as np

        llm = self.llm
        previous = llm.input_ids[: llm.n_tokens].tolist()
        shared = 0
        while shared < min(len(previous), len(ids) - 1) and previous[shared] == ids[shared]:
            shared += 1
        llm.n_tokens = shared  # llm.eval drops the cache past n_tokens
        llm.eval(ids[shared:])
        logits = self._logits().astype(np.float64)
        if settings.nothing_above is not None:
            p = np.exp(logits - logits.max())
            if p[self.eos] / p.sum() >= settings.nothing_above:
                return []
            logits[self.eos] = -np.inf
        tokens = [int(logits.argmax())]
        while len(tokens) < settings.max_new_tokens:
            llm.eval([tokens[-1]])
            token = int(self._logits().argmax())
            if token == self.eos:
                break
            tokens.append(token)
        return tokens


def timed_invokes(runnable: Any, prompts: list[str]) -> tuple[list[float], list[str]]:
    times, outputs = [], []
    for prompt in prompts:
        start = time.perf_counter()
        outputs.append(runnable.invoke(prompt))
        times.append(time.perf_counter() - start)
    return times, outputs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summary(name: str, per_prompt: list[float], outputs: list[str], prompts: list[str]) -> str:
    ms = [t * 1000 for t in per_prompt]
    changed = sum(o != p for o, p in zip(outputs, prompts))
    return (
        f"{name}: p50={statistics.median(ms):.0f}ms p90={percentile(ms, 0.9):.0f}ms max={max(ms):.0f}ms "
        f"mean={statistics.mean(ms):.0f}ms changed={changed}/{len(prompts)}"
    )


def run_engine(engine: str, n: int, gguf: str | None, add_below: float | None = None) -> dict[str, Any]:
    """Time one pass over the prompts on one engine, in this process (a child of :func:`main`)."""
    from langchain_bpo import BPORunnable

    prompts = test_prompts(n)
    options = {} if add_below is None else {"add_below": add_below}
    if engine == "ours":
        backend = shared_default_backend()
        optimizer = BPOOptimizer(backend, cache=False, **options)
        BPORunnable(optimizer=optimizer).invoke("Explain how tides work.")  # warm-up: template KV
        note = f"fp16 weight copies: {wait_for_half_weights(backend)}"
    else:  # no torch model here: its threads would compete with llama.cpp's for the cores
        import os

        from transformers import AutoTokenizer

        from bpo_core.embedded import converted_base_dir
        from bpo_core.formats import ChatFormat

        like = argparse.Namespace(
            tokenizer=AutoTokenizer.from_pretrained(str(converted_base_dir())), default_format=ChatFormat()
        )
        path = Path(str(gguf))
        optimizer = BPOOptimizer(LlamaCppBackend(path, like, threads=os.cpu_count() or 1), cache=False, **options)
        note = f"llama.cpp on {path.name} ({path.stat().st_size / 1e6:.0f} MB)"
    runnable = BPORunnable(optimizer=optimizer)
    runnable.invoke("Explain how tides work.")
    times, outputs = timed_invokes(runnable, prompts)
    return {"times": times, "outputs": outputs, "note": note}


def main() -> None:
    import json
    import subprocess
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60, help="BPO-test prompts (at least 50 for the issue's figures)")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the prompts per engine, alternating")
    ap.add_argument("--gguf-type", default="F32", help="F32 (same weights), F16 or Q8_0")
    ap.add_argument("--no-llamacpp", action="store_true")
    ap.add_argument("--add-below", type=float, help="the optimizer's add_below (default: its default)")
    ap.add_argument("--engine", choices=["ours", "llamacpp"], help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--gguf", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:
        print(json.dumps(run_engine(args.engine, args.n, args.gguf, args.add_below)))
        return

    engines = ["ours"]
    if not args.no_llamacpp:
        try:
            import llama_cpp  # noqa: F401

            engines.append("llamacpp")
        except ImportError:
            print("llama-cpp-python is not installed (pip install -e '.[bench]'): llama.cpp skipped")
    gguf = None
    if "llamacpp" in engines:  # exported here, once: our merged optimizer, as llama.cpp reads it
        from bpo_core.embedded import find_gguf
        from bpo_core.export import export_gguf

        folder = Path(tempfile.mkdtemp(prefix="bpo-latency-"))
        model = shared_default_backend().model
        gguf = export_gguf(model, folder / f"bpo-{args.gguf_type}.gguf", reference=find_gguf(), qtype=args.gguf_type)
    # One process per pass: two engines in one process fight over the two cores (llama.cpp's
    # threads spin after each call). Passes alternate engines; per prompt, the median of passes.
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    for _ in range(args.rounds):
        for engine in engines:
            cmd = [sys.executable, __file__, "--engine", engine, "--n", str(args.n), "--gguf", str(gguf)]
            cmd += ["--add-below", str(args.add_below)] if args.add_below is not None else []
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[engine].append(json.loads(done.stdout.strip().splitlines()[-1]))
    prompts = test_prompts(args.n)
    medians = {e: [statistics.median(col) for col in zip(*(r["times"] for r in rs))] for e, rs in runs.items()}
    print(machine_line())
    print(f"prompts={len(prompts)} rounds={args.rounds}; {'; '.join(rs[0]['note'] for rs in runs.values())}")
    print(summary("ours (BPORunnable.invoke)", medians["ours"], runs["ours"][0]["outputs"], prompts))
    line = f"latency_p50_ms={statistics.median(medians['ours']) * 1000:.0f}"
    if "llamacpp" in runs:
        theirs = medians["llamacpp"]
        print(summary(f"llama.cpp {args.gguf_type} (same invoke)", theirs, runs["llamacpp"][0]["outputs"], prompts))
        same = sum(a == b for a, b in zip(runs["ours"][0]["outputs"], runs["llamacpp"][0]["outputs"]))
        print(f"same rewrites: {same}/{len(prompts)}")
        print(f"p90 ratio (llama.cpp / ours): {percentile(theirs, 0.9) / percentile(medians['ours'], 0.9):.2f}")
        print(line)
        print(f"vs_llamacpp={statistics.median(theirs) / statistics.median(medians['ours']):.2f}")
    else:
        print(line)


if __name__ == "__main__":
    main()
