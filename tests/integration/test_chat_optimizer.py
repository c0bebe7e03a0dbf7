"""BPOOptimizer.from_chat_model: a chat model as the optimizer, in both faces."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, ParrotFakeChatModel
from langchain_core.prompts import ChatPromptTemplate
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, LLMMetadata, MessageRole
from llama_index.core.llms import CustomLLM, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.query_engine import TransformQueryEngine
from llama_index.core.schema import QueryBundle

from bpo_core import BPOOptimizer
from bpo_core.backends.chat import CHAT_OPTIMIZER_SYSTEM, USER_TEMPLATE, default_examples
from langchain_bpo import BPORunnable
from llamaindex_bpo import BPOQueryTransform, as_chat_model
from llamaindex_bpo.testing import KeywordEmbedding
from tests.pipeline_fakes import Rewriter

QUESTION = "why is regular exercise good"
REWRITE = "why is regular exercise good? Please explain step by step with examples."


def test_meta_prompt_and_faithful_examples():
    optimizer = BPOOptimizer.from_chat_model(Rewriter())
    messages = optimizer.backend.messages(QUESTION, optimizer.fmt)
    examples = default_examples()
    assert len(examples) == 5 and messages[0] == ("system", CHAT_OPTIMIZER_SYSTEM)
    assert messages[1] == ("user", USER_TEMPLATE.format(prompt=examples[0][0])) and messages[2] == (
        "assistant",
        examples[0][1],
    )
    assert messages[-1] == ("user", USER_TEMPLATE.format(prompt=QUESTION))
    # The examples are judged-faithful pairs of the committed training set, never from the test split.
    import json

    from bpo_core.datasets import test_set_path

    test_prompts = {r["prompt"] for r in json.loads(test_set_path("bpo_test").read_text())}
    assert not {p for p, _ in examples} & test_prompts


def test_rewrites_with_guard_context_and_cache():
    llm = Rewriter()
    optimizer = BPOOptimizer.from_chat_model(llm)
    assert optimizer.optimize(QUESTION) == REWRITE
    # Pasted material never reaches the chat model and comes back byte for byte.
    code = "```python\nprint(sum(range(10)))\n```"
    seen = []
    spy = BPOOptimizer.from_chat_model(
        lambda messages: (
            seen.append(messages[-1][1]) or f"{messages[-1][1].split(':', 1)[1].strip()}\nWalk through it line by line."
        )
    )
    assert (
        spy.optimize(f"Explain this code:\n\n{code}") == f"Explain this code:\n\n{code}\nWalk through it line by line."
    )
    assert seen == [USER_TEMPLATE.format(prompt="Explain this code:\n\n[pasted code]")]
    from tests import pipeline_fakes

    calls = pipeline_fakes.CALLS["rewriter"]
    assert optimizer.optimize(QUESTION) == REWRITE  # cached
    assert pipeline_fakes.CALLS["rewriter"] == calls


def test_answer_instead_of_rewrite_is_rejected_by_the_guard():
    answer = "Regular exercise strengthens the heart. " * 30
    result = BPOOptimizer.from_chat_model(FakeListChatModel(responses=[answer])).rewrite(QUESTION)
    assert result.fell_back and result.optimized == QUESTION and result.reason


def test_chat_model_failure_falls_back_or_raises():
    def down(messages: Any) -> str:
        raise ConnectionError("API down")

    result = BPOOptimizer.from_chat_model(down, max_retries=0).rewrite(QUESTION)
    assert result.fell_back and "API down" in result.reason and result.optimized == QUESTION
    with pytest.raises(Exception, match="API down"):
        BPOOptimizer.from_chat_model(down, max_retries=0, on_error="raise").optimize(QUESTION)


def test_langchain_chain_with_chat_optimizer():
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")])
    chain = prompt | BPORunnable(optimizer=BPOOptimizer.from_chat_model(Rewriter())) | ParrotFakeChatModel()
    reply = chain.invoke({"question": QUESTION})
    assert reply.content == REWRITE
    assert [m.content for m in chain.batch([{"question": QUESTION}] * 2)] == [REWRITE] * 2


async def test_langchain_async_with_chat_optimizer():
    bpo = BPORunnable(optimizer=BPOOptimizer.from_chat_model(Rewriter()))
    assert await bpo.ainvoke(QUESTION) == REWRITE


class RewritingLLM(CustomLLM):
    """A LlamaIndex chat LLM that rewrites the last instruction (stands in for OpenAI etc.)."""

    seen: list = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True)

    @llm_chat_callback()
    def chat(self, messages: list[ChatMessage], **kwargs: Any) -> ChatResponse:
        self.seen.append([m.role for m in messages])
        text = messages[-1].content.split("Instruction to optimize:\n", 1)[1]
        return ChatResponse(
            message=ChatMessage(
                role=MessageRole.ASSISTANT, content=f"{text.rstrip('?')}? Please explain step by step with examples."
            )
        )

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        raise NotImplementedError


def test_llamaindex_transform_with_chat_optimizer():
    llm = RewritingLLM(seen=[])
    optimizer = BPOOptimizer.from_chat_model(as_chat_model(llm))
    transform = BPOQueryTransform(optimizer)
    assert transform.run(QUESTION).query_str == REWRITE
    assert llm.seen[0][0] == MessageRole.SYSTEM and llm.seen[0][-1] == MessageRole.USER
    index = VectorStoreIndex.from_documents(
        [Document(text="Regular exercise strengthens the heart.")], embed_model=KeywordEmbedding()
    )
    engine = TransformQueryEngine(index.as_query_engine(llm=MockLLM(), similarity_top_k=1), transform)
    nodes = engine.retrieve(QueryBundle(QUESTION))
    assert "exercise" in nodes[0].node.get_content()


async def test_llamaindex_chat_wrapper_async():
    chat = as_chat_model(RewritingLLM(seen=[]))
    assert (
        await chat.acomplete([("user", "Instruction to optimize:\nhi")])
        == "hi? Please explain step by step with examples."
    )
    with pytest.raises(ValueError, match="unknown chat role"):
        chat.complete([("tool", "x")])
    with pytest.raises(TypeError, match="LlamaIndex LLM"):
        as_chat_model("gpt-4")  # type: ignore[arg-type]


def test_chat_model_writes_additions_with_its_own_meta_prompt():
    from bpo_core.backends.chat import CHAT_AUGMENT_SYSTEM

    seen: list[Any] = []

    def model(messages: Any) -> str:
        seen.append(messages)
        return "Cover the main benefits for the heart, mood and sleep, with an example of each."

    optimizer = BPOOptimizer.from_chat_model(model, style="augment")
    result = optimizer.rewrite(QUESTION)
    assert (
        result.optimized
        == QUESTION + "\n\n" + "Cover the main benefits for the heart, mood and sleep, with an example of each."
    )
    assert result.style == "augment" and result.addition.startswith("Cover")
    system, *turns = seen[0]
    assert system == ("system", CHAT_AUGMENT_SYSTEM)
    assert turns[1] == ("assistant", default_examples("augment")[0][1]) and turns[-1] == (
        "user",
        USER_TEMPLATE.format(prompt=QUESTION),
    )
    nothing = BPOOptimizer.from_chat_model(lambda messages: "(none)", style="augment").rewrite("thanks, that was all")
    assert nothing.optimized == "thanks, that was all" and nothing.kind.value == "nothing_to_add"
