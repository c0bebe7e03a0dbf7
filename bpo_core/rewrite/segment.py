"""Segmentation: find the user's instruction and the material pasted with it.

Real prompts mix a request ("Summarize this text:", "Fix the bug below") with pasted material
(documents, code, transcripts, e-mails, tables). The material must reach the target LLM byte for
byte and must never reach the optimizer model, wherever it sits: after the instruction, before
it, or between two parts of it.

The prompt is cut into units (sentences of lines, whole code fences). A small logistic model
(weights in ``bpo_core/data/segmenter.json``, trained on labelled real prompts by
``scripts/train_segmenter.py``) gives each unit a probability of being instruction. A layout is
one contiguous run of units marked as material (possibly none), with instruction before and/or
after it; every layout is scored at once (prefix sums) and their scores give the posterior of the
best one. When that posterior is low and there is material, the segmenter abstains: the prompt
is then passed through unchanged, with the reason.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_PATH = Path(__file__).resolve().parent.parent / "data" / "segmenter.json"

#: The stand-ins the optimizer model sees instead of pasted material.
PLACEHOLDERS = ("[pasted text]", "[pasted code]")

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
# A sentence ends at . ? ! (or a colon) when the next one visibly starts: a capital, a quote, a bracket.
_SENTENCE_END = re.compile(r"(?<=[.?!:])[ \t]*(?=[\"“'\[(<A-Z])|(?<=[.?!])[ \t]+(?=[a-z0-9])")
_CODE_LINE = re.compile(
    r"[{};]\s*$|^\s*(?:def |class |import |from \S+ import|#include|public |private |function |return\b|const |let |var "
    r"|<\w+[^>]*>|</\w+>|SELECT |\$ )|==|!=|->|=>|\w+\([^)]*\)\s*[:{;]?\s*$"
)
_REQUEST_START = re.compile(
    r"^\W*(?:please|pls|can you|could you|would you|will you|i want|i need|i'd like|i would like|help|write|explain"
    r"|summari[sz]e|translate|create|make|generate|give|list|describe|tell|rewrite|rephrase|paraphrase|fix|correct"
    r"|improve|edit|convert|compose|draft|design|suggest|provide|act as|you are|imagine|pretend|analy[sz]e|compare"
    r"|review|check|find|identify|extract|classify|answer|respond|reply|continue|complete|refer|based on|using|use"
    r"|given|now|what|how|why|who|which|where|when|is there|are there|do you|does|should|instructions?)\b",
    re.I,
)
_REFERS = re.compile(
    r"\b(?:following|below|above|this (?:text|code|article|email|e-mail|passage|paragraph|message|essay|story|"
    r"transcript|document|data|table|function|script|program|letter|poem|content|list)|these|here is|here's|"
    r"attached|given|provided)\b",
    re.I,
)
_YOU = re.compile(r"\b(?:you|your)\b", re.I)
_ME = re.compile(r"\b(?:i|me|my|i'm|i've|we|us|our)\b", re.I)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|[a-z][.)])\s")
_URL = re.compile(r"https?://|www\.")


def looks_like_code(text: str) -> bool:
    """Whether pasted ``text`` is mostly source code, markup or a shell session."""
    if "```" in text:
        return True
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return False
    return sum(bool(_CODE_LINE.search(line)) for line in lines) >= max(2, 0.3 * len(lines))


def material_placeholder(material: str) -> str:
    """The stand-in the optimizer model sees instead of pasted material (it never sees the material)."""
    return PLACEHOLDERS[1] if looks_like_code(material) else PLACEHOLDERS[0]


@dataclass(frozen=True)
class Span:
    """A run of the prompt: ``prompt[start:end]`` is ``kind`` (``"instruction"`` or ``"material"``)."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Segmentation:
    """Where the instruction and the material of one prompt are.

    ``spans`` cover the prompt exactly, in order; material spans hold no leading or trailing
    whitespace (it belongs to the instruction around them).
    """

    prompt: str
    spans: tuple[Span, ...]
    #: Posterior probability of this layout among all layouts the model considered.
    confidence: float

    @property
    def materials(self) -> list[str]:
        return [self.prompt[s.start : s.end] for s in self.spans if s.kind == "material"]

    @property
    def has_material(self) -> bool:
        return any(s.kind == "material" for s in self.spans)

    def abstains(self, min_confidence: float) -> bool:
        """Whether the optimizer leaves this prompt alone: material found, but not with confidence."""
        return self.has_material and self.confidence < min_confidence

    @property
    def instruction(self) -> str:
        """The user's own words, material left out (parts joined by a blank line)."""
        parts = [self.prompt[s.start : s.end].strip() for s in self.spans if s.kind == "instruction"]
        return "\n\n".join(p for p in parts if p)

    def view(self) -> str:
        """What the optimizer model sees: the prompt with each material replaced by its placeholder."""
        out = [
            self.prompt[s.start : s.end]
            if s.kind == "instruction"
            else material_placeholder(self.prompt[s.start : s.end])
            for s in self.spans
        ]
        return "".join(out).strip()

    def placeholders(self) -> list[str]:
        return [material_placeholder(m) for m in self.materials]

    def fill(self, view: str) -> str | None:
        """Put the material back into a rewritten ``view``; ``None`` unless it has every placeholder once, in order."""
        wanted = self.placeholders()
        found = re.findall("|".join(re.escape(p) for p in PLACEHOLDERS), view)
        if found != wanted:
            return None
        pieces = re.split("|".join(re.escape(p) for p in PLACEHOLDERS), view)
        out = [pieces[0]]
        for material, piece in zip(self.materials, pieces[1:]):
            out += [material, piece]
        return "".join(out)


