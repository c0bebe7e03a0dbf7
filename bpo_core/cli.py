"""The ``bpo`` command line: optimize prompts, train an optimizer, evaluate one."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bpo_core.embedded import EMBEDDED_BASE_ID

app = typer.Typer(
    name="bpo",
    help="Black-box Prompt Optimization: rewrite prompts so LLMs answer them better.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
# Boolean flags pass metavar="": typer 0.29 would print "<bool>" after each of them in --help.

ModeOpt = Annotated[str, typer.Option("--mode", help="greedy | stable | aggressive")]
StyleOpt = Annotated[
    str,
    typer.Option(
        "--style",
        help="augment (keep the prompt, append guidance) | rewrite (rewrite the instruction) | auto (the model's own).",
    ),
]


ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Optimizer: 'embedded' (default), a hub id like THUDM/BPO or a folder, or chat:<chat model spec>.",
    ),
]
DtypeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--dtype",
        help="Local optimizer weights: auto (float32 on CPU, bfloat16 on GPU), float32 or bfloat16 "
        "(about 1.6x the batched throughput on CPUs with AMX, many times slower on CPUs without it; "
        "rewrites may differ slightly).",
    ),
]
ChatSpecHelp = "Chat model: module:attribute, file.py:attribute, or provider:model (e.g. openai:gpt-4o-mini)."


def _optimizer(model: str | None, dtype: str | None = None, **options):
    from bpo_core import BPOOptimizer
    from bpo_core.config import OptimizerConfig

    if dtype not in (None, "auto", "float32", "bfloat16", "float16"):
        raise typer.BadParameter(f"--dtype must be auto, float32, bfloat16 or float16, not {dtype!r}")
    try:  # bad options are usage errors (exit 2), found before any model loads
        OptimizerConfig(**options)
    except ValueError as exc:
        raise typer.BadParameter(_first_error(exc)) from None
    if not model or model == "embedded":
        return BPOOptimizer.default(dtype=dtype, **options)
    if model.startswith("chat:"):
        if dtype not in (None, "auto"):
            raise typer.BadParameter("--dtype applies to local optimizer models, not chat:")
        return BPOOptimizer.from_chat_model(_chat_model(model[len("chat:") :]), **options)
    return BPOOptimizer.from_pretrained(model, dtype=dtype, **options)


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg'].removeprefix('Value error, ')}"
    return str(exc)


def _chat_model(spec: str):
    from bpo_core.chat import resolve_chat_model

    try:
        return resolve_chat_model(spec)
    except (ValueError, TypeError, ImportError) as exc:
        raise typer.BadParameter(str(exc)) from exc


def _policy(concurrency: int, rpm: float | None, max_retries: int, timeout: float | None, backoff: float = 1.0):
    from bpo_core.policy import CallPolicy

    return CallPolicy(
        concurrency=concurrency, requests_per_minute=rpm, max_retries=max_retries, timeout_s=timeout, backoff_s=backoff
    )


@contextlib.contextmanager
def _user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Turn errors in the user's input into a one-line message and exit status 2."""
    try:
        yield
    except kinds as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def render_diff(res) -> Text:
    """A word-level diff of ``res.original`` and ``res.optimized``: removed red and struck, added green."""
    import difflib
    import re

    from rich.text import Text

    old, new = re.split(r"(\s+)", res.original), re.split(r"(\s+)", res.optimized)
    out = Text()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append("".join(old[i1:i2]), style="red strike")
        if op in ("insert", "replace"):
            out.append("".join(new[j1:j2]), style="green")
        if op == "equal":
            out.append("".join(old[i1:i2]))
    label = f"[{res.style}]" if res.changed else f"[unchanged: {res.reason or 'no change'}]"
    out.append(f"\n{label}\n", style="dim")
    return out


def _field_map(items: list[str] | None) -> dict[str, str]:
    mapping = {}
    for item in items or []:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise typer.BadParameter(f"--field takes ours=theirs, e.g. instruction=question; got {item!r}")
        mapping[ours.strip()] = theirs.strip()
    return mapping


