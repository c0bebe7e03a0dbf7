"""One round of the rewrite path: segment -> generate -> clean -> guard -> assemble.

Each stage is its own module (``segment``, ``clean``, ``faithfulness``, ``assemble``); this one
runs them over a batch. Prompts that need no model (blank, non-English, material that cannot be
told apart, too long) are settled first; the rest are deduplicated by what the model sees (the
*view*: the instruction with material as placeholders) and generated in one batch per style.

``style="rewrite"``: a rewrite the guard rejects falls back to an addition (one more batch, for
the rejected prompts only) or to the original, as ``rewrite_fallback`` says.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bpo_core.addition_probe import AdditionProbe
from bpo_core.backends import Backend
from bpo_core.config import OptimizerConfig
from bpo_core.errors import BPOError
from bpo_core.formats import PromptFormat
from bpo_core.generation import GenerationSettings, settings_for_mode
from bpo_core.language import looks_english
from bpo_core.result import FallbackKind, OptimizationResult
from bpo_core.rewrite.assemble import append_addition, replace_instruction
from bpo_core.rewrite.clean import clean_addition, clean_rewrite, strip_echo
from bpo_core.rewrite.faithfulness import (
    RISK_CONFLICTS,
    SELF_HARM,
    Verdict,
    addition_conflict,
    check_addition,
    check_rewrite,
    ground_addition,
    ungrounded_words,
)
from bpo_core.rewrite.segment import Segmentation, Span, default_model, segment

logger = logging.getLogger("bpo_core")

#: An addition is short (about 40 words); its generation budget is capped accordingly.
ADDITION_MAX_NEW_TOKENS = 80


@dataclass(frozen=True)
class _Job:
    index: int
    seg: Segmentation
    view: str


def fallback(res: OptimizationResult, kind: FallbackKind, reason: str) -> OptimizationResult:
    """Keep the best prompt reached so far (an earlier round's rewrite survives a later failure)."""
    unchanged = res.optimized == res.original
    fell_back = unchanged and kind is not FallbackKind.NOTHING_TO_ADD
    return OptimizationResult(
        res.original,
        res.optimized,
        fell_back,
        reason,
        res.history,
        None if unchanged else res.style,
        res.addition,
        kind,
    )


def run_round(
    previous: list[OptimizationResult],
    *,
    backend: Backend,
    fmt: PromptFormat,
    config: OptimizerConfig,
    style: str,
    settings: GenerationSettings,
) -> list[OptimizationResult]:
    """Optimize each result's current prompt once in ``style``; keep the previous prompt on any failure."""
    results = list(previous)
    jobs: list[_Job] = []
    for i, res in enumerate(previous):
        settled = _prepare(res, config)
        if isinstance(settled, OptimizationResult):
            results[i] = settled
        else:
            jobs.append(_Job(i, settled, settled.view()))
    if not jobs:
        return results
    try:
        too_long = {j.view for j in jobs if backend.count_tokens(j.view) > config.max_input_tokens}
        for job in [j for j in jobs if j.view in too_long]:
            reason = f"instruction longer than max_input_tokens={config.max_input_tokens}; passed through"
            results[job.index] = fallback(results[job.index], FallbackKind.TOO_LONG, reason)
        jobs = [j for j in jobs if j.view not in too_long]
        if style == "rewrite":
            rejected = _rewrite(jobs, results, backend, fmt, config, settings)
            if config.rewrite_fallback == "augment":
                _augment(rejected, results, backend, fmt, config, settings, because=True)
        else:
            _augment(jobs, results, backend, fmt, config, settings, because=False)
    except BPOError as exc:
        if config.on_error == "raise":
            raise
        logger.warning(
            "BPO optimizer failed; using the original prompts: %s", exc if config.log_prompts else type(exc).__name__
        )
        kind = FallbackKind.TIMEOUT if isinstance(exc, TimeoutError) else FallbackKind.ERROR
        for job in jobs:
            if results[job.index] is previous[job.index]:
                results[job.index] = fallback(previous[job.index], kind, f"optimizer error: {exc}")
    return results


def settle_without_model(res: OptimizationResult, config: OptimizerConfig) -> OptimizationResult | None:
    """The result of a prompt no model may change (blank, or non-English with ``english_only``), else ``None``."""
    current = res.optimized
    if not current.strip():
        return fallback(res, FallbackKind.BLANK, "blank prompt passed through unchanged")
    if config.english_only and not looks_english(current):
        return fallback(
            res, FallbackKind.NON_ENGLISH, "non-English prompt passed through unchanged (english_only=True)"
        )
    return None


def _prepare(res: OptimizationResult, config: OptimizerConfig) -> Segmentation | OptimizationResult:
    """The prompt's segmentation, or the settled result of a prompt no model needs to see."""
    settled = settle_without_model(res, config)
    if settled is not None:
        return settled
    current = res.optimized
    if not config.protect_context:
        return Segmentation(current, (Span("instruction", 0, len(current)),), 1.0)
    seg = segment(current)
    if seg.abstains(default_model().min_confidence):
        return fallback(
            res,
            FallbackKind.UNSEGMENTED,
            f"could not tell the instruction from the pasted material with confidence ({seg.confidence:.2f}); passed through",
        )
    return seg


def _candidates(
    views: list[str],
    backend: Backend,
    fmt: PromptFormat,
    settings: GenerationSettings,
    n_best: int,
    *,
    first: list[str] | None = None,
    at_least_one: bool = False,
) -> list[list[str]]:
    """``n_best`` raw generations per view: with greedy settings the greedy one first (``first``
    when already generated), then samples (``at_least_one``: never empty, for views it was
    already decided to add to)."""
    if n_best == 1:
        return [[text] for text in (first if first is not None else backend.generate(views, fmt, settings))]
    if first is None and not settings.do_sample:
        first = backend.generate(views, fmt, settings)
    sampled = (
        settings
        if settings.do_sample
        else settings_for_mode("stable", max_new_tokens=settings.max_new_tokens, seed=settings.seed)
    )
    if at_least_one:
        sampled = sampled.model_copy(update={"min_new_tokens": 1})
    extra = n_best - (first is not None)
    raw = backend.generate([v for v in views for _ in range(extra)], fmt, sampled)
    return [([first[k]] if first is not None else []) + raw[k * extra : (k + 1) * extra] for k in range(len(views))]


def _pick(candidates: list[str], judge: Callable[[str], Verdict]) -> tuple[str, Verdict]:
    verdicts = [judge(c) for c in candidates]
    best = max(range(len(candidates)), key=lambda k: (verdicts[k].ok, verdicts[k].score))
    return candidates[best], verdicts[best]


def _rewrite(
    jobs: list[_Job],
    results: list[OptimizationResult],
    backend: Backend,
    fmt: PromptFormat,
    config: OptimizerConfig,
    settings: GenerationSettings,
) -> list[_Job]:
    """Rewrite each job's instruction; return the jobs whose rewrite the guard rejected."""
    inline = [j for j in jobs if _inline_material(j.seg)]
    for job in inline:
        reason = "pasted material starts or ends mid-line: the words around it are not rewritten"
        results[job.index] = fallback(results[job.index], FallbackKind.REJECTED, reason)
    jobs = [j for j in jobs if j not in inline]
    if not jobs:
        return inline
    views = list(dict.fromkeys(j.view for j in jobs))
    raw = dict(zip(views, _candidates(views, backend, fmt.with_style("rewrite"), settings, config.n_best)))
    rejected = []
    for job in jobs:
        cleaned = [clean_rewrite(t, settings) for t in raw[job.view]]
        text, verdict = _pick(cleaned, functools.partial(check_rewrite, job.view, config=config.guard))
        new = replace_instruction(job.seg, text) if verdict.ok else None
        res = results[job.index]
        if new is None:
            reason = verdict.reason or "rewrite moves or drops the pasted material"
            _log_kept(config, reason)
            results[job.index] = fallback(res, FallbackKind.REJECTED, reason)
            rejected.append(job)
        else:
            results[job.index] = OptimizationResult(res.original, new, False, None, (*res.history, new), "rewrite")
    return [*inline, *rejected]


def _inline_material(seg: Segmentation) -> bool:
    """Whether a piece of material shares a line with instruction text.

    There the boundary is a guess, and a rewrite of the words next to the material ("...this
    sentence: {"...) reads as altered material; whole lines around it can be rewritten safely.
    """
    prompt = seg.prompt
    for span in seg.spans:
        if span.kind != "material":
            continue
        before, after = prompt[: span.start].rstrip(" \t"), prompt[span.end :].lstrip(" \t")
        if (before.strip() and not before.endswith("\n")) or (after.strip() and not after.startswith("\n")):
            return True
    return False


def _augment(
    jobs: list[_Job],
    results: list[OptimizationResult],
    backend: Backend,
    fmt: PromptFormat,
    config: OptimizerConfig,
    settings: GenerationSettings,
    *,
    because: bool,
) -> None:
    """Append a guarded addition to each job's prompt (``because``: a rejected rewrite's fallback).

    Requests the model's safety gate expects to need it get a safety note instead (see
    :func:`_safety_notes`). Other prompts an addition would likely contradict get none (no model
    call); each candidate is cut to its grounded guidance clauses, then checked; the first
    candidate that passes (greedy first) wins.
    """
    guard = config.guard
    todo, risky = [], {}
    for job in jobs:
        conflict = addition_conflict(job.view) if guard.enabled and guard.faithfulness else None
        if conflict is None or conflict in RISK_CONFLICTS:
            todo.append(job)
            if conflict is not None:
                risky[job.view] = conflict
        else:
            _nothing(results, job, because, f"{conflict}: nothing added")
    fmt = fmt.with_style("augment")
    todo = _safety_notes(todo, set(risky), results, backend, fmt, config, because=because)
    for job in [j for j in todo if j.view in risky]:
        _nothing(results, job, because, f"{risky[job.view]}: nothing added")
    todo = [j for j in todo if j.view not in risky]
    if not todo:
        return
    settings = settings.model_copy(
        update={"max_new_tokens": min(settings.max_new_tokens, ADDITION_MAX_NEW_TOKENS), "min_new_tokens_extra": None}
    )
    views = list(dict.fromkeys(j.view for j in todo))
    raw: dict[str, list[str]] = {v: [""] for v in views}  # "" (nothing to add) unless generated below
    add_below = _add_below(config, backend)
    gated = _gate(views, backend, fmt, config)
    if gated is not None:  # the learned gate decided instead; what it lets through gets an addition
        for job in todo:
            if job.view in gated:
                _nothing(results, job, because, gated[job.view])
        todo = [j for j in todo if j.view not in gated]
        views = [v for v in views if v not in gated]
        add_below = 1.0
        if not todo:
            return
    if add_below is not None and not settings.do_sample and getattr(backend, "scores_stopping", False):
        # Add or not is one decision (compare "nothing" with all ways to continue), made by the
        # backend in the same pass as the greedy addition; samples only where it adds.
        greedy = backend.generate(views, fmt, settings.model_copy(update={"nothing_above": add_below}))
        raw.update((v, [text]) for v, text in zip(views, greedy))
        adding = [v for v, text in zip(views, greedy) if text]
        if config.n_best > 1 and adding:
            raw.update(
                zip(
                    adding,
                    _candidates(
                        adding,
                        backend,
                        fmt,
                        settings,
                        config.n_best,
                        first=[raw[v][0] for v in adding],
                        at_least_one=True,
                    ),
                )
            )
    elif views:
        raw.update(zip(views, _candidates(views, backend, fmt, settings, config.n_best)))
    passing: dict[int, list[str]] = {}
    for job in todo:
        verdicts = []
        for text in raw[job.view]:
            cleaned = clean_addition(strip_echo(job.view, text), settings)
            grounding = guard.enabled and guard.faithfulness and guard.ground_additions
            kept = ground_addition(job.view, cleaned) if grounding else cleaned
            if cleaned and not kept:
                named = ", ".join(dict.fromkeys(ungrounded_words(job.view, cleaned))) or "claims or conditions"
                verdicts.append(("", Verdict(False, f"addition named things the user did not give: {named}", 0.0)))
            else:
                verdicts.append((kept, check_addition(job.view, kept, guard) if kept else Verdict(False, None, 0.0)))
        passed = list(dict.fromkeys(t for t, v in verdicts if v.ok))
        if passed:
            passing[job.index] = passed
            continue
        reason = next((v.reason for _, v in verdicts if v.reason), None)
        if reason is None:
            _nothing(results, job, because, "the optimizer had nothing to add")
        else:
            _reject(results, job, config, because, reason)
    picked = _pick_additions([j for j in todo if j.index in passing], passing, backend, fmt, config)
    for job in todo:
        if job.index not in passing:
            continue
        addition, why = picked[job.index]
        if addition is None:
            _reject(results, job, config, because, why or "the learned guard dropped the addition")
            continue
        _add(results, job, addition, because)


def _safety_notes(
    jobs: list[_Job],
    risky: set[str],
    results: list[OptimizationResult],
    backend: Backend,
    fmt: PromptFormat,
    config: OptimizerConfig,
    *,
    because: bool,
) -> list[_Job]:
    """Append a safety note where the model's safety gate expects one to help; return the other jobs.

    A request that touches on a risk (crime, health, privacy, a stereotyping premise, hostility)
    is answered more harmlessly, and still helpfully, when the prompt asks for it: "Point out any
    legal, safety or ethical concerns involved, and suggest responsible alternatives that meet the
    underlying need." The gate reads the same prompt state as the addition gate (``risky``: the
    views the risk rules flag, which need less of its confidence) and picks one of the notes
    shipped with it (:class:`~bpo_core.addition_probe.SafetyNotes`): fixed texts, so a note can
    neither change nor invent anything. A request about harming oneself always gets the crisis note.
    """
    scorer = getattr(backend, "safety_notes", None)
    probe = _learned_guard(backend, config)
    if not jobs or not config.guard.safety_notes or probe is None or probe.safety_notes is None or scorer is None:
        return jobs
    views = list(dict.fromkeys(j.view for j in jobs))
    picked = scorer(views, fmt, [v in risky for v in views])
    if picked is None:
        return jobs
    notes = {v: note for v, (_, note) in zip(views, picked) if note}
    crisis = probe.safety_notes.note("crisis")
    if crisis is not None:  # too important to leave to the heads' choice
        notes |= {v: crisis for v in views if SELF_HARM.search(v)}
    for job in jobs:
        if job.view in notes:
            _add(results, job, notes[job.view], because)
    return [j for j in jobs if j.view not in notes]


#: ``add_below="auto"`` without a learned guard to take it from.
DEFAULT_ADD_BELOW = 0.5


def _learned_guard(backend: Backend, config: OptimizerConfig) -> AdditionProbe | None:
    """The backend's addition probe when the config lets it judge additions, else ``None``."""
    guard = config.guard
    if not (guard.enabled and guard.faithfulness and guard.learned):
        return None
    return getattr(backend, "addition_probe", None) if hasattr(backend, "addition_scores") else None


def _gate(views: list[str], backend: Backend, fmt: PromptFormat, config: OptimizerConfig) -> dict[str, str] | None:
    """With ``add_below="auto"`` and a learned gate: the views it closes, with the reason (else ``None``)."""
    probe = _learned_guard(backend, config)
    if config.add_below != "auto" or probe is None or probe.gate is None or not views:
        return None
    scorer = getattr(backend, "addition_gate_scores", None)
    scores = scorer(views, fmt) if scorer is not None else None
    if scores is None:
        return None
    floor = probe.gate.min_score
    return {
        v: f"the learned guard expects no addition to help ({p:.2f} < {floor:.2f})"
        for v, p in zip(views, scores)
        if p < floor
    }


def _add_below(config: OptimizerConfig, backend: Backend) -> float | None:
    if config.add_below != "auto":
        return config.add_below
    probe = _learned_guard(backend, config)
    return probe.add_below if probe is not None and probe.add_below is not None else DEFAULT_ADD_BELOW


def _pick_additions(
    jobs: list[_Job], passing: dict[int, list[str]], backend: Backend, fmt: PromptFormat, config: OptimizerConfig
) -> dict[int, tuple[str | None, str | None]]:
    """Per job, the addition to append (``None``: none) and why not.

    Without a learned guard (``bpo_core.addition_probe``) the first candidate the rules passed
    (the greedy one) wins. With one, each candidate is scored and the one most likely to help
    among those it keeps wins; when it keeps none, the reason is the greedy candidate's.
    """
    probe = _learned_guard(backend, config)
    if probe is None:
        return {j.index: (passing[j.index][0], None) for j in jobs}
    pairs = [(j, text) for j in jobs for text in passing[j.index]]
    scorer = backend.addition_scores  # type: ignore[attr-defined]
    scores = scorer([j.view for j, _ in pairs], [text for _, text in pairs], fmt) if pairs else []
    if scores is None:
        return {j.index: (passing[j.index][0], None) for j in jobs}
    best: dict[int, tuple[str | None, str | None, float]] = {}
    for (job, text), score in zip(pairs, scores):
        why = probe.rejects(score, config.guard.learned_threshold)
        current = best.get(job.index)
        if why is None and (current is None or current[0] is None or score.helps > current[2]):
            best[job.index] = (text, None, score.helps)
        elif current is None:
            best[job.index] = (None, f"{why}: {text!r}", -1.0)
    return {i: (text, why) for i, (text, why, _) in best.items()}


def _add(results: list[OptimizationResult], job: _Job, addition: str, because: bool) -> None:
    """Append ``addition`` to the job's prompt (``because``: the rejected rewrite's reason stays)."""
    res = results[job.index]
    new = append_addition(res.optimized, addition)
    results[job.index] = OptimizationResult(
        res.original, new, False, res.reason if because else None, (*res.history, new), "augment", addition
    )


def _reject(results: list[OptimizationResult], job: _Job, config: OptimizerConfig, because: bool, reason: str) -> None:
    res = results[job.index]
    _log_kept(config, reason)
    prior = f"{res.reason}; " if because and res.reason else ""
    results[job.index] = fallback(res, FallbackKind.REJECTED, prior + reason)


def _nothing(results: list[OptimizationResult], job: _Job, because: bool, why: str) -> None:
    res = results[job.index]
    if because:  # the rewrite was rejected and there is nothing to add instead
        results[job.index] = fallback(res, FallbackKind.REJECTED, f"{res.reason}; {why}")
    else:
        results[job.index] = fallback(res, FallbackKind.NOTHING_TO_ADD, why)


def _log_kept(config: OptimizerConfig, reason: str) -> None:
    # Reasons may quote the prompt; without log_prompts only their kind is logged.
    logger.info("BPO kept the prompt unchanged: %s", reason if config.log_prompts else reason.split(":")[0])