# ----------------------------------------------------------------------------- units and features
def units(prompt: str) -> list[tuple[int, int]]:
    """Character spans of the prompt's units: whole code fences, else sentences of lines."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for fence in _FENCE.finditer(prompt):
        spans += _line_units(prompt, pos, fence.start())
        spans.append((fence.start(), fence.end()))
        pos = fence.end()
    spans += _line_units(prompt, pos, len(prompt))
    return spans


def _line_units(prompt: str, start: int, end: int) -> list[tuple[int, int]]:
    out = []
    for line in re.finditer(r"[^\n]+", prompt[start:end]):
        text = line.group(0)
        if not text.strip():
            continue
        base = start + line.start()
        cut = 0
        for boundary in _SENTENCE_END.finditer(text):
            if boundary.start() > cut and text[cut : boundary.start()].strip():
                out.append(_trim(prompt, base + cut, base + boundary.start()))
                cut = boundary.end()
        if text[cut:].strip():
            out.append(_trim(prompt, base + cut, base + len(text)))
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


FEATURES = (
    "bias", "first", "last", "position", "only_unit", "line_start", "log_words", "log_units", "log_lines",
    "ends_colon", "ends_question", "ends_period", "request_start", "refers", "you", "me", "code", "fence",
    "symbols", "digits", "bullet", "quote_start", "upper_start", "lower_start", "url", "after_colon",
    "before_colon_line", "short_line", "long_unit", "blank_before", "blank_after", "title_case",
    "lead_in_before", "request_after",
)  # fmt: skip


def unit_features(prompt: str, spans: list[tuple[int, int]]) -> list[list[float]]:
    """One feature vector (in ``FEATURES`` order) per unit."""
    n = len(spans)
    n_lines = prompt.count("\n") + 1
    texts = [prompt[a:b] for a, b in spans]
    # Context of the whole prompt: a lead-in ("... below:", "the following") before a unit makes
    # it likelier material; a short request after it makes it likelier material too.
    lead_in = [False] * n
    for i in range(1, n):
        prev = texts[i - 1]
        lead_in[i] = lead_in[i - 1] or prev.rstrip().endswith(":") or bool(_REFERS.search(prev))
    request_after = [False] * n
    for i in range(n - 2, -1, -1):
        nxt = texts[i + 1]
        request_after[i] = request_after[i + 1] or (bool(_REQUEST_START.search(nxt)) and len(nxt.split()) <= 40)
    rows = []
    for i, (start, end) in enumerate(spans):
        text = prompt[start:end]
        words = text.split()
        line_start = start == 0 or prompt[start - 1] == "\n" or prompt[:start].rstrip(" \t").endswith("\n")
        before = prompt[:start].rstrip(" \t")
        after = prompt[end:].lstrip(" \t")
        prev_text = prompt[spans[i - 1][0] : spans[i - 1][1]] if i else ""
        next_text = prompt[spans[i + 1][0] : spans[i + 1][1]] if i + 1 < n else ""
        chars = max(len(text), 1)
        letters = [c for c in text if c.isalpha()]
        title = sum(1 for w in words if w[:1].isupper()) / max(len(words), 1)
        rows.append(
            [
                1.0,
                float(i == 0),
                float(i == n - 1),
                i / max(n - 1, 1),
                float(n == 1),
                float(line_start),
                math.log1p(len(words)),
                math.log1p(n),
                math.log1p(n_lines),
                float(text.rstrip().endswith(":")),
                float(text.rstrip().endswith("?")),
                float(text.rstrip().endswith(".")),
                float(bool(_REQUEST_START.search(text))),
                float(bool(_REFERS.search(text))),
                float(bool(_YOU.search(text))),
                float(bool(_ME.search(text))),
                float(bool(_CODE_LINE.search(text))),
                float(text.startswith("```")),
                sum(1 for c in text if not c.isalnum() and not c.isspace()) / chars,
                sum(1 for c in text if c.isdigit()) / chars,
                float(bool(_BULLET.match(text))),
                float(text[:1] in "\"“'[("),
                float(bool(letters) and text.lstrip("\"“'[(*#-• ")[:1].isupper()),
                float(text[:1].islower()),
                float(bool(_URL.search(text))),
                float(prev_text.rstrip().endswith(":")),
                float(next_text.rstrip().endswith(":") and not line_start),
                float(len(words) <= 3),
                float(len(words) > 60),
                float(before.endswith("\n\n") or before.endswith("\n\n\n")),
                float(after.startswith("\n\n")),
                title,
                float(lead_in[i]),
                float(request_after[i]),
            ]
        )
    return rows


GAP_FEATURES = (
    "bias", "newline", "blank_line", "prev_colon", "prev_question", "prev_period", "prev_refers", "prev_request",
    "next_quote", "next_fence", "next_code", "prev_code", "next_request", "next_refers", "next_bullet",
    "prev_bullet", "prev_log_words", "next_log_words", "next_lower", "position",
)  # fmt: skip


def gap_features(prompt: str, spans: list[tuple[int, int]]) -> list[list[float]]:
    """One feature vector (in ``GAP_FEATURES`` order) per gap between units ``k-1`` and ``k``, k = 1..n-1."""
    rows = []
    n = len(spans)
    for k in range(1, n):
        prev, nxt = prompt[spans[k - 1][0] : spans[k - 1][1]], prompt[spans[k][0] : spans[k][1]]
        between = prompt[spans[k - 1][1] : spans[k][0]]
        rows.append(
            [
                1.0,
                float("\n" in between),
                float(between.count("\n") >= 2),
                float(prev.rstrip().endswith(":")),
                float(prev.rstrip().endswith("?")),
                float(prev.rstrip().endswith(".")),
                float(bool(_REFERS.search(prev))),
                float(bool(_REQUEST_START.search(prev))),
                float(nxt[:1] in "\"“'[(`"),
                float(nxt.startswith("```")),
                float(bool(_CODE_LINE.search(nxt))),
                float(bool(_CODE_LINE.search(prev))),
                float(bool(_REQUEST_START.search(nxt))),
                float(bool(_REFERS.search(nxt))),
                float(bool(_BULLET.match(nxt))),
                float(bool(_BULLET.match(prev))),
                math.log1p(len(prev.split())),
                math.log1p(len(nxt.split())),
                float(nxt[:1].islower()),
                k / n,
            ]
        )
    return rows


# ----------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class SegmenterModel:
    """Per-unit logistic weights, a prior on each layout kind, and the abstention threshold."""

    weights: tuple[float, ...]
    #: Logistic weights over ``GAP_FEATURES``: material starts / ends at this gap.
    start_weights: tuple[float, ...] = ()
    end_weights: tuple[float, ...] = ()
    #: Log-prior added to layouts with material before / after / around the instruction.
    prior_before: float = 0.0
    prior_after: float = 0.0
    prior_around: float = -2.0
    #: Log-prior of the layout without material.
    prior_none: float = 0.0
    #: Below this layout posterior a prompt with material is left unchanged.
    min_confidence: float = 0.5

    def unit_logits(self, prompt: str, spans: list[tuple[int, int]]) -> list[float]:
        return [sum(w * x for w, x in zip(self.weights, row)) for row in unit_features(prompt, spans)]

    def gap_logits(self, prompt: str, spans: list[tuple[int, int]]) -> tuple[list[float], list[float]]:
        """Log-odds that material starts / ends at each interior gap (k = 1..n-1)."""
        rows = gap_features(prompt, spans)
        start = (
            [sum(w * x for w, x in zip(self.start_weights, row)) for row in rows]
            if self.start_weights
            else [0.0] * len(rows)
        )
        end = (
            [sum(w * x for w, x in zip(self.end_weights, row)) for row in rows]
            if self.end_weights
            else [0.0] * len(rows)
        )
        return start, end


@functools.lru_cache(maxsize=1)
def default_model() -> SegmenterModel:
    data = json.loads(WEIGHTS_PATH.read_text(encoding="utf-8"))
    if tuple(data["features"]) != FEATURES or tuple(data["gap_features"]) != GAP_FEATURES:
        raise RuntimeError(f"{WEIGHTS_PATH} was trained on other features; re-run scripts/train_segmenter.py")
    return SegmenterModel(
        weights=tuple(data["weights"]),
        start_weights=tuple(data["start_weights"]),
        end_weights=tuple(data["end_weights"]),
        prior_before=data["prior_before"],
        prior_after=data["prior_after"],
        prior_around=data["prior_around"],
        prior_none=data["prior_none"],
        min_confidence=data["min_confidence"],
    )


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > -30 else x


def segment(prompt: str, model: SegmenterModel | None = None) -> Segmentation:
    """Find the instruction and the material in ``prompt``.

    A layout marks units ``[a, b)`` as material (``a == b``: none), leaving at least one unit of
    instruction. Its score adds the units' log-probabilities, the log-odds that material starts
    at gap ``a`` and ends at gap ``b`` (the prompt's edges get the layout priors instead), and the
    "around" prior when instruction sits on both sides. All O(n^2) layouts are maximised and
    summed in O(n) with prefix sums, running maxima and running log-sum-exps.
    """
    model = model or default_model()
    spans = units(prompt)
    if len(spans) <= 1:
        return Segmentation(prompt, (Span("instruction", 0, len(prompt)),), 1.0)
    return best_layout(prompt, spans, model.unit_logits(prompt, spans), model.gap_logits(prompt, spans), model)


def best_layout(
    prompt: str,
    spans: list[tuple[int, int]],
    logits: list[float],
    gaps: tuple[list[float], list[float]],
    model: SegmenterModel,
) -> Segmentation:
    """The most probable layout given the unit and gap logits (see :func:`segment`)."""
    n = len(spans)
    inst, mat = [0.0], [0.0]  # prefix sums of log p(instruction), log p(material)
    for z in logits:
        inst.append(inst[-1] + _log_sigmoid(z))
        mat.append(mat[-1] + _log_sigmoid(-z))
    start_gap, end_gap = gaps
    # Material [a, b) scores f(a) + g(b) (+ prior_around when 0 < a and b < n).
    f = [model.prior_before] + [inst[a] - mat[a] + start_gap[a - 1] for a in range(1, n)]
    g = (
        [0.0]
        + [mat[b] - inst[b] + inst[n] + end_gap[b - 1] for b in range(1, n)]
        + [mat[n] - inst[n] + inst[n] + model.prior_after]
    )
    best: tuple[float, int, int] = (inst[n] + model.prior_none, 0, 0)  # no material
    total = [best[0]]
    run_max, run_arg, run_lse = -math.inf, 0, -math.inf  # over a in [1, b)
    for b in range(1, n + 1):
        if b < n:  # a = 0: material first
            best = max(best, (f[0] + g[b], 0, b))
            total.append(f[0] + g[b])
        if b >= 2:
            a = b - 1
            if f[a] > run_max:
                run_max, run_arg = f[a], a
            run_lse = _logaddexp(run_lse, f[a])
            around = model.prior_around if b < n else 0.0
            best = max(best, (run_max + g[b] + around, run_arg, b))
            total.append(run_lse + g[b] + around)
    top = max(total)
    confidence = math.exp(best[0] - top) / sum(math.exp(t - top) for t in total)
    _, a, b = best
    if a == b:
        return Segmentation(prompt, (Span("instruction", 0, len(prompt)),), confidence)
    start, end = spans[a][0], spans[b - 1][1]
    out = []
    if start > 0:
        out.append(Span("instruction", 0, start))
    out.append(Span("material", start, end))
    if end < len(prompt):
        out.append(Span("instruction", end, len(prompt)))
    return Segmentation(prompt, tuple(out), confidence)


def _logaddexp(x: float, y: float) -> float:
    if x < y:
        x, y = y, x
    return x if y == -math.inf else x + math.log1p(math.exp(y - x))
