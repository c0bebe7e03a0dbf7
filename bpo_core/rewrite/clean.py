"""Clean-up: turn what the model generated into a rewrite or an addition."""

from __future__ import annotations

import re

from bpo_core.generation import GenerationSettings, cut_at_markers

_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:improved|optimized|optimised|rewritten|new|additional|complementary|added)?\s*"
    r"(?:prompt|instruction|instructions|guidance|addition)\s*:(?:\*\*)?\s*",
    re.I,
)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def _unwrap(text: str) -> str:
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and text.count(text[0]) == 2:
        text = text[1:-1].strip()
    return text


def clean_rewrite(text: str, settings: GenerationSettings) -> str:
    """Raw generated text -> a prompt: cut markers, drop labels and wrapping quotes."""
    text = cut_at_markers(text, settings.cut_prefixes) if settings.cut_prefixes else text.strip()
    return _unwrap(text)


def strip_echo(view: str, text: str) -> str:
    """Drop a verbatim echo of the prompt from the front of an addition.

    Chat models asked for "only the addition" sometimes repeat the prompt first; what follows the
    echo is the addition. Whitespace and the prompt's final punctuation may differ in the echo.
    """
    squash = " ".join(text.split())
    head = " ".join(view.split()).rstrip("?.!; ")
    if not head or not squash.lower().startswith(head.lower()):
        return text
    return squash[len(head) :].lstrip("?.!;:, ")


def clean_addition(text: str, settings: GenerationSettings) -> str:
    """Raw generated text -> an addition: its first paragraph, ending at a full sentence.

    A model cut off by its token budget leaves half a sentence; that part is dropped (and an
    addition with no complete sentence is empty, i.e. nothing is added).
    """
    text = clean_rewrite(text, settings)
    text = _unwrap(text.split("\n\n", 1)[0].strip())
    if text.strip("() .").lower() in ("none", "nothing", "n/a"):  # how chat models say "nothing to add"
        return ""
    ends = list(_SENTENCE_END.finditer(text))
    if not ends:
        return ""
    return text[: ends[-1].end()].strip()