@app.command()
def optimize(
    prompts: Annotated[
        Optional[list[str]], typer.Argument(help="Prompts to optimize; '-' reads lines from stdin.")
    ] = None,
    model: ModelOpt = None,
    style: StyleOpt = "auto",
    mode: ModeOpt = "greedy",
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of iterative optimization.")] = 1,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON result per prompt.", metavar="")] = False,
    diff: Annotated[
        bool, typer.Option("--diff", help="Show a coloured word diff of each prompt and its rewrite.", metavar="")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", metavar="")] = False,
    input_file: Annotated[Optional[Path], typer.Option("--input", help="JSONL dataset to rewrite (resumable).")] = None,
    field: Annotated[str, typer.Option(help="With --input: the field to rewrite.")] = "instruction",
    output_file: Annotated[Optional[Path], typer.Option("--output", help="With --input: JSONL output.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per batched generation.")] = 64,
    dtype: DtypeOpt = None,
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

        opt = _optimizer(model, dtype, style=style, mode=mode, rounds=rounds, max_new_tokens=max_new_tokens)
        with _user_errors(DataFormatError):
            counts = optimize_file(opt, input_file, output_file, field=field, batch_size=batch_size)
        console.print(json.dumps(counts))
        return
    items = list(prompts or [])
    if items == ["-"] or not items:
        if sys.stdin.isatty() and not items:
            raise typer.BadParameter("give prompts as arguments, or '-' to read them from stdin")
        items = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not items:
            raise typer.BadParameter("no prompts: stdin was empty")
    opt = _optimizer(model, dtype, style=style, mode=mode, rounds=rounds, max_new_tokens=max_new_tokens)
    for res in opt.rewrite_batch(items):
        if as_json:
            print(json.dumps(res.to_dict(), ensure_ascii=False))
            continue
        if diff:
            Console().print(render_diff(res))
            continue
        print(res.optimized)
        if res.reason and (verbose or not res.changed):  # say why a prompt came back as it was
            console.print(
                f"[dim]  (kept as it was: {res.reason})[/dim]" if not res.changed else f"[dim]  ({res.reason})[/dim]"
            )


@app.command()
def train(
    data: Annotated[list[Path], typer.Option("--data", "-d", help="JSON/JSONL pair files (repeatable).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the trained adapter/model.")],
    base: Annotated[
        str, typer.Option(help="Base model; default: the embedded SmolLM2-135M-Instruct.")
    ] = EMBEDDED_BASE_ID,
    epochs: float = 3.0,
    learning_rate: Annotated[float, typer.Option("--lr")] = 5e-4,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int = 384,
    full: Annotated[bool, typer.Option("--full", help="Full fine-tuning instead of LoRA.", metavar="")] = False,
    lora_r: int = 16,
    lora_alpha: int = 32,
    merge: Annotated[bool, typer.Option(help="Save a merged model instead of a LoRA adapter.", metavar="")] = False,
    eval_fraction: float = 0.1,
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint of this output.", metavar="")] = False,
    max_steps: int = -1,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch.")] = None,
    init_adapter: Annotated[
        Optional[Path], typer.Option(help="Continue training this LoRA adapter (e.g. a self-training round).")
    ] = None,
    frozen_layers: Annotated[
        int,
        typer.Option(help="Keep the first N decoder layers as they are (a learned guard reading layer N stays valid)."),
    ] = 0,
) -> None:
    """Fine-tune an optimizer on (prompt -> optimized prompt) pairs (LoRA by default)."""
    from bpo_core.errors import DataFormatError
    from bpo_core.training import load_pairs
    from bpo_core.training.sft import TrainConfig
    from bpo_core.training.sft import train as run_training

    logging.basicConfig(level=logging.INFO)
    with _user_errors(DataFormatError):
        pairs = [p for path in data for p in load_pairs(path)]
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
        init_adapter=None if init_adapter is None else str(init_adapter),
        frozen_layers=frozen_layers,
    )
    with _user_errors(FileExistsError):
        info = run_training(pairs, config)
    console.print_json(json.dumps(info["metrics"]))
    console.print(f"saved to {output}; load it with BPOOptimizer.from_pretrained({str(output)!r})")


