"""The ``bpo`` command line: optimize prompts, train an optimizer, evaluate one."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="bpo",
    help="Black-box Prompt Optimization: rewrite prompts so LLMs answer them better.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Optimizer checkpoint (hub id like THUDM/BPO, or a folder). Default: embedded."),
]
ModeOpt = Annotated[str, typer.Option("--mode", help="greedy | stable | aggressive")]


def _optimizer(model: str | None, **options):
    from bpo_core import BPOOptimizer

    if model:
        return BPOOptimizer.from_pretrained(model, **options)
    return BPOOptimizer.default(**options)


@app.command()
def optimize(
    prompts: Annotated[Optional[list[str]], typer.Argument(help="Prompts to optimize; '-' reads lines from stdin.")] = None,
    model: ModelOpt = None,
    mode: ModeOpt = "greedy",
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of iterative optimization.")] = 1,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON result per prompt.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    input_file: Annotated[Optional[Path], typer.Option("--input", help="JSONL dataset to rewrite (resumable).")] = None,
    field: Annotated[str, typer.Option(help="With --input: the field to rewrite.")] = "instruction",
    output_file: Annotated[Optional[Path], typer.Option("--output", help="With --input: JSONL output.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per batched generation.")] = 16,
) -> None:
    """Optimize prompts given as arguments (or stdin lines) and print the rewrites.

    With --input/--output, rewrite one field of every record of a JSONL dataset; re-running
    after an interruption resumes where it stopped.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    if input_file is not None:
        if output_file is None:
            raise typer.BadParameter("--input needs --output")
        from bpo_core.bulk import optimize_file
        from bpo_core.errors import DataFormatError

        opt = _optimizer(model, mode=mode, rounds=rounds, max_new_tokens=max_new_tokens)
        try:
            counts = optimize_file(opt, input_file, output_file, field=field, batch_size=batch_size)
        except DataFormatError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        console.print(json.dumps(counts))
        return
    items = list(prompts or [])
    if items == ["-"] or not items:
        if sys.stdin.isatty() and not items:
            raise typer.BadParameter("give prompts as arguments, or '-' to read them from stdin")
        items = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    opt = _optimizer(model, mode=mode, rounds=rounds, max_new_tokens=max_new_tokens)
    for res in opt.rewrite_batch(items):
        if as_json:
            print(json.dumps(res.to_dict(), ensure_ascii=False))
        else:
            print(res.optimized)
            if verbose and res.reason:
                console.print(f"[dim]  (kept original: {res.reason})[/dim]")


@app.command()
def train(
    data: Annotated[list[Path], typer.Option("--data", "-d", help="JSON/JSONL pair files (repeatable).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the trained adapter/model.")],
    base: Annotated[str, typer.Option(help="Base model; default: the embedded SmolLM2-135M-Instruct.")] = "embedded:smollm2-135m-instruct",
    epochs: float = 3.0,
    learning_rate: Annotated[float, typer.Option("--lr")] = 5e-4,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int = 384,
    full: Annotated[bool, typer.Option("--full", help="Full fine-tuning instead of LoRA.")] = False,
    lora_r: int = 16,
    lora_alpha: int = 32,
    merge: Annotated[bool, typer.Option(help="Save a merged model instead of a LoRA adapter.")] = False,
    eval_fraction: float = 0.1,
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint of this output.")] = False,
    max_steps: int = -1,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch.")] = None,
) -> None:
    """Fine-tune an optimizer on (prompt -> optimized prompt) pairs (LoRA by default)."""
    from bpo_core.errors import DataFormatError
    from bpo_core.training import load_pairs
    from bpo_core.training.sft import TrainConfig, train as run_training

    logging.basicConfig(level=logging.INFO)
    try:
        pairs = [p for path in data for p in load_pairs(path)]
    except DataFormatError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    config = TrainConfig(
        base=base,
        output_dir=str(output),
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        full_finetune=full,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        merge=merge,
        eval_fraction=eval_fraction,
        seed=seed,
        resume=resume,
        max_steps=max_steps,
        num_threads=threads,
    )
    try:
        info = run_training(pairs, config)
    except FileExistsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print_json(json.dumps(info["metrics"]))
    console.print(f"saved to {output}; load it with BPOOptimizer.from_pretrained({str(output)!r})")


@app.command("eval")
def evaluate(
    intrinsic: Annotated[bool, typer.Option("--intrinsic", help="Reference-based figures against teacher rewrites.")] = False,
    data: Annotated[Optional[Path], typer.Option(help="Reference pairs (default: the shipped BPO test split).")] = None,
    model: ModelOpt = None,
    mode: ModeOpt = "greedy",
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N records.")] = None,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    output: Annotated[Optional[Path], typer.Option(help="Write rewrites and scores as JSON here.")] = None,
) -> None:
    """Evaluate an optimizer. ``--intrinsic``: ROUGE-L vs teacher rewrites, context kept, changed."""
    if not intrinsic:
        raise typer.BadParameter("choose an evaluation: --intrinsic")
    from bpo_core.datasets import test_set_path
    from bpo_core.evaluation.intrinsic import as_dict, evaluate as run_eval

    path = data or test_set_path("bpo_test")
    opt = _optimizer(model, mode=mode, max_new_tokens=max_new_tokens)
    scores = run_eval(opt.optimize_batch, path, limit=limit, batch_size=batch_size)
    table = Table(title=f"Intrinsic quality on {path.name}")
    for col in ("prompts", "ROUGE-L F1", "context kept", "changed", "empty"):
        table.add_column(col)
    for name in ("unchanged", "optimizer"):
        s = scores[name]
        table.add_row(name, f"{s.rouge_l:.3f}", f"{s.context_kept}/{s.multi_line}", f"{s.changed}/{s.total}", str(s.empty))
    Console().print(table)
    if output:
        payload = {k: as_dict(v) for k, v in scores.items() if not k.startswith("_")}
        payload["rewrites"] = scores["_rewrites"]
        output.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"quality {scores['optimizer'].line()}")


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind (default: loopback only).")] = "127.0.0.1",
    port: int = 8000,
    max_wait_ms: Annotated[float, typer.Option(help="Micro-batching wait for concurrent requests.")] = 5.0,
    max_batch_size: int = 16,
    model_name: Annotated[str, typer.Option(help="Model id reported by /v1/models.")] = "bpo",
) -> None:
    """Serve the optimizer over an OpenAI-compatible API (/v1/completions, /v1/optimize)."""
    import uvicorn

    from bpo_core.server import create_app

    opt = _optimizer(model)
    app_ = create_app(opt, model_name=model_name, max_wait_ms=max_wait_ms, max_batch_size=max_batch_size)
    uvicorn.run(app_, host=host, port=port, log_level="info")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
