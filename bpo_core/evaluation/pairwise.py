"""``bpo eval``: does BPO help this LLM? Pairwise LLM-judge evaluation as in the paper.

For every test prompt the target chat model answers the original prompt and the optimized one;
a judge chat model compares the two answers with the authors' ``pair-v2`` prompt
(``src/evaluation/gpt4_score.py``), verdict ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie).

The authors judged one random order. Here each pair is judged in both orders and the two verdicts
are added (+1 for the optimized answer, -1 for the original, 0 for a tie): a positive sum is a
win, a negative one a loss, zero a tie. A judge that always prefers the first answer thus gives
ties, not noise. When the optimizer left a prompt unchanged, both answers would come from the
same prompt, so the pair is a tie without calls (counted as ``unchanged``).

Every step (rewrite, answer, verdict) is one line in ``<output_dir>/records.jsonl``; a re-run
skips what is there, so a killed run resumes and a finished one only rebuilds the report.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bpo_core.chat import ChatModel, Message
from bpo_core.datasets import EvalItem
from bpo_core.errors import DataFormatError
from bpo_core.pipeline.journal import Journal
from bpo_core.policy import Caller, CallPolicy

#: The authors' pair-v2 judge prompt (gpt4_score.py), verbatim.
PAIR_V2_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. You should choose the assistant that follows the user's instructions and "
    "answers the user's question better. Your evaluation should consider factors such as the helpfulness, relevance, "
    "accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by comparing the two "
    "responses and provide a short explanation. Avoid any position biases and ensure that the order in which the "
    "responses were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After "
    'providing your explanation, output your final verdict by strictly following this format: "[[A]]" if '
    'assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
PAIR_V2_TEMPLATE = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's "
    "Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)

Verdict = Literal["A", "B", "C"]
Outcome = Literal["win", "tie", "lose"]
ORDERS = ("original_first", "optimized_first")
_VERDICT = re.compile(r"\[\[([ABC])\]\]")


def judge_messages(question: str, answer_a: str, answer_b: str) -> list[Message]:
    # str.replace, as the authors do: answers may contain braces that str.format would choke on.
    user = (
        PAIR_V2_TEMPLATE.replace("{question}", question).replace("{answer_a}", answer_a).replace("{answer_b}", answer_b)
    )
    return [("system", PAIR_V2_SYSTEM), ("user", user)]


def parse_verdict(text: str) -> Verdict | None:
    """The judge's final verdict: the last ``[[A]]``/``[[B]]``/``[[C]]`` in its answer, else ``None``."""
    found = _VERDICT.findall(text or "")
    return found[-1] if found else None


def combine(original_first: Verdict | None, optimized_first: Verdict | None) -> Outcome | None:
    """The optimized prompt's outcome from the two orders' verdicts (``None``: no valid verdict)."""
    votes = []
    if original_first is not None:
        votes.append({"A": -1, "B": 1, "C": 0}[original_first])
    if optimized_first is not None:
        votes.append({"A": 1, "B": -1, "C": 0}[optimized_first])
    if not votes:
        return None
    total = sum(votes)
    return "win" if total > 0 else "lose" if total < 0 else "tie"


@dataclass(frozen=True)
class ItemResult:
    set: str
    id: str
    outcome: Outcome | None
    unchanged: bool
    verdicts: tuple[Verdict | None, Verdict | None]


def _key(*parts: str) -> str:
    return "|".join(parts)