@app.command()
def construct(
    inputs: Annotated[
        list[Path], typer.Argument(help="Feedback files: BPO records, HH-RLHF (.jsonl/.jsonl.gz) or mapped JSONL.")
    ],
    teacher: Annotated[str, typer.Option("--teacher", "-t", help=ChatSpecHelp)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Pairs JSONL (appended; re-running resumes).")],
    rejects: Annotated[Optional[Path], typer.Option(help="Rejects JSONL (default: <output>.rejects.jsonl).")] = None,
    input_format: Annotated[str, typer.Option("--format", help="auto | bpo | hh | jsonl")] = "auto",
    field: Annotated[
        Optional[list[str]],
        typer.Option("--field", help="Field mapping ours=theirs (instruction, context, good_res, bad_res)."),
    ] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use only the first N records of each file.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Teacher calls in flight.")] = 4,
    rpm: Annotated[Optional[float], typer.Option(help="Start at most this many teacher calls a minute.")] = None,
    max_retries: Annotated[int, typer.Option(min=0)] = 4,
    backoff: Annotated[float, typer.Option(min=0, help="First retry delay in seconds (doubles each retry).")] = 1.0,
    timeout: Annotated[
        Optional[float], typer.Option(help="Seconds before one teacher call is abandoned (and retried).")
    ] = None,
    max_shrink: Annotated[float, typer.Option(help="Drop rewrites with under 1/N of the instruction's words.")] = 2.0,
    max_growth: Annotated[float, typer.Option(help="Drop rewrites with over N times the instruction's words.")] = 6.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.", metavar="")] = True,
) -> None:
    """Build (prompt -> optimized prompt) training pairs from preference feedback with a teacher chat model.

    The teacher gets the authors' comparison prompt for each record; answers are parsed and
    filtered as the authors do. The output feeds `bpo train --data`.
    """
    from bpo_core.errors import DataFormatError
    from bpo_core.pipeline.construct import ConstructFilters, default_rejects_path
    from bpo_core.pipeline.construct import construct as run_construct
    from bpo_core.pipeline.feedback import read_feedback

    if input_format not in ("auto", "bpo", "hh", "jsonl"):
        raise typer.BadParameter(f"--format must be auto, bpo, hh or jsonl; got {input_format!r}")
    mapping = _field_map(field)
    items, skipped = [], []
    with _user_errors(DataFormatError):
        for path in inputs:
            good, bad = read_feedback(path, format=input_format, fields=mapping or None, limit=limit)  # type: ignore[arg-type]
            items += good
            skipped += bad
    chat = _chat_model(teacher)
    with _user_errors(DataFormatError):
        stats = run_construct(
            items,
            chat,
            output,
            rejects=rejects,
            skipped=skipped,
            policy=_policy(concurrency, rpm, max_retries, timeout, backoff),
            filters=ConstructFilters(max_shrink=max_shrink, max_growth=max_growth),
            progress=progress,
        )
    console.print(f"pairs: {output}  rejects: {rejects or default_rejects_path(output)}")
    print(json.dumps(stats.as_dict()))
    if stats.errors:
        console.print(
            f"[yellow]{stats.errors} record(s) failed after retries; run the same command again to retry them[/yellow]"
        )
        raise typer.Exit(1)


@app.command("eval")
def evaluate(
    intrinsic: Annotated[
        bool,
        typer.Option("--intrinsic", help="Reference-based figures against teacher rewrites (no judge).", metavar=""),
    ] = False,
    faithfulness: Annotated[
        bool,
        typer.Option(
            "--faithfulness", help="Judge-free faithfulness figures on labelled real prompts (no judge).", metavar=""
        ),
    ] = False,
    target: Annotated[
        Optional[str], typer.Option("--target", help=f"LLM that answers the prompts. {ChatSpecHelp}")
    ] = None,
    judge: Annotated[
        Optional[str], typer.Option("--judge", help=f"LLM that compares answers (pair-v2). {ChatSpecHelp}")
    ] = None,
    sets: Annotated[
        str,
        typer.Option(
            "--sets",
            help="Comma-separated shipped test sets (vicuna, dolly, self_instruct, bpo_test) or JSON/JSONL files.",
        ),
    ] = "vicuna",
    output_dir: Annotated[
        Optional[Path], typer.Option("--output-dir", "-o", help="Folder for records and reports (re-running resumes).")
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(
            help="--intrinsic: reference pairs (default: the shipped BPO test split); --faithfulness: labelled prompts (default: the shipped oneprompted validation split)."
        ),
    ] = None,
    model: ModelOpt = None,
    style: StyleOpt = "auto",
    mode: ModeOpt = "greedy",
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of iterative optimization.")] = 1,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N prompts of each set.")] = None,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    concurrency: Annotated[int, typer.Option(min=1, help="Target calls in flight.")] = 4,
    judge_concurrency: Annotated[int, typer.Option(min=1, help="Judge calls in flight.")] = 4,
    rpm: Annotated[Optional[float], typer.Option(help="Per model: start at most this many calls a minute.")] = None,
    max_retries: Annotated[int, typer.Option(min=0)] = 4,
    backoff: Annotated[float, typer.Option(min=0, help="First retry delay in seconds.")] = 1.0,
    timeout: Annotated[
        Optional[float], typer.Option(help="Seconds before one call is abandoned (and retried).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.", metavar="")] = True,
    output: Annotated[Optional[Path], typer.Option(help="--intrinsic: write rewrites and scores as JSON here.")] = None,
    dtype: DtypeOpt = None,
) -> None:
    """Evaluate an optimizer.

    Pairwise (--target, --judge, --output-dir): the target answers original and optimized prompts,
    the judge compares each pair in both orders; prints win/tie/lose per set and writes
    report.json, report.md and report.png. --intrinsic: ROUGE-L vs teacher rewrites, context kept.
    """
    if faithfulness:
        _faithfulness(
            data,
            _optimizer(model, dtype, style=style, mode=mode, max_new_tokens=max_new_tokens),
            limit,
            batch_size,
            output,
        )
        return
    if intrinsic:
        _intrinsic(data, model, dtype, style, mode, limit, batch_size, max_new_tokens, output)
        return
    if not (target and judge and output_dir):
        raise typer.BadParameter("pairwise evaluation needs --target, --judge and --output-dir (or use --intrinsic)")
    from bpo_core.datasets import load_test_set
    from bpo_core.errors import DataFormatError
    from bpo_core.evaluation.pairwise import PairwiseRun
    from bpo_core.evaluation.report import write_report

    with _user_errors(DataFormatError, ValueError):
        test_sets = {
            Path(name).stem if name.endswith((".json", ".jsonl")) else name: load_test_set(name, limit)
            for name in _names(sets)
        }
    target_chat, judge_chat = _chat_model(target), _chat_model(judge)
    opt = _optimizer(model, dtype, style=style, mode=mode, rounds=rounds, max_new_tokens=max_new_tokens)
    run = PairwiseRun(
        test_sets,
        opt,
        target_chat,
        judge_chat,
        output_dir,
        target_policy=_policy(concurrency, rpm, max_retries, timeout, backoff),
        judge_policy=_policy(judge_concurrency, rpm, max_retries, timeout, backoff),
        batch_size=batch_size,
        progress=progress,
        optimizer_name=model or None,
    )
    with _user_errors(DataFormatError):
        results = run.run()
    report = write_report(results, {k: len(v) for k, v in test_sets.items()}, run.config(), output_dir)
    table = Table(title="Optimized vs original prompts (judge: pair-v2, both orders)")
    for col in ("set", "n", "win", "tie", "lose", "win - lose [95% CI]", "unchanged", "invalid", "pending"):
        table.add_column(col)
    for s in report["sets"]:
        lo, hi = s["delta_ci"]
        table.add_row(
            s["name"],
            str(s["n"]),
            f"{100 * s['win_rate']:.1f}%",
            f"{100 * s['tie_rate']:.1f}%",
            f"{100 * s['lose_rate']:.1f}%",
            f"{100 * s['delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
            str(s["unchanged"]),
            str(s["invalid"]),
            str(s["pending"]),
        )
    Console().print(table)
    files = report["files"]
    console.print(
        f"reports: {files['json']}, {files['markdown']}"
        + (f", {files['chart']}" if files["chart"] else " (install bpo-prompt[eval] for the chart)")
    )
    if run.failures:
        console.print(
            f"[yellow]{len(run.failures)} prompt(s) failed after retries; run the same command again to finish them[/yellow]"
        )
        raise typer.Exit(1)


