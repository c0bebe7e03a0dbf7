"""Faithfulness checks: a rewrite or an addition must never change what the user meant.

Judge-free and cheap, run on every candidate:

* **specifics**: the concrete things a prompt pins down (numbers, identifiers and code tokens,
  names, acronyms, quoted text, URLs and e-mail addresses). A rewrite keeps every one, and neither
  a rewrite nor an addition brings in specifics the user did not give (a technology, a name, a
  number, a new acronym).
* **task kind**: write/create, summarize, translate, edit and code requests stay what they are.
* **shape**: not an answer or a refusal, no claim that pasted material is cut off, placeholders
  kept, length within bounds.
"""

from __future__ import annotations

import re

from bpo_core.guard import ANSWER_OPENERS, GuardConfig, Verdict, check, words
from bpo_core.language import looks_english
from bpo_core.rewrite.segment import PLACEHOLDERS

_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"')\]]+", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_QUOTED = re.compile(r'"([^"\n]{3,})"|“([^”\n]{3,})”|`([^`\n]+)`')
_NUMBER = re.compile(r"(?<![\w.])[$€£]?\d+(?:[.,:/]\d+)*%?")
# Identifiers and code tokens: snake_case, camelCase, dotted.names, letters mixed with digits, calls.
_IDENT = re.compile(
    r"\b(?:[A-Za-z_]\w*_\w+|[a-z]+[A-Z]\w*|[A-Za-z]\w*(?:\.[A-Za-z_]\w*)+|[A-Za-z]+\d+\w*|\d+[A-Za-z]+\w*)\b|\w+\(\)"
)
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9&]{1,}(?=s?\b)")
_CAPITALIZED = re.compile(r"\b[A-Z][a-z]+(?=(?:['’]s)?\b)")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]\s*|[\"“(\[]\s*|-\s+|\*\s*)$")
_INCOMPLETE = re.compile(
    r"\b(?:cut off|truncated|incomplete|unfinished|partial(?:ly)?|missing (?:part|text|code))\b", re.I
)

#: Capitalised words that are not names: sentence openers and words people capitalise anyway.
_COMMON = frozenset(
    """i i'm i've i'd i'll a an the this that these those it its there here what which who whom whose when where why
    how can could would should will shall may might must do does did is are was were be please write explain give
    make create list describe tell show provide use using include cover start begin keep add consider focus note
    mention ask answer help suggest compare summarize summarise translate rewrite edit fix improve generate draft
    design compose offer organize organise structure present discuss outline identify highlight clarify define
    state avoid walk end close follow check then also first second finally if for and or but so as in on at by to
    of with from into about after before while since because each every all any some both either neither no not
    yes hi hello hey dear thanks thank you your my me we our us he she they them his her their mr mrs ms dr
    monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
    september october november december english""".split()
)

#: Lower-case technology words: naming one the user did not is an invented specific.
_TECH = frozenset(
    """python javascript typescript java kotlin swift rust golang ruby php perl scala haskell matlab c++ c# r sql
    mysql postgresql postgres sqlite mongodb redis excel vba powershell bash linux windows macos android ios react
    angular vue django flask fastapi node node.js nodejs express spring tensorflow pytorch pandas numpy docker
    kubernetes aws azure gcp html css jquery wordpress shopify salesforce sap unity unreal arduino raspberry
    chatgpt gpt openai""".split()
)

# A verb is the request when it opens a sentence or clause, or follows a request phrase ("can you").
_REQUEST = (
    r"(?:^|[.!?:;\n]\s*|\b(?:please|pls|can you|could you|would you|will you|you to|help me|i want to|i need to"
    r"|i'd like to|i would like to|let's|and|then|also)\s+)(?:please\s+)?"
)
_TASKS: dict[str, re.Pattern[str]] = {
    "create": re.compile(
        _REQUEST + r"(?:write|create|generate|compose|draft|design|make|build|produce|develop|craft|come up with"
        r"|invent|give me|provide me with|brainstorm)\b",
        re.I,
    ),
    "summarize": re.compile(r"\b(?:summari[sz]e|summary|summaries|tl;?dr|condense|recap)\b", re.I),
    "translate": re.compile(r"\b(?:translat(?:e|ion|ing))\b", re.I),
    "edit": re.compile(
        _REQUEST + r"(?:rewrite|re-write|rephrase|paraphrase|edit|proofread|polish|correct|reword|shorten|improve"
        r"|revise|fix (?:the |my |this )?(?:grammar|spelling|text|sentence|wording))\b",
        re.I,
    ),
    "code": re.compile(
        r"\b(?:code|function|script|program|implement|debug|refactor|method|query|regex|algorithm)\b", re.I
    ),
}
#: Task kinds a rewrite must keep when the original asks for them.
KEPT_TASKS = ("create", "summarize", "translate", "edit", "code")


def _sentence_start(text: str, index: int) -> bool:
    return bool(_SENTENCE_START.search(text[:index]))


def _strip_placeholders(text: str) -> str:
    for p in PLACEHOLDERS:
        text = text.replace(p, " ")
    return text


