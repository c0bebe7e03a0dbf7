"""Faithfulness checks: a rewrite or an addition must never change what the user meant.

Additions (style="augment") get two more steps, because a small model's additions go wrong in
known ways (measured by a strong LLM judge on held-out prompts: invented aspects, guessed facts,
hedges, assumptions, safety notes that do not fit):

* :func:`addition_conflict`: prompts where any addition tends to contradict the user (output-only
  or no-explanation constraints, role-play and game set-ups, jailbreak set-ups, songs and poems)
  get none;
* :func:`ground_addition`: an addition is cut into guidance clauses ("explain ...", "include
  ...") and only clauses whose every word is the user's own or recurring guidance vocabulary (the
  teacher's, ``data/guidance_words.json``) are kept; claims ("note that ...") and conditions
  ("if ...") are dropped.

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

import functools
import json
import re
from pathlib import Path

from bpo_core.guard import ANSWER_OPENERS, STOPWORDS, GuardConfig, Verdict, check, stem, words
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


# ----------------------------------------------------------------------------------- additions
LEXICON_PATH = Path(__file__).resolve().parent.parent / "data" / "guidance_words.json"

_CONFLICTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "the prompt limits what the answer may contain",
        re.compile(
            r"\b(?:no|without|don'?t|do not|never)\s+(?:any\s+)?(?:explanations?|explain|comments?|commentary|notes?|extra text|other text)\b"
            r"|\b(?:only|just)\s+(?:reply|respond|answer|output|return|write|give|print|show|say)\b"
            r"|\b(?:reply|respond|answer|output|return)\s+(?:only|with only|just)\b|\bnothing else\b|\bone[- ]word\b"
            r"|\b(?:in|under|within|at most|no more than|less than|fewer than|maximum of|max)\s+\d+\s+"
            r"(?:words?|sentences?|characters?|lines?|paragraphs?)\b|\b\d+\s+(?:words?|characters?) or (?:less|fewer)\b"
            r"|\bin (?:one|a single) (?:sentence|line|word|paragraph)\b"
            r"|\b(?:terminal|console|shell|interpreter|compiler)\b",
            re.I,
        ),
    ),
    (
        "the prompt sets up a role, a game or a persona",
        re.compile(
            r"^\W*(?:(?:hi|hello|hey)\W+)?(?:(?:i want you to|i'd like you to|please|now|from now on,?)\s+)?(?:act as|act like|you are|you're|"
            r"you will be|pretend|imagine you|role-?play|let'?s play|play a game|from now on)\b"
            r"|^\W*as an? [\w -]{2,40}, (?:I|you) (?:can|will|am|are|'ll)\b",
            re.I,
        ),
    ),
    (
        "the prompt sets up a later step",
        re.compile(
            r"\bI (?:am|'m) going to (?:give|send|provide|paste|share|ask)\b|\bI will (?:give|send|provide|paste|share)\b"
            r"|\b(?:if you understand|acknowledged?|wait (?:for|until)|please provide me with|ask me\b)",
            re.I,
        ),
    ),
    (
        "the prompt tries to change the assistant's rules",
        re.compile(
            r"\bignore (?:all |any )?(?:the )?previous\b|\bjailbreak|\bDAN\b|filter improvement mode|developer mode",
            re.I,
        ),
    ),
    (
        "the prompt generalizes about a group of people",
        re.compile(
            r"\b(?:women|men|girls|boys|wives|husbands|blacks|whites|(?:black|white|old|fat|poor) people|asians?|"
            r"latinos?|hispanics?|mexicans?|muslims?|jews?|jewish|christians?|atheists?|gays?|lesbians?|"
            r"transgender|immigrants?|foreigners|liberals|conservatives|republicans|democrats)\b",
            re.I,
        ),
    ),
    (
        "the prompt asks for a piece of creative writing",
        re.compile(
            r"\b(?:write|compose|draft|create|give me|make|come up with)\b[^.?!\n]{0,60}\b(?:story|stories|scene|"
            r"message|letter|card|title|headline|essay|joke|tweet|caption|slogan|speech|toast|bio|dialogue|"
            r"writing prompts?|tagline|greeting|wish(?:es)?)\b",
            re.I,
        ),
    ),
    (
        "the prompt asks for a song or a poem",
        re.compile(r"\b(?:poem|poetry|haiku|limerick|sonnet|song|lyrics|rap|jingle|verses?)\b", re.I),
    ),
    (
        "the request touches on harm, crime or someone's privacy",
        re.compile(
            # Whole word forms where a stem would catch innocent words (Robert, robust, harmony, Spyder).
            r"\b(?:steal\w*|stole|rob(?:s|bed|bing|ber|bers|bery|beries)?|kill\w*|murder\w*|hurt\w*|"
            r"harm(?:s|ed|ing|ful|fully)?|attack\w*|weapons?|guns?|firearms?|bombs?|"
            r"explosives?|poison\w*|drugs?|cocaine|heroin|meth|weed|hack(?:s|ed|ing|ers?)?|pirat(?:e|es|ed|ing)|piracy|"
            r"torrent\w*|illegal\w*|cheat(?:s|ed|ing|ers?)?|"
            r"revenge|prank\w*|insults?|racist|slurs?|suicid\w*|abus\w*|(?:home|residential|email) address|"
            r"phone number|social security|credit card|stalk(?:s|ed|ing|ers?)?|spy|spies|spied|spying|spyware|"
            r"blackmail\w*|scams?|scammed|scammers?|scamming|fraud\w*|shoplift\w*|"
            r"smuggl\w*|bully\w*|bullied|bullies|kidnap\w*|violen\w*|sex|sexual\w*|sexy|sexting|porn\w*)\b",
            re.I,
        ),
    ),
)


#: Conflicts where a safety note may still fit (the model's safety gate decides).
RISK_CONFLICTS = frozenset(
    {"the prompt generalizes about a group of people", "the request touches on harm, crime or someone's privacy"}
)


#: A user who speaks of harming themselves (first person only: "suicide rates" is a question about
#: the world): the learned guard's crisis note always goes with it, when there is one.
SELF_HARM = re.compile(
    r"\b(?:kill(?:ing)? myself|end(?:ing)? my (?:own )?life|take my (?:own )?life|commit(?:ting)? suicide|"
    r"(?:hurt|hurting|harm|harming|cut|cutting|starve|starving) myself|(?:I|i) want to die|"
    r"(?:don'?t|do not) want to (?:live|be alive|wake up))\b",
    re.I,
)


def addition_conflict(view: str) -> str | None:
    """Why no addition should be made to this prompt, or ``None``."""
    text = _strip_placeholders(view)
    return next((why for why, pattern in _CONFLICTS if pattern.search(text)), None)


# Verbs that open a guidance clause ("..., and include a short example").
_VERBS = (
    r"explain|cover|include|show|give|note|mention|address|use|keep|list|describe|compare|suggest|provide|offer|"
    r"organi[sz]e|add|walk|outline|discuss|define|clarify|highlight|point|summari[sz]e|present|state|ask|avoid|"
    r"focus|structure|distinguish|acknowledge|respond|label|format|group|rank|check|identify|consider|tailor|"
    r"break|cite|flag|contrast|weigh|illustrate|demonstrate|comment|specify"
)
_CLAUSE = re.compile(
    rf"(?:,\s*(?:and\s+|then\s+|plus\s+|but\s+)?|;\s*(?:and\s+)?|\s+and\s+(?:then\s+)?)"
    rf"(?=(?:briefly\s+|also\s+|then\s+)?(?:{_VERBS}|if|unless|assuming|when|since)\b)",
    re.I,
)
# Claims about the answer or the world, and conditions: a small model's guesses, never guidance.
_CLAIM = re.compile(
    r"^(?:briefly\s+|also\s+)?(?:note|mention|state|say|stress)\s+that\b|^(?:if|unless|assuming|when|since)\b", re.I
)
# Safety and legality framing: right only for some requests, and a small model cannot tell which.
_SAFETY = re.compile(
    r"\b(?:legal(?:ity|ly)?|illegal|lawful|unlawful|laws?|ethic(?:s|al)|harm(?:s|ful|ing)?|safe(?:ty|ly)?|risks?|"
    r"dangers?|dangerous|consequences?|privacy|consent|crisis|emergency|legitimate|respectful(?:ly)?|empathy|"
    r"stereotypes?|victims?|abuse|violence|injury|medical advice|professional help)\b",
    re.I,
)
# An enumeration of aspects ("..., such as X, Y and Z") is where a small model names what the user
# never raised; the clause before it may still be good guidance.
_ENUMERATION = re.compile(r",?\s+(?:such as|including|like|e\.g\.|for example|especially|particularly)\b.*$", re.I)
# Tone and manner are the user's to choose.
_TONE = re.compile(r"^(?:respond|reply|answer|write)\s+(?:with|in)\b|\btone\b|\bhumou?r\w*\b", re.I)
# A kept clause must point at something: the user's own words or a concrete part of an answer.
_ANCHORS = frozenset(
    """example examples code comments comment steps step reasoning reason reasons sections section formula
    calculation output summary table list lists sources source assumptions assumption limitations definition
    definitions pros cons trade-offs tradeoffs test tests command commands diagram outline structure headings
    heading term terms description descriptions explanation idea ideas option options point points case cases
    approach changes change practice practices placeholders placeholder paragraph paragraphs bullet bullets
    question questions answer answers result results version versions""".split()
)
# Explaining one's approach suits questions and code; for other deliverables it adds an unasked part.
_EXPLAINS = re.compile(
    r"^(?:briefly\s+)?(?:explain|walk through|describe)\s+(?:the|your|each|how)\s+(?:approach|steps?|process|method|reasoning|changes?|logic|calculation)",
    re.I,
)
# "Can you make me a picture?" asks for a deliverable, not an explanation.
_POLITE_REQUEST = re.compile(
    r"\b(?:can|could|would|will) you (?:please )?(?:make|write|create|draw|generate|build|compose|design|give)\b", re.I
)
# "the limitations of the data": what an addition refers to must be the user's or the answer's.
_REFERENT = re.compile(r"\b(?:of|about|in|for|behind|on) the (\w+)", re.I)
_ANSWER_PARTS = frozenset(
    """answer answers response approach question result results solution method methods process steps step output
    reasoning calculation code example examples explanation idea ideas point points list options option task""".split()
)
# Code in an addition presumes a technical request; a table presumes things to compare or list.
_CODE_WORDS = re.compile(r"\b(?:code|commented|command|commands|script|snippet)\b", re.I)
_TABLE = re.compile(r"\btables?\b", re.I)
_TABULAR = re.compile(r"\b(?:compar\w*|differen\w*|vs\.?|versus|pros|cons|options|tables?|lists?)\b", re.I)
_QUESTION = re.compile(
    r"\?|^\W*(?:what|how|why|which|who|when|where|explain|describe|tell me|can you explain)\b", re.I | re.M
)


@functools.lru_cache(maxsize=1)
def guidance_stems() -> frozenset[str]:
    return frozenset(json.loads(LEXICON_PATH.read_text(encoding="utf-8"))["stems"])


def ungrounded_words(view: str, text: str) -> list[str]:
    """Words of ``text`` that are neither the user's (``view``) nor recurring guidance vocabulary."""
    own = {stem(w) for w in words(view)}
    lexicon = guidance_stems()
    return [
        w for w in words(text) if w not in STOPWORDS and len(w) > 2 and stem(w) not in own and stem(w) not in lexicon
    ]


