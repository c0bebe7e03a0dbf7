"""A scripted backend for tests of the rewrite path: no model, answers chosen by the test."""

from __future__ import annotations

from collections.abc import Callable

from bpo_core.errors import GenerationError
from bpo_core.formats import AUGMENT_SYSTEM_PROMPT, ChatFormat, PromptFormat
from bpo_core.generation import GenerationSettings


class ScriptedBackend:
    """``respond(view, style) -> str`` plays the model; every call is recorded in ``calls``."""

    def __init__(
        self,
        respond: Callable[[str, str], str],
        *,
        default_style: str = "augment",
        name: str = "scripted",
        fail: Exception | None = None,
    ) -> None:
        self.respond = respond
        self.default_style = default_style
        self.default_format: PromptFormat = ChatFormat()
        self.name = name
        self.fail = fail
        #: (style, views) of each generate call.
        self.calls: list[tuple[str, list[str]]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, prompts: list[str], fmt: PromptFormat, settings: GenerationSettings) -> list[str]:
        style = "augment" if fmt.template == AUGMENT_SYSTEM_PROMPT else "rewrite"
        self.calls.append((style, list(prompts)))
        if self.fail is not None:
            raise self.fail
        return [self.respond(p, style) for p in prompts]

    @property
    def views(self) -> list[str]:
        return [v for _, views in self.calls for v in views]


def broken(message: str = "device fell over") -> GenerationError:
    return GenerationError(message)