class PairwiseRun:
    """One evaluation: test sets, an optimizer, a target and a judge, journaled in ``output_dir``."""

    def __init__(
        self,
        test_sets: Mapping[str, Sequence[EvalItem]],
        optimizer: Any,
        target: ChatModel,
        judge: ChatModel,
        output_dir: str | Path,
        *,
        target_policy: CallPolicy | None = None,
        judge_policy: CallPolicy | None = None,
        batch_size: int = 16,
        progress: bool = True,
        optimizer_name: str | None = None,
    ) -> None:
        self.test_sets = {name: list(items) for name, items in test_sets.items()}
        self.optimizer = optimizer
        self.target, self.judge = target, judge
        self.output_dir = Path(output_dir)
        self.target_policy, self.judge_policy = target_policy, judge_policy
        self.batch_size = batch_size
        self.progress = progress
        self.optimizer_name = optimizer_name or _optimizer_name(optimizer)
        self.journal = Journal(self.output_dir / "records.jsonl")
        self.records: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, str] = {}

    # -------------------------------------------------------------- identity
    def config(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer_name,
            "rounds": getattr(self.optimizer, "rounds", None),
            "mode": getattr(self.optimizer, "mode", None),
            "target": self.target.name,
            "judge": self.judge.name,
            "judge_prompt": "pair-v2, both orders",
        }

    def _check_config(self) -> None:
        path = self.output_dir / "run.json"
        config = self.config()
        if path.exists():
            previous = json.loads(path.read_text(encoding="utf-8"))
            changed = {k: (previous.get(k), v) for k, v in config.items() if previous.get(k) != v}
            if changed:
                detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
                raise DataFormatError(
                    f"{self.output_dir} holds a run with another setup ({detail}); use a new output folder"
                )
        else:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    # ------------------------------------------------------------------ run
    async def arun(self) -> list[ItemResult]:
        from tqdm import tqdm

        self._check_config()
        self.records = {r["key"]: r for r in self.journal.load() if "key" in r}
        with self.journal:
            await self._rewrite_all()
            target, judge = Caller(self.target_policy), Caller(self.judge_policy)
            items = [(name, item) for name, items in self.test_sets.items() for item in items]
            with tqdm(total=len(items), disable=not self.progress, unit="prompt", desc="answer+judge") as bar:

                async def one(name: str, item: EvalItem) -> None:
                    try:
                        await self._answer_and_judge(name, item, target, judge)
                    except Exception as exc:  # retries exhausted: leave it for the next run
                        self.failures[_key(name, item.id)] = f"{type(exc).__name__}: {exc}"
                    bar.update()

                await asyncio.gather(*(one(name, item) for name, item in items))
        return self.results()

    def run(self) -> list[ItemResult]:
        """Synchronous :meth:`arun`."""
        return asyncio.run(self.arun())

    def _put(self, record: dict[str, Any]) -> dict[str, Any]:
        self.journal.append(record)
        self.records[record["key"]] = record
        return record

    async def _rewrite_all(self) -> None:
        from tqdm import tqdm

        todo = [
            (n, it)
            for n, items in self.test_sets.items()
            for it in items
            if _key("rewrite", n, it.id) not in self.records
        ]
        with tqdm(total=len(todo), disable=not self.progress or not todo, unit="prompt", desc="optimize") as bar:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                results = await asyncio.to_thread(self.optimizer.rewrite_batch, [it.question for _, it in chunk])
                for (name, item), res in zip(chunk, results):
                    self._put(
                        {
                            "key": _key("rewrite", name, item.id),
                            "kind": "rewrite",
                            "set": name,
                            "id": item.id,
                            "question": item.question,
                            "optimized": res.optimized,
                            "fell_back": res.fell_back,
                            "reason": res.reason,
                        }
                    )
                bar.update(len(chunk))

    async def _answer(self, name: str, item: EvalItem, variant: str, prompt: str, target: Caller) -> str:
        key = _key("answer", name, item.id, variant)
        if key not in self.records:
            text = await target(lambda: self.target.acomplete([("user", prompt)]), what=f"target on {name}/{item.id}")
            self._put(
                {
                    "key": key,
                    "kind": "answer",
                    "set": name,
                    "id": item.id,
                    "variant": variant,
                    "prompt": prompt,
                    "answer": text,
                }
            )
        return self.records[key]["answer"]

    async def _answer_and_judge(self, name: str, item: EvalItem, target: Caller, judge: Caller) -> None:
        optimized = self.records[_key("rewrite", name, item.id)]["optimized"]
        if optimized == item.question:
            return  # unchanged: a tie by construction, no calls
        original_answer, optimized_answer = await asyncio.gather(
            self._answer(name, item, "original", item.question, target),
            self._answer(name, item, "optimized", optimized, target),
        )
        pairs = {
            "original_first": (original_answer, optimized_answer),
            "optimized_first": (optimized_answer, original_answer),
        }

        async def verdict(order: str) -> None:
            key = _key("judgment", name, item.id, order)
            if key in self.records:
                return
            a, b = pairs[order]
            # The judge sees the user's original question, as in the paper.
            raw = await judge(
                lambda: self.judge.acomplete(judge_messages(item.question, a, b)), what=f"judge on {name}/{item.id}"
            )
            self._put(
                {
                    "key": key,
                    "kind": "judgment",
                    "set": name,
                    "id": item.id,
                    "order": order,
                    "verdict": parse_verdict(raw),
                    "judgment": raw,
                }
            )

        await asyncio.gather(*(verdict(order) for order in ORDERS))

    # -------------------------------------------------------------- results
    def results(self) -> list[ItemResult]:
        """Per-item outcomes from the journal (items still missing a step are left out)."""
        out = []
        for name, items in self.test_sets.items():
            for item in items:
                rewrite = self.records.get(_key("rewrite", name, item.id))
                if rewrite is None:
                    continue
                if rewrite["optimized"] == item.question:
                    out.append(ItemResult(name, item.id, "tie", True, (None, None)))
                    continue
                judged = [self.records.get(_key("judgment", name, item.id, o)) for o in ORDERS]
                if any(j is None for j in judged):
                    continue
                verdicts = tuple(j["verdict"] for j in judged)  # type: ignore[index]
                out.append(ItemResult(name, item.id, combine(*verdicts), False, verdicts))
        return out


def _optimizer_name(optimizer: Any) -> str:
    shared = getattr(optimizer, "_shared", None)
    try:
        return shared.name() if shared is not None else type(optimizer).__name__
    except Exception:
        return type(optimizer).__name__
