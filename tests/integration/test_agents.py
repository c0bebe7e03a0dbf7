"""Agent preprocessing: LangChain BPOMiddleware and LlamaIndex BPOAgent / chat engine, real optimizer."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import ReActAgent
from llama_index.core.base.llms.types import ChatMessage, CompletionResponse, ImageBlock, LLMMetadata, TextBlock
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.tools import FunctionTool

from bpo_core import BPOOptimizer
from langchain_bpo import ORIGINAL_KEY, BPOMiddleware
from llamaindex_bpo import BPOAgent, BPOCondensePlusContextChatEngine
from llamaindex_bpo.testing import KeywordEmbedding
from tests.conftest import CountingBackend

QUESTION = "whats the weather in paris"


@tool
def get_weather(city: str) -> str:
    """Get the weather of a city."""
    return f"Sunny in {city}"


class ToolCallingFake(GenericFakeChatModel):
    """A scripted chat model that accepts tools (the downstream LLM is allowed to be fake)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def _agent(backend, spy=None):
    script = iter(
        [
            AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}]),
            AIMessage("Sunny."),
        ]
    )
    optimizer = BPOOptimizer(spy or backend, max_new_tokens=40, add_below=None)
    return create_agent(
        ToolCallingFake(messages=script),
        [get_weather],
        system_prompt="You are a weather bot.",
        middleware=[BPOMiddleware(optimizer)],
    )


def test_middleware_rewrites_newest_user_turn_once(backend):
    spy = CountingBackend(backend)
    out = _agent(backend, spy).invoke(
        {"messages": [HumanMessage("earlier question"), AIMessage("earlier answer"), HumanMessage(QUESTION)]}
    )
    msgs = out["messages"]
    assert len(spy.calls) == 1 and spy.calls[0] == [QUESTION]  # once, despite the tool loop
    assert [m.type for m in msgs] == ["human", "ai", "human", "ai", "tool", "ai"]
    assert msgs[0].content == "earlier question" and msgs[1].content == "earlier answer"
    newest = msgs[2]
    assert newest.content == BPOOptimizer(backend, max_new_tokens=40, add_below=None).optimize(QUESTION)
    if newest.content != QUESTION:
        assert newest.additional_kwargs[ORIGINAL_KEY] == QUESTION
    assert msgs[4].content == "Sunny in Paris"  # tool results untouched


async def test_middleware_async(backend):
    out = await _agent(backend).ainvoke({"messages": [HumanMessage(QUESTION)]})
    assert out["messages"][-1].content == "Sunny."


def test_middleware_skips_already_rewritten(backend):
    spy = CountingBackend(backend)
    mw = BPOMiddleware(BPOOptimizer(spy))
    done = HumanMessage("x", additional_kwargs={ORIGINAL_KEY: "y"})
    assert mw.before_agent({"messages": [SystemMessage("s"), done]}, None) is None
    assert mw.before_agent({"messages": [SystemMessage("only system")]}, None) is None
    assert spy.calls == []


class ScriptedLLM(CustomLLM):
    """Answers in ReAct format at once, and records every prompt it is given."""

    answer: str = "Thought: I can answer without using any more tools.\nAnswer: It is sunny."
    prompts: list = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        return CompletionResponse(text=self.answer)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        self.prompts.append(prompt)
        yield CompletionResponse(text=self.answer, delta=self.answer)


async def test_llamaindex_agent_gets_rewritten_user_msg(optimizer):
    llm = ScriptedLLM(prompts=[])
    agent = BPOAgent(ReActAgent(tools=[FunctionTool.from_defaults(get_weather.func)], llm=llm), optimizer)
    response = await agent.arun(QUESTION)
    assert "sunny" in str(response).lower()
    result = agent.last_result
    assert result.original == QUESTION and result.optimized == optimizer.optimize(QUESTION)
    assert result.optimized in llm.prompts[0]


def test_llamaindex_chat_message_keeps_images_and_original(optimizer):
    image = ImageBlock(url="https://example.com/cat.png")
    msg = ChatMessage(role="user", blocks=[TextBlock(text="Describe this picture of my cat"), image])
    agent = BPOAgent(ReActAgent(tools=[], llm=ScriptedLLM(prompts=[])), optimizer)
    new = agent._rewrite(msg)
    assert any(isinstance(b, ImageBlock) for b in new.blocks)
    if agent.last_result.changed:
        assert new.additional_kwargs["bpo_original_content"] == "Describe this picture of my cat"
    with pytest.raises(TypeError):
        BPOAgent(object())


def test_condense_plus_context_rewrites_standalone_question(optimizer):
    index = VectorStoreIndex.from_documents(
        [Document(text="Paris weather is mild in spring."), Document(text="Bread needs yeast.")],
        embed_model=KeywordEmbedding(),
    )
    llm = ScriptedLLM(prompts=[], answer="what is the weather like in paris in spring")
    engine = BPOCondensePlusContextChatEngine.from_defaults(
        index.as_retriever(similarity_top_k=1), llm=llm, optimizer=optimizer
    )
    history = [ChatMessage(role="user", content="I am going to Paris"), ChatMessage(role="assistant", content="Nice!")]
    engine.chat("and the weather?", chat_history=history)
    res = engine.last_result
    assert res.original == "what is the weather like in paris in spring"
    assert res.optimized == optimizer.optimize(res.original)


def test_history_is_given_to_optimizer_as_context(backend):
    from bpo_core.formats import ChatFormat

    fmt = ChatFormat().with_history([("human", "I am planning a trip to Japan")])
    tokenizer = backend.tokenizer
    assert "planning a trip to Japan" in fmt.render("what should I pack?", tokenizer)
    spy = CountingBackend(backend)
    mw = BPOMiddleware(BPOOptimizer(spy, add_below=None, max_new_tokens=24), history_turns=2)
    state = {
        "messages": [
            HumanMessage("I am planning a trip to Japan"),
            AIMessage("Great!"),
            HumanMessage("what should I pack?"),
        ]
    }
    update = mw.before_agent(state, None)
    # Only the newest turn goes to the model (a rejected rewrite may be followed by an addition).
    assert spy.calls and all(call == ["what should I pack?"] for call in spy.calls)
    if update:
        assert update["messages"][0].additional_kwargs[ORIGINAL_KEY] == "what should I pack?"
    res = BPOOptimizer(backend, max_new_tokens=24).rewrite("what should I pack?", history=[("human", "trip to Japan")])
    assert res.original == "what should I pack?"
