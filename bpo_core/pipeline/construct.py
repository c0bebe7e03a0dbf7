"""``bpo construct``: preference feedback -> (prompt, optimized prompt) training pairs.

For each feedback record a teacher chat model compares the good and bad responses and rewrites
the instruction, using the authors' two prompts (``src/data_construction/chatgpt_infer.py``: one
for records with context, one without). The answer's ``Optimized Instruction: ... [END]`` is
parsed and the authors' filters are applied (``process_optimized_prompts.py``: a rewrite under
half or over six times the instruction's word count, or one containing a ``[PROTECT`` marker, is
dropped). Kept pairs go to an append-only JSONL that ``bpo train`` reads; everything else goes to
a rejects file with the reason, so every input record ends up in exactly one of the two.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from bpo_core.chat import ChatModel
from bpo_core.pipeline.feedback import Feedback, Skipped
from bpo_core.pipeline.journal import Journal
from bpo_core.policy import Caller, CallPolicy

# The authors' prompts, verbatim (chatgpt_infer.py); .format(instruction, context, bad, good).
CTX_PROMPT = """instruction: "{}"
context:
"{}"

bad response:
"{}"

good response:
"{}"

Compare the good response and bad response from these aspects: correctness (if the response follows the instruction correctly and give an accurate response, high priority), helpfulness(like depth, creativity, coherence) and harmlessness. Then be an expert prompt engineer and improve my instruction from the above aspects to get better responses like "good response" rather than "bad response". 

Pay attention to:
1.Don't forget any information in the original instruction. Focus on maintaining all the information in my instruction.
2.Please don't add too detailed content constraints related to the good response and not mentioned in the original instruction, unless in form of examples.
3.Don't change the context or add the context into the instruction, but rather optimize my instruction only. Don't give a response to my instruction.
4.Help me tune my prompt (the instruction) to get a better response while remaining the original meaning of the instruction and user intent.

Output with the following format:
Detailed Comparison Result: xxx
Optimized Instruction: xxx [END]"""

# .format(instruction, bad, good)
NO_CTX_PROMPT = """instruction: "{}"

bad response:
"{}"

good response:
"{}"

Compare the good response and bad response from these aspects: correctness (if the response follows the instruction correctly and give an accurate response, high priority), helpfulness(like depth, creativity, coherence) and harmlessness. Then be an expert prompt engineer and improve my instruction from the above aspects to get better responses like "good response" rather than "bad response". 

Pay attention to:
1.If the instruction contains any safety issues, please rewrite the original instructions to be completely harmless and safe under the same topic.
2.Don't forget any information in the original instruction. Focus on maintaining all the information in my instruction.
3.Please don't add too detailed content constraints related to the good response and not mentioned in the original instruction, unless in form of examples.
4.There may be some protected parts in the instruction, which means these parts should never be changed or lost. Please carefully protect these parts.
5.You should never generate a response to the original instruction!
6.Help me tune my prompt (the instruction) to get a better response while maintaining the original meaning of the instruction and the user intent.

Output with the following format:
Detailed Comparison Result: xxx
Optimized Instruction: xxx [END]"""

_MARKER = "Optimized Instruction:"
_COMPARISON_LABEL = "Detailed Comparison Result:"


def teacher_prompt(item: Feedback) -> str:
    """The authors' construction prompt for one record: the with-context variant when the record
    has a context field, even an empty one (as in ``chatgpt_infer.py``)."""
    if item.context or item.has_context_field:
        return CTX_PROMPT.format(item.instruction, item.context, item.bad_res, item.good_res)
    return NO_CTX_PROMPT.format(item.instruction, item.bad_res, item.good_res)


class AnswerParseError(ValueError):
    """The teacher's answer has no usable ``Optimized Instruction``."""


@dataclass(frozen=True)
class TeacherAnswer:
    comparison: str
    optimized: str
    ended: bool  # the answer had the [END] marker (False: possibly cut off)


def _unquote(text: str) -> str:
    # The authors eval() the text to drop quotes; a literal parse does that without running code.
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value.strip() if isinstance(value, str) else text


def parse_teacher_answer(answer: str) -> TeacherAnswer:
    """Split ``Detailed Comparison Result: ... Optimized Instruction: ... [END]``.

    Raises :class:`AnswerParseError` with the reason when there is no optimized instruction.
    """
    if not isinstance(answer, str) or not answer.strip():
        raise AnswerParseError("empty answer")
    body, end, _ = answer.partition("[END]")
    if _MARKER not in body:
        lowered = body.lower()
        index = lowered.find(_MARKER.lower())
        if index == -1:
            raise AnswerParseError(f"no {_MARKER!r} in the answer")
        body = body[:index] + _MARKER + body[index + len(_MARKER) :]
    comparison, _, optimized = body.partition(_MARKER)
    optimized = _unquote(optimized.strip().strip("*").strip())
    if not optimized:
        raise AnswerParseError(f"empty text after {_MARKER!r}")
    comparison = comparison.strip()
    if comparison.startswith(_COMPARISON_LABEL):
        comparison = comparison[len(_COMPARISON_LABEL) :].strip()
    return TeacherAnswer(comparison, optimized, bool(end))


