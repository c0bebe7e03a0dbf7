"""Chat models for the offline pipeline walk-through (``bpo construct`` / ``bpo eval``).

Point the CLI at these with ``examples/pipeline_models.py:local_chat``. They run the embedded
SmolLM2-135M-Instruct base model through LangChain's ``ChatHuggingFace``, so the whole pipeline
runs without a network. A 135M model is a weak teacher and judge: use it to see the pipeline
work, and a strong model (``openai:gpt-4o-mini``, ``anthropic:claude-sonnet-4-5``, or your own
``module:factory``) for results that mean something.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _local_llm import base_model_and_tokenizer  # noqa: E402


@functools.cache
def _chat(max_new_tokens: int):
    from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline
    from transformers import pipeline

    model, tokenizer = base_model_and_tokenizer()
    generate = pipeline(
        "text-generation",
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        return_full_text=False,
    )
    return ChatHuggingFace(llm=HuggingFacePipeline(pipeline=generate), tokenizer=tokenizer)


def local_chat():
    """Teacher, target or judge: the local SmolLM2-135M-Instruct, greedy, up to 160 new tokens."""
    return _chat(160)


_INSTRUCTION = re.compile(r'^instruction: "(.*?)"\n(?:context:\n|\nbad response:\n)', re.S)
RECORDED = Path(__file__).resolve().parents[2] / "shared" / "data" / "bpo" / "train_val300.json"


def recorded_teacher():
    """Replays the BPO authors' real teacher (ChatGPT) answers, offline.

    ``train_val300.json`` holds, for each feedback record, the comparison and optimized prompt the
    authors' teacher wrote. This teacher answers the construction prompt with them, in the
    teacher's output format, so ``bpo construct`` over that file reproduces the authors' pairs
    without an API. Set ``BPO_RECORDED_TEACHER`` to read another file with those fields.
    """
    path = Path(os.environ.get("BPO_RECORDED_TEACHER", RECORDED))
    records = json.loads(path.read_text(encoding="utf-8"))
    answers = {r["instruction"].strip(): (r["comparison"], r["optimized_prompt"]) for r in records}

    def teacher(messages):
        match = _INSTRUCTION.match(messages[-1][1])
        if match is None or match.group(1) not in answers:
            raise KeyError("no recorded teacher answer for this instruction")
        comparison, optimized = answers[match.group(1)]
        if not comparison.lstrip().startswith("Detailed Comparison Result:"):
            comparison = f"Detailed Comparison Result: {comparison}"
        return f"{comparison}\nOptimized Instruction: {optimized} [END]"

    return teacher