def _names(sets: str) -> list[str]:
    names = [n.strip() for n in sets.split(",") if n.strip()]
    if not names:
        raise typer.BadParameter("--sets is empty")
    return names


def _faithfulness(data, opt, limit, batch_size, output) -> None:
    from bpo_core.evaluation.faithfulness import DEFAULT_SET, evaluate_faithfulness, write_rows

    figures, rows = evaluate_faithfulness(opt, data, limit=limit, batch_size=batch_size)
    table = Table(title=f"Faithfulness on {(data or DEFAULT_SET).name} ({figures['n']} prompts)")
    table.add_column("figure")
    table.add_column("result")
    for key in ("changed", "material_kept", "prompt_kept", "specifics_kept", "novel_specifics", "task_kept"):
        f = figures[key]
        table.add_row(
            key.replace("_", " "), "n/a" if f["rate"] is None else f"{100 * f['rate']:.1f}% ({f['hits']}/{f['total']})"
        )
    table.add_row("mean words added", str(figures["mean_words_added"]))
    table.add_row("styles", ", ".join(f"{k}: {v}" for k, v in figures["styles"].items()) or "-")
    table.add_row("kept unchanged", ", ".join(f"{k}: {v}" for k, v in sorted(figures["kept_unchanged"].items())) or "-")
    seg = figures["segmentation"]
    table.add_row(
        "segmentation",
        f"exact {100 * seg['exact']:.1f}%, abstained {100 * seg['abstained']:.1f}%, exposed {100 * seg['exposed']:.1f}%",
    )
    Console().print(table)
    if output:
        write_rows(output, figures, rows)
    flat = {k: v["rate"] for k, v in figures.items() if isinstance(v, dict) and "rate" in v}
    print("faithfulness " + " ".join(f"{k}={v}" for k, v in flat.items()) + f" segmentation_exact={seg['exact']}")