class ConstructFilters(BaseModel):
    """The authors' filters for teacher rewrites (``process_optimized_prompts.py``)."""

    model_config = ConfigDict(frozen=True)

    #: Drop a rewrite with fewer than 1/max_shrink of the instruction's words.
    max_shrink: float = 2.0
    #: Drop a rewrite with more than max_growth times the instruction's words.
    max_growth: float = 6.0
    #: Drop a rewrite containing any of these (lower-cased) strings.
    reject_markers: tuple[str, ...] = ("[protect",)

    def reason(self, instruction: str, optimized: str) -> str | None:
        """Why the pair is dropped, or ``None`` to keep it."""
        n_in, n_out = len(instruction.split()), len(optimized.split())
        if n_out == 0:
            return "empty optimized instruction"
        if n_in / n_out > self.max_shrink:
            return f"optimized instruction too short ({n_out} words for {n_in}; limit 1/{self.max_shrink:g})"
        if n_out / max(n_in, 1) > self.max_growth:
            return f"optimized instruction too long ({n_out} words for {n_in}; limit {self.max_growth:g}x)"
        lowered = optimized.lower()
        for marker in self.reject_markers:
            if marker in lowered:
                return f"optimized instruction contains {marker!r}"
        return None


def pair_record(item: Feedback, answer: TeacherAnswer, teacher: str) -> dict[str, Any]:
    """The output line for a kept pair: ``bpo train`` reads ``instruction``/``context`` and
    ``optimized_instruction`` (or ``prompt`` -> ``optimized_prompt``)."""
    optimized = answer.optimized
    if item.context:
        prompt = f"{item.instruction}\n{item.context}"
        # The authors' layout: the context follows the instruction unless the rewrite already holds it.
        with_context = optimized if item.context.lower() in optimized.lower() else f"{optimized}\n{item.context}"
    else:
        prompt, with_context = item.instruction, optimized
    return {
        "key": item.key,
        "instruction": item.instruction,
        "context": item.context,
        "prompt": prompt,
        "optimized_instruction": optimized,
        "optimized_prompt": with_context,
        "comparison": answer.comparison,
        "good_res": item.good_res,
        "bad_res": item.bad_res,
        "source": item.source,
        "teacher": teacher,
        **({"truncated": True} if not answer.ended else {}),
    }


def _reject(key: str, reason: str, *, retryable: bool = False, **details: Any) -> dict[str, Any]:
    return {"key": key, "reason": reason, "retryable": retryable, **details}


@dataclass
class ConstructStats:
    """What one ``construct`` run did (``already_done`` counts lines from earlier runs)."""

    total: int = 0
    already_done: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    def count_reject(self, reason: str) -> None:
        kind = reason.split(" (")[0].split(":")[0]
        self.rejected[kind] = self.rejected.get(kind, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "already_done": self.already_done,
            "kept": self.kept,
            "rejected": dict(self.rejected),
            "teacher_errors": self.errors,
        }


def default_rejects_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".rejects.jsonl")


async def aconstruct(
    items: Sequence[Feedback],
    teacher: ChatModel,
    output: str | Path,
    *,
    rejects: str | Path | None = None,
    skipped: Sequence[Skipped] = (),
    policy: CallPolicy | None = None,
    filters: ConstructFilters | None = None,
    progress: bool = True,
) -> ConstructStats:
    """Ask ``teacher`` for each record's optimized instruction; append pairs and rejects.

    Resumable: records whose key is already in ``output`` or (as a final reject) in ``rejects``
    are skipped, so a re-run after a kill continues where it stopped. Teacher errors that outlast
    the retries are written as ``retryable`` rejects and tried again by the next run.
    """
    from tqdm import tqdm

    filters = filters or ConstructFilters()
    pairs_journal = Journal(output)
    rejects_journal = Journal(rejects or default_rejects_path(output))
    done = {r.get("key") for r in pairs_journal.load()}
    done |= {r.get("key") for r in rejects_journal.load() if not r.get("retryable")}
    stats = ConstructStats(total=len(items) + len(skipped))
    seen: set[str] = set()
    todo: list[Feedback] = []
    for item in items:
        if item.key in done:
            stats.already_done += 1
        elif item.key not in seen:
            seen.add(item.key)
            todo.append(item)
    caller = Caller(policy)

    with (
        pairs_journal,
        rejects_journal,
        tqdm(total=len(todo), disable=not progress, unit="rec", desc="construct") as bar,
    ):
        for skip in skipped:
            if skip.key in done:
                stats.already_done += 1
            else:
                rejects_journal.append(_reject(skip.key, skip.reason, record=dict(skip.record)))
                stats.count_reject(skip.reason)

        async def one(item: Feedback) -> None:
            messages = [("user", teacher_prompt(item))]
            try:
                answer = await caller(lambda: teacher.acomplete(messages), what=f"teacher on {item.key}")
            except Exception as exc:
                stats.errors += 1
                rejects_journal.append(
                    _reject(
                        item.key,
                        f"teacher error: {type(exc).__name__}: {exc}",
                        retryable=True,
                        instruction=item.instruction,
                    )
                )
                bar.update()
                return
            try:
                parsed = parse_teacher_answer(answer)
            except AnswerParseError as exc:
                reason = f"unparseable answer: {exc}"
                rejects_journal.append(_reject(item.key, reason, answer=answer, instruction=item.instruction))
                stats.count_reject(reason)
            else:
                rejected = filters.reason(item.instruction, parsed.optimized)
                if rejected is None:
                    pairs_journal.append(pair_record(item, parsed, teacher.name))
                    stats.kept += 1
                else:
                    rejects_journal.append(_reject(item.key, rejected, answer=answer, instruction=item.instruction))
                    stats.count_reject(rejected)
            bar.update()

        await asyncio.gather(*(one(item) for item in todo))
    return stats


def construct(items: Sequence[Feedback], teacher: ChatModel, output: str | Path, **kwargs: Any) -> ConstructStats:
    """Synchronous :func:`aconstruct` (runs its own event loop)."""
    return asyncio.run(aconstruct(items, teacher, output, **kwargs))
