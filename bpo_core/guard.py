"""Drift guard: decide whether a rewrite may replace the user's prompt.

A small optimizer sometimes answers the prompt instead of rewriting it, drops what the user
asked for, or rambles. The guard catches those cases so the original prompt is used instead,
and says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

_QUOTED = re.compile(r'"[^"\n]{3,}"|“[^”\n]{3,}”|`[^`\n]+`')
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)

# Function words that carry no request content; missing ones are not drift.
STOPWORDS = frozenset(
    """a an the and or but if then else of to in on at by for with from into onto about as is are was were be been
    being am do does did doing have has had having i me my mine we us our you your yours he him his she her it its
    they them their this that these those there here what which who whom whose when where why how can could would
    should will shall may might must not no nor so than too very just also any all some each every more most other
    such only own same both few many much please let lets get give make tell write some something thing things want
    need like know one use using used way up out over under again further once yes ok okay
    whats hows whos wheres whys im ive dont doesnt cant wont isnt arent""".split()
)

# Openers of an answer or a refusal rather than a rewritten request.
ANSWER_OPENERS = (
    "sure",
    "certainly",
    "of course",
    "here is",
    "here's",
    "here are",
    "i'm sorry",
    "i am sorry",
    "sorry",
    "as an ai",
    "i cannot",
    "i can't",
    "i apologize",
    "absolutely",
    "great question",
    "the answer is",
    "yes,",
    "no,",
)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS and (len(w) > 2 or w.isdigit())]


def stem(word: str) -> str:
    # Crude but language-agnostic enough for recall: "examples" ~ "example", "creating" ~ "create".
    return word[:5] if len(word) > 5 else word


class GuardConfig(BaseModel):
    """Thresholds of the drift guard. The length ratios are the authors' data filter."""

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    min_length_ratio: float = Field(default=0.5, ge=0)
    max_length_ratio: float = Field(default=6.0, gt=0)
    min_keyword_recall: float = Field(default=0.8, ge=0, le=1)
    #: Length ratios count the original as at least this many words, so a terse prompt
    #: ("why exercise") may grow into a full request.
    short_prompt_words: int = Field(default=4, ge=1)
    keep_quoted: bool = True
    reject_answers: bool = True
    #: Faithfulness checks (bpo_core.rewrite.faithfulness): specifics kept, none invented, task kept.
    faithfulness: bool = True
    #: Longer instructions are not rewritten (style="rewrite" falls back to an addition).
    max_rewrite_words: int = Field(default=150, ge=1)
    #: The most words an addition (style="augment") may have.
    max_addition_words: int = Field(default=50, ge=1)
    #: Keep only an addition's grounded guidance clauses (bpo_core.rewrite.faithfulness.ground_addition).
    #: Right for small local models; chat-model optimizers turn it off by default (they know the topics).
    ground_additions: bool = True
    #: Ask the model's learned addition guard (``bpo_core.addition_probe``), when it ships one,
    #: whether an addition that passed the rules helps this prompt; drop it when not.
    learned: bool = True
    #: Keep an addition when the learned guard's probability that it helps is at least this
    #: (``None``: the threshold shipped with the guard). Lower keeps more additions.
    learned_threshold: float | None = Field(default=None, ge=0, le=1)
    #: Where the model's learned guard has a safety gate (``bpo_core.addition_probe``) and it
    #: expects a request to need one, append one of its fixed safety notes instead of a generic
    #: addition ("Point out any legal, safety or ethical concerns involved, and suggest responsible
    #: alternatives that meet the underlying need."). ``False``: such requests get what the rules
    #: alone give them (a request the risk rules flag is left unchanged).
    safety_notes: bool = True


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None
    #: Higher is better; used to pick among several candidate rewrites.
    score: float


def protected_phrases(text: str) -> list[str]:
    """Quoted passages and inline code in ``text``: they must appear verbatim in a rewrite."""
    return [m.group(0) for m in _QUOTED.finditer(text)]


def keyword_recall(original: str, rewrite: str) -> tuple[float, list[str]]:
    """Share of the original's content words that the rewrite keeps, and the ones it drops."""
    wanted = list(dict.fromkeys(content_words(original)))
    if not wanted:
        return 1.0, []
    have = {stem(w) for w in words(rewrite)}
    missing = [w for w in wanted if stem(w) not in have]
    return 1 - len(missing) / len(wanted), missing


def check(original: str, rewrite: str, config: GuardConfig | None = None) -> Verdict:
    """Judge ``rewrite`` as a replacement for ``original`` (both instruction text only)."""
    config = config or GuardConfig()
    if not rewrite.strip():
        return Verdict(False, "empty rewrite", 0.0)
    if not config.enabled:
        return Verdict(True, None, 1.0)
    n_orig, n_new = max(len(words(original)), 1), len(words(rewrite))
    ratio = n_new / n_orig
    long_ratio = n_new / max(n_orig, config.short_prompt_words)
    recall, missing = keyword_recall(original, rewrite)
    # Prefer rewrites that keep the request and add moderately (the authors' rewrites add ~1.5x).
    score = recall - 0.05 * abs(ratio - 1.5)
    if config.reject_answers:
        head = rewrite.lstrip(" \"'*#").lower()
        opener = next((o for o in ANSWER_OPENERS if head.startswith(o)), None)
        if opener and not original.lower().lstrip().startswith(opener):
            return Verdict(False, f"looks like an answer, not a rewrite: starts with {opener!r}", score)
    if ratio < config.min_length_ratio:
        return Verdict(False, f"rewrite too short: {n_new} words for {n_orig}", score)
    if long_ratio > config.max_length_ratio:
        return Verdict(False, f"rewrite too long: {n_new} words for {n_orig}", score)
    if recall < config.min_keyword_recall:
        return Verdict(False, f"rewrite drops key words: {', '.join(missing[:5])}", score)
    if config.keep_quoted:
        lost = [p for p in protected_phrases(original) if p not in rewrite]
        if lost:
            return Verdict(False, f"rewrite changes quoted text: {lost[0]!r}", score)
    return Verdict(True, None, score)