def _anchored(view: str, clause: str) -> bool:
    own = {stem(w) for w in words(view) if w not in STOPWORDS and len(w) > 2}
    return any(w in _ANCHORS or stem(w) in own for w in words(clause) if w not in STOPWORDS)


_NEGATED = re.compile(
    r"\b(?:without|no|not|never|don'?t|avoid|except)\s+(?:any\s+|a\s+|an\s+|the\s+|using\s+|creating\s+)?(\w+)", re.I
)


def negated_stems(view: str) -> set[str]:
    """Stems of what the user excluded ("without creating a table" -> ``table``, ``creat``)."""
    found = set()
    plain = _strip_placeholders(view)
    for m in _NEGATED.finditer(plain):
        tail = plain[m.start() : m.end() + 24]
        found |= {stem(w) for w in words(tail)[1:4] if w not in STOPWORDS and len(w) > 2}
    return found


def ground_addition(view: str, addition: str) -> str:
    """Keep the guidance clauses of ``addition`` that are grounded (see the module docstring); ``""`` if none."""
    text = addition.strip().rstrip(".!").strip()
    if not text:
        return ""
    kinds = task_kinds(view)
    deliverable = bool(kinds & {"create", "edit", "translate", "summarize"}) and "code" not in kinds
    plain = _strip_placeholders(view)
    explains_fit = not deliverable or (bool(_QUESTION.search(plain)) and not _POLITE_REQUEST.search(plain))
    technical = "code" in kinds or bool({w.lower() for w in words(plain)} & _TECH) or "`" in plain
    excluded = negated_stems(view)
    own = {stem(w) for w in words(view)}
    kept: list[str] = []
    clauses = [c for sentence in re.split(r"(?<=[.!?])\s+", text) for c in _CLAUSE.split(sentence)]
    for clause in clauses:
        clause = clause.strip(" ,;.!?")
        if clause[:5].lower() == "then ":
            clause = clause[5:]
        clause = _ENUMERATION.sub("", clause).strip(" ,;")
        if len(words(clause)) < 3 or _CLAIM.search(clause) or _SAFETY.search(clause) or _TONE.search(clause):
            continue
        if ungrounded_words(view, clause) or (not explains_fit and _EXPLAINS.search(clause)):
            continue
        if not _anchored(view, clause) or excluded & {stem(w) for w in words(clause)}:
            continue
        if (_CODE_WORDS.search(clause) and not technical) or (_TABLE.search(clause) and not _TABULAR.search(plain)):
            continue
        if any(m.lower() not in _ANSWER_PARTS and stem(m.lower()) not in own for m in _REFERENT.findall(clause)):
            continue
        if _squash(clause) in {_squash(k) for k in kept}:  # a repeated clause
            continue
        kept.append(clause)
    if not kept:
        return ""
    kept[0] = kept[0][0].upper() + kept[0][1:]
    body = kept[0] if len(kept) == 1 else ", ".join(kept[:-1]) + (", and " if len(kept) > 2 else " and ") + kept[-1]
    return body + "."
