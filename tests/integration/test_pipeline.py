"""The authors' pipeline end to end: construct -> train -> eval, on real BPO and HH-RLHF data,
with deterministic LangChain fake chat models standing in for the paid APIs."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bpo_core.chat import FunctionChat, as_chat_model, resolve_chat_model
from bpo_core.cli import app
from bpo_core.errors import DataFormatError
from bpo_core.pipeline.construct import (
    AnswerParseError,
    ConstructFilters,
    parse_teacher_answer,
    teacher_prompt,
)
from bpo_core.pipeline.feedback import read_feedback, split_dialogue
from bpo_core.policy import Caller, CallPolicy, RateLimiter
from bpo_core.training import load_pairs
from tests import pipeline_fakes

DATA = Path(__file__).resolve().parents[1] / "data"
ROOT = Path(__file__).resolve().parents[2]
INPUTS = [DATA / "examples_ctx.json", DATA / "examples_no_ctx.json", DATA / "hh_harmless_test_40.jsonl.gz"]
N_INPUT = 2 + 2 + 40
FAKES = "tests.pipeline_fakes"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cli(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


# ------------------------------------------------------------------ parsing and filters
@pytest.mark.parametrize(
    ("answer", "optimized", "comparison", "ended"),
    [
        (
            "Detailed Comparison Result: A is better.\nOptimized Instruction: Explain X in detail. [END]",
            "Explain X in detail.",
            "A is better.",
            True,
        ),
        (
            'Detailed Comparison Result: ok\nOptimized Instruction: "Explain X, with examples." [END] trailing',
            "Explain X, with examples.",
            "ok",
            True,
        ),
        ("Optimized Instruction: Explain X step by step.", "Explain X step by step.", "", False),
        ("comparison\noptimized instruction: **Explain X** [END]", "Explain X", "comparison", True),
        # The authors eval() this text; a literal parse must never run it.
        (
            "Optimized Instruction: __import__('os').system('echo pwned') [END]",
            "__import__('os').system('echo pwned')",
            "",
            True,
        ),
    ],
)
def test_parse_teacher_answer(answer, optimized, comparison, ended):
    parsed = parse_teacher_answer(answer)
    assert (parsed.optimized, parsed.comparison, parsed.ended) == (optimized, comparison, ended)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty answer"),
        ("The good response is better.", "no 'Optimized Instruction:'"),
        ("Optimized Instruction:   [END]", "empty text"),
        ('Optimized Instruction: "" [END]', "empty text"),
    ],
)
def test_parse_teacher_answer_rejects_malformed(answer, reason):
    with pytest.raises(AnswerParseError, match=reason):
        parse_teacher_answer(answer)


def test_authors_filters():
    filters = ConstructFilters()
    assert filters.reason("one two three four", "one two three four five") is None
    assert "too short" in filters.reason("one two three four five", "one two")
    assert "too long" in filters.reason("one two", "w " * 13)
    assert "[protect" in filters.reason("keep this text", "[PROTECTED] keep this text please")


def test_teacher_prompt_is_the_authors():
    items, _ = read_feedback(DATA / "examples_ctx.json")
    assert items[0].context == ""  # an empty context field still gets the with-context prompt
    for item in items:
        prompt = teacher_prompt(item)
        assert prompt.startswith(
            f'instruction: "{item.instruction}"\ncontext:\n"{item.context}"\n\nbad response:\n"{item.bad_res}"'
        )
    assert "3.Don't change the context or add the context into the instruction" in prompt
    assert prompt.endswith("Optimized Instruction: xxx [END]")
    items, _ = read_feedback(DATA / "examples_no_ctx.json")
    assert "context:" not in teacher_prompt(items[0])
    assert "5.You should never generate a response to the original instruction!" in teacher_prompt(items[0])


# -------------------------------------------------------------------------- readers
def test_read_feedback_formats(tmp_path):
    ctx, skipped = read_feedback(DATA / "examples_ctx.json")
    assert len(ctx) == 2 and not skipped and [bool(item.context) for item in ctx] == [False, True]
    hh, skipped = read_feedback(DATA / "hh_harmless_test_40.jsonl.gz")
    assert len(hh) + len(skipped) == 40
    assert len(hh) == 10 and all("multi-turn" in s.reason for s in skipped)
    with gzip.open(DATA / "hh_harmless_test_40.jsonl.gz", "rt") as f:
        first = json.loads(f.readline())
    turns = split_dialogue(first["chosen"])
    assert turns[0][0] == "Human" and turns[-1][0] == "Assistant"
    # Generic JSONL with a field mapping.
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"question": "how to boil an egg", "chosen": "Boil 9 min.", "rejected": "no", "id": 7}) + "\n"
    )
    items, _ = read_feedback(path, fields={"instruction": "question", "good_res": "chosen", "bad_res": "rejected"})
    assert items[0].instruction == "how to boil an egg" and items[0].extra == {"id": 7}
    # Keys are stable across reads: resume depends on it.
    assert [i.key for i in read_feedback(DATA / "hh_harmless_test_40.jsonl.gz")[0]] == [i.key for i in hh]


def test_read_feedback_errors_name_the_problem(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(DataFormatError, match=r"odd.jsonl, line 1: cannot tell the format.*--field instruction="):
        read_feedback(path)
    with pytest.raises(DataFormatError, match="missing field 'chosen'"):
        read_feedback(path, fields={"instruction": "question", "good_res": "chosen", "bad_res": "answer"})
    with pytest.raises(DataFormatError, match="unknown field mapping"):
        read_feedback(path, fields={"prompt": "question"})


# ------------------------------------------------------------------------ construct
def test_construct_cli_end_to_end_feeds_train(tmp_path):
    out = tmp_path / "pairs.jsonl"
    result = cli("construct", *INPUTS, "--teacher", f"{FAKES}:Teacher", "--output", out, "--no-progress")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    pairs, rejects = read_jsonl(out), read_jsonl(tmp_path / "pairs.rejects.jsonl")
    # Every input record ends up in exactly one of the two files.
    keys = [r["key"] for r in pairs + rejects]
    assert len(keys) == len(set(keys)) == N_INPUT == stats["total"]
    assert stats["kept"] == len(pairs) and sum(stats["rejected"].values()) == len(rejects)
    ctx_pair = next(p for p in pairs if p["context"])
    assert ctx_pair["optimized_prompt"] == f"{ctx_pair['optimized_instruction']}\n{ctx_pair['context']}"
    assert ctx_pair["prompt"] == f"{ctx_pair['instruction']}\n{ctx_pair['context']}"
    assert all(p["comparison"] == "The good response is more helpful and harmless." for p in pairs)
    assert all(p["teacher"] == f"{FAKES}:Teacher" for p in pairs)
    # The authors' length filter dropped short instructions the fake teacher padded 6x+.
    assert any("too long" in r["reason"] for r in rejects) or all(len(p["instruction"].split()) > 1 for p in pairs)
    # `bpo train` reads the output: the context pair trains on the instruction alone.
    train_pairs = load_pairs(out)
    assert len(train_pairs) == len(pairs)
    by_prompt = {p.prompt: p.optimized for p in train_pairs}
    assert by_prompt[ctx_pair["instruction"]] == ctx_pair["optimized_instruction"]


def test_construct_malformed_answers_go_to_rejects(tmp_path):
    out = tmp_path / "pairs.jsonl"
    result = cli("construct", *INPUTS, "--teacher", f"{FAKES}:malformed_teacher", "-o", out, "--no-progress")
    assert result.exit_code == 0, result.output
    rejects = read_jsonl(tmp_path / "pairs.rejects.jsonl")
    bad = [r for r in rejects if r["reason"].startswith("unparseable answer")]
    assert bad and all(len(r["instruction"]) % 3 == 0 and "Optimized Instruction" not in r["answer"] for r in bad)
    assert not any(len(p["instruction"]) % 3 == 0 for p in read_jsonl(out))


def test_construct_retries_transient_errors(tmp_path):
    pipeline_fakes.FLAKY_SEEN.clear()
    before = pipeline_fakes.CALLS.get("flaky-failure", 0)
    out = tmp_path / "pairs.jsonl"
    result = cli(
        "construct",
        DATA / "examples_no_ctx.json",
        "--teacher",
        f"{FAKES}:FlakyTeacher",
        "-o",
        out,
        "--backoff",
        "0",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert pipeline_fakes.CALLS["flaky-failure"] - before == 2
    assert len(read_jsonl(out)) == 2


def test_construct_failed_records_are_retried_by_the_next_run(tmp_path):
    out = tmp_path / "pairs.jsonl"
    args = (
        DATA / "examples_ctx.json",
        DATA / "examples_no_ctx.json",
        "-o",
        out,
        "--backoff",
        "0",
        "--max-retries",
        "1",
        "--no-progress",
    )
    result = cli("construct", *args[:2], "--teacher", f"{FAKES}:BrokenTeacher", *args[2:])
    assert result.exit_code == 1 and "run the same command again" in result.output
    rejects = read_jsonl(tmp_path / "pairs.rejects.jsonl")
    assert len(rejects) == 4 and all(r["retryable"] and "ConnectionError" in r["reason"] for r in rejects)
    result = cli("construct", *args[:2], "--teacher", f"{FAKES}:Teacher", *args[2:])
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(out)) == 4


def test_construct_resumes_after_kill_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "pairs.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "bpo_core.cli",
        "construct",
        *map(str, INPUTS),
        "--teacher",
        f"{FAKES}:Teacher",
        "-o",
        str(out),
        "--concurrency",
        "1",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BPO_TEST_TEACHER_DELAY": "0.3"}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(read_jsonl(out))
    assert 3 <= written < 14, "the run should have been killed part-way"
    with out.open("a") as f:  # a torn line, as if killed mid-write
        f.write('{"key": "harmless-base_test.jsonl.gz#99:0000", "instruc')
    env["BPO_TEST_TEACHER_DELAY"] = "0"
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["already_done"] >= written
    keys = [r["key"] for r in read_jsonl(out) + read_jsonl(tmp_path / "pairs.rejects.jsonl")]
    assert len(keys) == len(set(keys)) == N_INPUT


def test_rate_limiter_spaces_calls():
    now = [100.0]
    limiter = RateLimiter(120, clock=lambda: now[0])  # one start every 0.5 s
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.5, 1.0]
    now[0] = 200.0
    assert limiter.reserve() == 0.0
    assert RateLimiter(None).interval == 0.0


async def test_caller_bounds_concurrency_and_gives_up_after_retries():
    import asyncio

    live, peak = 0, 0

    async def work():
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.01)
        live -= 1
        return 1

    caller = Caller(CallPolicy(concurrency=2))
    assert sum(await asyncio.gather(*(caller(work) for _ in range(8)))) == 8
    assert peak == 2
    attempts = 0

    async def failing():
        nonlocal attempts
        attempts += 1
        raise TimeoutError("slow")

    with pytest.raises(TimeoutError):
        await Caller(CallPolicy(max_retries=2, backoff_s=0))(failing)
    assert attempts == 3


# ----------------------------------------------------------------------------- eval
def eval_args(out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--target",
        f"{FAKES}:Target",
        "--judge",
        f"{FAKES}:LengthJudge",
        "--sets",
        "vicuna,dolly",
        "--limit",
        "3",
        "--output-dir",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_eval_cli_reports_and_resumes(tmp_path, backend):
    out = tmp_path / "run"
    result = cli(*eval_args(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["sets"]] == ["vicuna", "dolly"]
    for s in report["sets"]:
        assert s["n"] == 3 and s["win"] + s["tie"] + s["lose"] == 3 and s["pending"] == 0
        assert s["win_ci"][0] <= s["win_rate"] <= s["win_ci"][1]
    assert report["config"]["judge"] == f"{FAKES}:LengthJudge"
    assert "| vicuna | 3 |" in (out / "report.md").read_text()
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = read_jsonl(out / "records.jsonl")
    judged = {(r["set"], r["id"]) for r in records if r["kind"] == "judgment"}
    assert all(sum(1 for r in records if r["kind"] == "judgment" and (r["set"], r["id"]) == k) == 2 for k in judged)
    # A finished run re-run makes no model calls and gives the same report.
    calls = dict(pipeline_fakes.CALLS)
    again = cli(*eval_args(out))
    assert again.exit_code == 0, again.output
    assert calls == pipeline_fakes.CALLS
    assert json.loads((out / "report.json").read_text())["sets"] == report["sets"]
    # Another judge in the same folder would mix runs: refused.
    other = cli(*[a.replace("LengthJudge", "FirstJudge") for a in eval_args(out)])
    assert other.exit_code == 2 and "another setup" in other.output


def test_eval_with_chat_optimizer_measures_a_real_difference(tmp_path):
    out = tmp_path / "run"
    result = cli(*eval_args(out, "-m", f"chat:{FAKES}:Rewriter"))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    # The rewrite asks for more, the fake target answers longer, the length judge prefers it in both orders.
    for s in report["sets"]:
        assert (s["win"], s["unchanged"], s["order_agreement"]) == (3, 0, 1.0)
        assert s["delta"] == 1.0 and s["delta_ci"][1] > 0.9


def test_position_biased_judge_cancels_out(tmp_path):
    out = tmp_path / "run"
    args = [a.replace("LengthJudge", "FirstJudge") for a in eval_args(out, "-m", f"chat:{FAKES}:Rewriter")]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    for s in json.loads((out / "report.json").read_text())["sets"]:
        assert (s["tie"], s["win"], s["lose"]) == (3, 0, 0)
        assert s["first_position_rate"] == 1.0 and s["order_agreement"] == 0.0


@pytest.mark.slow
def test_construct_train_eval_chain(tmp_path, backend):
    pairs = tmp_path / "pairs.jsonl"
    assert cli("construct", *INPUTS, "--teacher", f"{FAKES}:Teacher", "-o", pairs, "--no-progress").exit_code == 0
    model = tmp_path / "optimizer"
    trained = cli(
        "train", "--data", pairs, "--output", model, "--max-steps", "2", "--batch-size", "2", "--eval-fraction", "0"
    )
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "run"
    result = cli(
        "eval",
        "--target",
        f"{FAKES}:Target",
        "--judge",
        f"{FAKES}:LengthJudge",
        "--sets",
        "vicuna",
        "--limit",
        "2",
        "-m",
        str(model),
        "--output-dir",
        out,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["optimizer"] == str(model) and report["sets"][0]["n"] == 2


# ------------------------------------------------------------------- chat models
def test_resolve_chat_model_specs(tmp_path):
    chat = resolve_chat_model(f"{FAKES}:Target")
    assert chat.complete([("user", "Hello there")]) == "Here is my answer: hello there"
    module = tmp_path / "my_models.py"
    module.write_text("def judge(messages):\n    return '[[C]]'\n")
    assert resolve_chat_model(f"{module}:judge").complete([("user", "x")]) == "[[C]]"
    with pytest.raises(ValueError, match="module:attribute"):
        resolve_chat_model("no-colon")
    with pytest.raises(ValueError, match="cannot build a chat model from 'nosuchprovider:some-model'"):
        resolve_chat_model("nosuchprovider:some-model")


def test_as_chat_model_rejects_llamaindex_llm_with_a_hint():
    from llama_index.core.llms import MockLLM

    with pytest.raises(TypeError, match="llamaindex_bpo.as_chat_model"):
        as_chat_model(MockLLM())
    with pytest.raises(TypeError, match="expected a chat model"):
        as_chat_model(42)


async def test_function_chat_sync_and_async():
    async def afn(messages):
        return messages[-1][1].upper()

    assert await FunctionChat(afn).acomplete([("user", "hi")]) == "HI"
    assert FunctionChat(lambda m: "ok").complete([("user", "hi")]) == "ok"
    assert await FunctionChat(lambda m: "ok").acomplete([("user", "hi")]) == "ok"


async def test_sync_only_chat_model_runs_in_a_thread_and_is_not_retried():
    from langchain_core.language_models.chat_models import SimpleChatModel

    class SyncOnly(SimpleChatModel):
        """Like HuggingFacePipeline: no async generation."""

        @property
        def _llm_type(self) -> str:
            return "sync-only"

        def _call(self, messages, stop=None, run_manager=None, **kwargs):
            return "ok: " + messages[-1].content

        async def _agenerate(self, *args, **kwargs):
            raise NotImplementedError("async generation is not supported")

    chat = as_chat_model(SyncOnly())
    assert await chat.acomplete([("user", "hi")]) == "ok: hi"
    assert await chat.acomplete([("user", "again")]) == "ok: again"
    attempts = 0

    async def unsupported():
        nonlocal attempts
        attempts += 1
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        await Caller(CallPolicy(max_retries=3, backoff_s=0))(unsupported)
    assert attempts == 1


def test_report_intervals():
    from bpo_core.evaluation.pairwise import ItemResult, combine, parse_verdict
    from bpo_core.evaluation.report import summarize, wilson

    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    low, high = wilson(50, 100)
    assert 0.40 < low < 0.41 and 0.59 < high < 0.60  # the textbook Wilson interval for 50/100
    ties = [ItemResult("s", str(i), "tie", True, (None, None)) for i in range(7)]
    s = summarize("s", ties, expected=8)
    assert s.delta == 0.0 and s.delta_ci[0] < -0.2 and s.delta_ci[1] > 0.2  # small samples stay uncertain
    assert s.pending == 1 and s.order_agreement is None
    wins = [ItemResult("s", str(i), "win", False, ("B", "A")) for i in range(40)]
    assert summarize("s", wins, 40).delta_ci[0] > 0.8
    assert parse_verdict("A is fine [[A]] but on reflection [[B]]") == "B" and parse_verdict("no verdict") is None
    assert combine("A", "A") == "tie" and combine("B", "A") == "win" and combine("A", None) == "lose"
    assert combine(None, None) is None