def specifics(text: str) -> dict[str, set[str]]:
    """The concrete things ``text`` pins down, by kind (values as written)."""
    text = _strip_placeholders(text)
    found: dict[str, set[str]] = {
        k: set() for k in ("url", "email", "quoted", "number", "identifier", "acronym", "name")
    }
    found["url"] = {m.group(0).rstrip(".,;:!?") for m in _URL.finditer(text)}
    found["email"] = set(_EMAIL.findall(text))
    rest = _EMAIL.sub(" ", _URL.sub(" ", text))
    found["quoted"] = {next(g for g in m.groups() if g) for m in _QUOTED.finditer(rest)}
    found["number"] = {m.group(0) for m in _NUMBER.finditer(rest)}
    found["identifier"] = {m.group(0) for m in _IDENT.finditer(rest) if not m.group(0).isdigit()}
    found["acronym"] = {m.group(0) for m in _ACRONYM.finditer(rest) if m.group(0).lower() not in ("i", "ok", "ai")}
    for m in _CAPITALIZED.finditer(rest):
        word = m.group(0)
        if word.lower() in _COMMON or word in found["acronym"]:
            continue
        if _sentence_start(rest, m.start()):
            continue  # a sentence opener is only a name if it appears mid-sentence elsewhere
        found["name"].add(word)
    lowered = {w.lower() for w in re.findall(r"[\w+#.]+", rest)}
    found["name"] |= {t for t in _TECH if t in lowered}
    return found


def _present(value: str, text: str, kind: str) -> bool:
    if kind in ("name", "acronym"):
        return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.I) is not None
    if kind == "number":
        return re.search(rf"(?<![\w.]){re.escape(value)}(?![\d])", text) is not None
    if kind == "url":
        return value.rstrip("/") in text
    return value in text


def missing_specifics(original: str, candidate: str) -> list[str]:
    """Specifics of ``original`` that ``candidate`` lost."""
    return [
        v for kind, values in specifics(original).items() for v in sorted(values) if not _present(v, candidate, kind)
    ]


def novel_specifics(original: str, candidate: str) -> list[str]:
    """Specifics of ``candidate`` the user never gave in ``original``."""
    out = []
    for kind, values in specifics(candidate).items():
        for v in sorted(values):
            if kind == "quoted" or _present(v, original, kind):
                continue
            if kind == "identifier" and _present(v, original, "name"):
                continue
            out.append(v)
    return out


def task_kinds(text: str) -> set[str]:
    text = _strip_placeholders(text)
    return {name for name, pattern in _TASKS.items() if pattern.search(text)}


def check_rewrite(view: str, rewrite: str, config: GuardConfig | None = None) -> Verdict:
    """May ``rewrite`` replace the instruction ``view``? (both with material as placeholders)."""
    config = config or GuardConfig()
    drift = check(view, rewrite, config)  # empty, an answer, length, key words, quoted text
    if not drift.ok or not config.enabled:
        return drift
    if [p for p in re.findall("|".join(map(re.escape, PLACEHOLDERS)), rewrite)] != re.findall(
        "|".join(map(re.escape, PLACEHOLDERS)), view
    ):
        return Verdict(False, "rewrite moves or drops the pasted material", drift.score)
    if not config.faithfulness:
        return Verdict(True, None, drift.score)
    if len(words(view)) > config.max_rewrite_words:
        return Verdict(False, f"instruction longer than {config.max_rewrite_words} words: not rewritten", drift.score)
    lost = missing_specifics(view, rewrite)
    if lost:
        return Verdict(False, f"rewrite drops specifics: {', '.join(lost[:5])}", drift.score)
    new = novel_specifics(view, rewrite)
    if new:
        return Verdict(False, f"rewrite invents specifics: {', '.join(new[:5])}", drift.score)
    changed = [t for t in KEPT_TASKS if t in task_kinds(view) and t not in task_kinds(rewrite)]
    if changed:
        return Verdict(False, f"rewrite changes the task: no longer asks to {changed[0]}", drift.score)
    return Verdict(True, None, drift.score)


def check_addition(view: str, addition: str, config: GuardConfig | None = None) -> Verdict:
    """May ``addition`` be appended to the user's prompt (whose optimizer view is ``view``)?"""
    config = config or GuardConfig()
    text = addition.strip()
    if not text:
        return Verdict(False, "nothing to add", 0.0)
    n = len(words(text))
    score = 1.0 - 0.01 * abs(n - 25)
    if not config.enabled:
        return Verdict(True, None, score)
    if n > config.max_addition_words:
        return Verdict(False, f"addition too long: {n} words (max {config.max_addition_words})", score)
    if n < 3:
        return Verdict(False, f"addition too short: {n} words", score)
    head = text.lstrip(" \"'*#").lower()
    opener = next((o for o in (*ANSWER_OPENERS, "i ", "i'", "my ", "as a ", "as an ") if head.startswith(o)), None)
    if opener:
        return Verdict(False, f"addition answers or refuses instead of guiding: starts with {opener.strip()!r}", score)
    if any(p in text for p in PLACEHOLDERS) or "[pasted" in text.lower():
        return Verdict(False, "addition mentions a placeholder", score)
    if not looks_english(text):
        return Verdict(False, "addition is not English", score)
    if any(p in view for p in PLACEHOLDERS) and _INCOMPLETE.search(text):
        return Verdict(False, "addition claims the pasted material is incomplete", score)
    if _squash(text) in _squash(view):
        return Verdict(False, "addition repeats the prompt", score)
    if config.faithfulness:
        new = novel_specifics(view, text)
        if new:
            return Verdict(False, f"addition invents specifics: {', '.join(new[:5])}", score)
    return Verdict(True, None, score)


def _squash(text: str) -> str:
    return re.sub(r"\W+", "", text.lower())