def _intrinsic(data, model, dtype, style, mode, limit, batch_size, max_new_tokens, output) -> None:
    from bpo_core.datasets import test_set_path
    from bpo_core.evaluation.intrinsic import as_dict
    from bpo_core.evaluation.intrinsic import evaluate as run_eval

    path = data or test_set_path("bpo_test")
    opt = _optimizer(model, dtype, style=style, mode=mode, max_new_tokens=max_new_tokens)
    scores = run_eval(opt.optimize_batch, path, limit=limit, batch_size=batch_size)
    table = Table(title=f"Intrinsic quality on {path.name}")
    for col in ("prompts", "ROUGE-L F1", "context kept", "changed", "empty"):
        table.add_column(col)
    for name in ("unchanged", "optimizer"):
        s = scores[name]
        table.add_row(
            name, f"{s.rouge_l:.3f}", f"{s.context_kept}/{s.multi_line}", f"{s.changed}/{s.total}", str(s.empty)
        )
    Console().print(table)
    if output:
        payload: dict[str, Any] = {k: as_dict(v) for k, v in scores.items() if not k.startswith("_")}
        payload["rewrites"] = scores["_rewrites"]
        output.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"quality {scores['optimizer'].line()}")


@app.command("export-gguf")
def export_gguf_command(
    out: Annotated[Path, typer.Argument(help="The .gguf file to write.")],
    gguf_type: Annotated[str, typer.Option("--type", help="Q8_0 (about 145 MB), F16 or F32 (exact).")] = "Q8_0",
    adapter: Annotated[
        Optional[Path], typer.Option(help="An adapter trained on the embedded base (default: the shipped one).")
    ] = None,
) -> None:
    """Write the embedded optimizer (base model with its adapter merged) as GGUF, for llama.cpp.

    The file keeps SmolLM2's chat template; the optimizer's system prompts are stored under
    bpo.system_prompt.augment and bpo.system_prompt.rewrite.
    """
    from bpo_core.embedded import find_gguf
    from bpo_core.errors import ModelLoadError
    from bpo_core.export import EXPORT_TYPES, export_gguf
    from bpo_core.formats import AUGMENT_SYSTEM_PROMPT, REWRITE_SYSTEM_PROMPT

    qtype = gguf_type.upper()
    if qtype not in EXPORT_TYPES:
        raise typer.BadParameter(f"must be one of {', '.join(EXPORT_TYPES)}, not {gguf_type!r}", param_hint="--type")
    with _user_errors(ModelLoadError):
        if adapter is None:
            from bpo_core.default_model import shared_default_backend

            backend = shared_default_backend()
        else:
            from bpo_core.backends.hf import HFBackend

            backend = HFBackend.from_pretrained(adapter)
    prompts = {"bpo.system_prompt.augment": AUGMENT_SYSTEM_PROMPT, "bpo.system_prompt.rewrite": REWRITE_SYSTEM_PROMPT}
    with _user_errors(ValueError, OSError):
        path = export_gguf(backend.model, out, reference=find_gguf(), qtype=qtype, metadata=prompts)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB, {qtype})")


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind (default: loopback only).")] = "127.0.0.1",
    port: int = 8000,
    max_wait_ms: Annotated[float, typer.Option(help="Micro-batching wait for concurrent requests.")] = 5.0,
    max_batch_size: int = 16,
    model_name: Annotated[str, typer.Option(help="Model id reported by /v1/models.")] = "bpo",
    request_timeout: Annotated[
        Optional[float], typer.Option(help="Seconds after which a request answers 504 (default: only stalls).")
    ] = None,
    dtype: DtypeOpt = None,
    target: Annotated[
        Optional[str],
        typer.Option("--target", help=f"An LLM whose answers to both prompts the playground shows. {ChatSpecHelp}"),
    ] = None,
) -> None:
    """Serve the optimizer over an OpenAI-compatible API (/v1/completions, /v1/optimize) and a playground at /."""
    import uvicorn

    from bpo_core.server import create_app

    target_chat = _chat_model(target) if target else None  # a bad spec is a usage error, before loading
    opt = _optimizer(model, dtype)
    app_ = create_app(
        opt,
        model_name=model_name,
        max_wait_ms=max_wait_ms,
        max_batch_size=max_batch_size,
        request_timeout_s=request_timeout,
        target=target_chat,
    )
    uvicorn.run(app_, host=host, port=port, log_level="info")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
