"""llamaindex_bpo.BPOLLM: an LLM wrapper that optimizes only the user's words (scripted optimizer)."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import CustomLLM, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.prompts import PromptTemplate

from bpo_core import BPOOptimizer
from llamaindex_bpo import BPOLLM, BPORewriteEvent
from llamaindex_bpo.testing import KeywordEmbedding
from tests.fakes import ScriptedBackend

QUESTION = "why exercise"
ADDITION = "Explain the reasoning step by step and give a short example of each point."
AUGMENTED = f"{QUESTION}\n\n{ADDITION}"
DOCS = ["Regular exercise strengthens the heart and lungs.", "Exercise improves mood and sleep.", "Paris is in France."]


class Recording(CustomLLM):
    """An LLM that echoes its prompt and records every prompt and conversation it is given."""

    prompts: list = []
    chats: list = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        return CompletionResponse(text=prompt)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        self.prompts.append(prompt)
        yield CompletionResponse(text=prompt, delta=prompt)

    @llm_chat_callback()
    def chat(self, messages, **kwargs: Any):
        self.chats.append(list(messages))
        return super().chat(messages, **kwargs)


def wrapped(**kwargs: Any) -> tuple[BPOLLM, Recording]:
    inner = Recording(prompts=[], chats=[])
    return BPOLLM(inner, BPOOptimizer(ScriptedBackend(lambda view, style: ADDITION)), **kwargs), inner


def test_chat_rewrites_only_the_last_user_text():
    llm, inner = wrapped()
    image = ImageBlock(url="https://example.com/cat.png")
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.USER, content="earlier"),
        ChatMessage(role=MessageRole.ASSISTANT, content="reply"),
        ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text=QUESTION), image]),
    ]
    response = llm.chat(messages)
    sent = inner.chats[0]
    assert [m.content for m in sent[:3]] == ["Be brief.", "earlier", "reply"]
    assert sent[3].blocks[0].text == AUGMENTED and sent[3].blocks[1] == image
    assert sent[3].additional_kwargs["bpo_original_content"] == QUESTION
    assert response.additional_kwargs["bpo"][0]["addition"] == ADDITION
    assert llm.result_for(QUESTION).optimized == AUGMENTED


def test_predict_rewrites_only_the_query_variable():
    llm, inner = wrapped()
    template = PromptTemplate("Context: {context_str}\nQuestion: {query_str}\nAnswer:")
    llm.predict(template, context_str="why exercise matters to cells", query_str=QUESTION)
    assert inner.prompts[-1] == f"Context: why exercise matters to cells\nQuestion: {AUGMENTED}\nAnswer:"
    partial = template.partial_format(query_str=QUESTION)  # how synthesizers pass the query
    llm.predict(partial, context_str="C")
    assert inner.prompts[-1] == f"Context: C\nQuestion: {AUGMENTED}\nAnswer:"
    llm.predict(PromptTemplate("Summarize: {text}"), text=QUESTION)  # no query variable: untouched
    assert inner.prompts[-1] == f"Summarize: {QUESTION}"


def test_complete_passes_through_unless_asked():
    llm, inner = wrapped()
    llm.complete(QUESTION)
    assert inner.prompts[-1] == QUESTION
    eager, inner2 = wrapped(optimize_complete=True)
    eager.complete(QUESTION)
    assert inner2.prompts[-1] == AUGMENTED


async def test_async_paths():
    llm, inner = wrapped()
    await llm.apredict(PromptTemplate("Q: {query_str}"), query_str=QUESTION)
    assert inner.prompts[-1] == f"Q: {AUGMENTED}"
    await llm.achat([ChatMessage(role=MessageRole.USER, content=QUESTION)])
    assert inner.chats[-1][-1].content == AUGMENTED


def test_as_settings_llm_under_a_query_engine_and_a_chat_engine(monkeypatch):
    llm, inner = wrapped()
    monkeypatch.setattr(Settings, "_llm", llm)
    monkeypatch.setattr(Settings, "_embed_model", KeywordEmbedding())
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    response = index.as_query_engine(similarity_top_k=2).query(QUESTION)
    prompt = inner.prompts[-1]
    assert AUGMENTED in prompt and "strengthens the heart" in prompt  # retrieved context kept as is
    assert AUGMENTED in str(response)  # MockLLM echoes its prompt
    engine = index.as_chat_engine(chat_mode="condense_plus_context")
    engine.chat(QUESTION)
    assert AUGMENTED in inner.prompts[-1]


def test_instrumentation_sees_each_rewrite():
    seen: list[BPORewriteEvent] = []

    class Handler(BaseEventHandler):
        @classmethod
        def class_name(cls) -> str:
            return "Handler"

        def handle(self, event: Any, **kwargs: Any) -> None:
            if isinstance(event, BPORewriteEvent):
                seen.append(event)

    dispatcher = get_dispatcher()
    handler = Handler()
    dispatcher.add_event_handler(handler)
    try:
        wrapped()[0].predict(PromptTemplate("Q: {query_str}"), query_str=QUESTION)
    finally:
        dispatcher.event_handlers.remove(handler)
    assert seen[0].metadata() == {
        "bpo.original": QUESTION,
        "bpo.optimized": AUGMENTED,
        "bpo.fell_back": False,
        "bpo.reason": None,
        "bpo.style": "augment",
    }


def test_bad_optimizer_is_named():
    with pytest.raises(TypeError, match="BPOOptimizer"):
        BPOLLM(MockLLM(), optimizer="nope")
