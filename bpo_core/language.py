"""A cheap "is this English?" check, so an English-trained optimizer passes other languages through.

Script first (CJK, Cyrillic, Arabic, Hebrew, ... are not Latin letters), then function words for
Latin-script languages. It errs towards "English" on short or mixed text.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_EN = frozenset(
    "the a an and or of to in on is are was be it this that what how why who when where which with for from "
    "you your i my me we can do does please write give tell make explain".split()
)
# Frequent function words of other Latin-script languages that are not English words.
_OTHER = (
    frozenset(
        "el los las del que por para una uno es está como pero más muy qué cómo "  # es
        "le les des une est pas pour avec dans sur qui quoi je tu vous nous sont mais "  # fr
        "der die das und ist nicht ein eine mit für auf ich du sie wie was wir sind "  # de
        "il lo gli di che non per sono della come perché "  # it
        "o os um uma não com são você isso para como "  # pt
        "het een en niet van ik je zijn wat hoe "  # nl
        "ve bir bu ne için ile".split()  # tr
    )
    - _EN
)


def looks_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return True  # numbers, code, symbols: nothing language-specific to protect
    latin = sum(1 for c in letters if c.isascii() or "\u00c0" <= c <= "\u024f")
    if latin / len(letters) < 0.7:
        return False
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) < 3:
        return True
    english = sum(w in _EN for w in words)
    other = sum(w in _OTHER for w in words)
    return not (other >= 2 and other > english)
