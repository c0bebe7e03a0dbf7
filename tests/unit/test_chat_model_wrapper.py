"""langchain_bpo.BPOChatModel: a chat model wrapper that optimizes the newest user turn (scripted optimizer)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from bpo_core import BPOOptimizer
from langchain_bpo import ORIGINAL_KEY, BPOChatModel
from tests.fakes import ScriptedBackend

QUESTION = "how do I check the weather in paris from python"
ADDITION = "Show a short code example and explain each step."
AUGMENTED = f"{QUESTION}\n\n{ADDITION}"


class RecordingFake(GenericFakeChatModel):
    """A scripted chat model that records what it was sent and accepts tools and schemas."""

    seen: list = []
    tools: list = []

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(messages)
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(messages)
        yield from super()._stream(messages, stop=stop, run_manager=run_manager, **kwargs)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        self.tools.extend(tools)
        return self

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Any:
        from langchain_core.runnables import RunnableLambda

        def parse(messages: Any) -> Any:
            self.seen.append(messages)
            return schema(city="Paris", sunny=True)

        return RunnableLambda(parse)


def optimizer() -> BPOOptimizer:
    return BPOOptimizer(ScriptedBackend(lambda view, style: ADDITION))


def fake(*replies: AIMessage | str) -> RecordingFake:
    return RecordingFake(messages=iter(replies), seen=[], tools=[])


def test_invoke_optimizes_the_newest_user_turn_only():
    inner = fake(AIMessage("Sunny."))
    llm = BPOChatModel(llm=inner, optimizer=optimizer())
    history = [SystemMessage("Be brief."), HumanMessage("hi"), AIMessage("hello"), HumanMessage(QUESTION)]
    reply = llm.invoke(history)
    assert reply.content == "Sunny."
    sent = inner.seen[0]
    assert [m.content for m in sent[:3]] == ["Be brief.", "hi", "hello"]
    assert sent[3].content == AUGMENTED and sent[3].additional_kwargs[ORIGINAL_KEY] == QUESTION
    bpo = reply.response_metadata["bpo"]["results"][0]
    assert (bpo["original"], bpo["optimized"], bpo["style"], bpo["addition"]) == (
        QUESTION,
        AUGMENTED,
        "augment",
        ADDITION,
    )


async def test_ainvoke_and_batch():
    inner = fake(AIMessage("a"), AIMessage("b"), AIMessage("c"))
    llm = BPOChatModel(llm=inner, optimizer=optimizer())
    assert (await llm.ainvoke(QUESTION)).content == "a"
    assert [m.content for m in llm.batch([QUESTION, QUESTION])] == ["b", "c"]
    assert all(messages[-1].content == AUGMENTED for messages in inner.seen)


def test_stream_passes_tokens_through_and_reports_the_rewrite():
    inner = fake(AIMessage("It is sunny today"))
    chunks = list(BPOChatModel(llm=inner, optimizer=optimizer()).stream(QUESTION))
    assert len(chunks) > 1 and "".join(c.content for c in chunks) == "It is sunny today"
    assert chunks[0].response_metadata["bpo"]["results"][0]["optimized"] == AUGMENTED
    assert inner.seen[0][-1].content == AUGMENTED


def test_callbacks_see_the_rewrite_and_the_wrapped_run_nested():
    inner = fake(AIMessage("Sunny."))
    events: list[dict] = []
    starts: list[Any] = []

    class Spy(BaseCallbackHandler):
        def on_custom_event(self, name, data, **kwargs):
            events.append({"name": name, **data})

        def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kwargs):
            starts.append((run_id, parent_run_id, messages[0][-1].content))

    BPOChatModel(llm=inner, optimizer=optimizer()).invoke(QUESTION, config={"callbacks": [Spy()]})
    assert events == [{"name": "bpo_rewrite", "results": [events[0]["results"][0]]}]
    assert events[0]["results"][0]["original"] == QUESTION and events[0]["results"][0]["optimized"] == AUGMENTED
    (outer, _, seen_outer), (_, parent, seen_inner) = starts
    assert parent == outer and (seen_outer, seen_inner) == (QUESTION, AUGMENTED)


async def test_astream():
    inner = fake(AIMessage("It is sunny"))
    chunks = [c async for c in BPOChatModel(llm=inner, optimizer=optimizer()).astream(QUESTION)]
    assert "".join(c.content for c in chunks) == "It is sunny" and inner.seen[0][-1].content == AUGMENTED


@tool
def get_weather(city: str) -> str:
    """Get the weather of a city."""
    return f"Sunny in {city}"


def test_works_as_the_model_of_create_agent():
    call = AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}])
    inner = fake(call, AIMessage("Sunny."))
    agent = create_agent(
        BPOChatModel(llm=inner, optimizer=optimizer()), [get_weather], system_prompt="You are a weather bot."
    )
    out = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"]
    assert out["messages"][0].content == QUESTION  # the agent's state keeps the user's own words
    assert out["messages"][2].content == "Sunny in Paris" and out["messages"][-1].content == "Sunny."
    assert {t.name for t in inner.tools} == {"get_weather"}  # bound on each model call
    for sent in inner.seen:  # each model call got the optimized turn; tool messages untouched
        assert sent[1].content == AUGMENTED
    assert isinstance(inner.seen[1][-1], ToolMessage) and inner.seen[1][-1].content == "Sunny in Paris"


def test_structured_output_gets_the_optimized_conversation():
    class Weather(BaseModel):
        city: str
        sunny: bool

    inner = fake()
    result = BPOChatModel(llm=inner, optimizer=optimizer()).with_structured_output(Weather).invoke(QUESTION)
    assert result == Weather(city="Paris", sunny=True)
    assert inner.seen[0][-1].content == AUGMENTED


def test_optimizer_failure_never_breaks_the_call_unless_asked():
    from bpo_core.errors import GenerationError

    broken = BPOOptimizer(ScriptedBackend(lambda v, s: "", fail=GenerationError("down")))
    inner = fake(AIMessage("ok"))
    assert BPOChatModel(llm=inner, optimizer=broken).invoke(QUESTION).content == "ok"
    assert inner.seen[0][-1].content == QUESTION
    with pytest.raises(GenerationError):
        BPOChatModel(llm=fake(AIMessage("ok")), optimizer=broken, on_error="raise").invoke(QUESTION)
    with pytest.raises(TypeError, match="BPOOptimizer"):
        BPOChatModel(llm=inner, optimizer="nope").invoke(QUESTION)


def test_optimizer_options_given_to_a_langchain_face_say_where_they_belong():
    from pydantic import ValidationError

    from langchain_bpo import BPORunnable

    with pytest.raises(ValidationError, match=r"'add_below' is an optimizer option: pass BPORunnable\(optimizer="):
        BPORunnable(add_below=0.5)
    with pytest.raises(ValidationError, match="'guard' is an optimizer option: pass BPOChatModel"):
        BPOChatModel(llm=GenericFakeChatModel(messages=iter([])), guard=None)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        BPORunnable(input_keys="question")  # a typo is an error, not silently dropped
    assert BPORunnable(style="augment", mode="greedy", rounds=1).style == "augment"  # the face's own fields
