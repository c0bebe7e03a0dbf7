"""langchain_bpo.BPORunnable over the real embedded optimizer; the downstream LLM is a fake chat model."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import ConfigurableField, RunnableLambda

from bpo_core import BPOOptimizer, InvalidPromptError
from langchain_bpo import ORIGINAL_KEY, BPORunnable
from tests.conftest import PROMPTS, CountingBackend


@pytest.fixture(scope="module")
def bpo(optimizer) -> BPORunnable:
    return BPORunnable(optimizer=optimizer)


def test_str_in_str_out(bpo, optimizer):
    out = bpo.invoke(PROMPTS[0])
    assert isinstance(out, str) and out == optimizer.optimize(PROMPTS[0])


def test_string_prompt_value(bpo, optimizer):
    out = bpo.invoke(StringPromptValue(text=PROMPTS[1]))
    assert isinstance(out, StringPromptValue) and out.text == optimizer.optimize(PROMPTS[1])


def test_chat_prompt_value_rewrites_only_last_human(bpo, optimizer):
    messages = [
        SystemMessage("You are terse."),
        HumanMessage("Earlier question about cats?"),
        AIMessage("Cats purr."),
        ToolMessage("tool output", tool_call_id="t1"),
        HumanMessage(PROMPTS[2]),
    ]
    out = bpo.invoke(ChatPromptValue(messages=messages))
    assert isinstance(out, ChatPromptValue)
    assert out.messages[:4] == messages[:4]
    expected = optimizer.optimize(PROMPTS[2])
    assert out.messages[4].content == expected
    if expected != PROMPTS[2]:
        assert out.messages[4].additional_kwargs[ORIGINAL_KEY] == PROMPTS[2]
    assert messages[4].content == PROMPTS[2]  # the caller's messages are not mutated


def test_message_list_and_multimodal_parts(bpo, optimizer):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    msg = HumanMessage(content=[{"type": "text", "text": PROMPTS[3]}, image])
    out = bpo.invoke([SystemMessage("sys"), msg])
    assert isinstance(out, list) and out[0].content == "sys"
    assert out[1].content[1] == image
    assert out[1].content[0]["text"] == optimizer.optimize(PROMPTS[3])


def test_no_human_message_passes_through(bpo):
    msgs = [SystemMessage("only a system message")]
    assert bpo.invoke(msgs) == msgs


def test_dict_input_key(optimizer):
    runnable = BPORunnable(optimizer=optimizer, input_key="query")
    out = runnable.invoke({"query": PROMPTS[0], "k": 3})
    assert out["k"] == 3 and out["query"] == optimizer.optimize(PROMPTS[0])
    with pytest.raises(InvalidPromptError, match="'query'"):
        runnable.invoke({"question": "x"})


@pytest.mark.parametrize("bad", [None, 5, object()])
def test_bad_inputs(bpo, bad):
    with pytest.raises(InvalidPromptError):
        bpo.invoke(bad)


def test_batch_makes_one_optimizer_call(backend):
    spy = CountingBackend(backend)
    runnable = BPORunnable(optimizer=BPOOptimizer(spy, add_below=None, max_new_tokens=24))
    inputs = [PROMPTS[0], StringPromptValue(text=PROMPTS[1]), [HumanMessage(PROMPTS[2])]]
    out = runnable.batch(inputs)
    assert isinstance(out[0], str) and isinstance(out[1], StringPromptValue) and isinstance(out[2], list)
    assert len(spy.calls) == 1 and len(spy.calls[0]) == 3


def test_batch_return_exceptions(bpo):
    out = bpo.batch([PROMPTS[0], None], return_exceptions=True)
    assert isinstance(out[0], str) and isinstance(out[1], InvalidPromptError)


async def test_ainvoke_and_abatch(bpo, optimizer):
    assert await bpo.ainvoke(PROMPTS[0]) == optimizer.optimize(PROMPTS[0])
    out = await bpo.abatch([PROMPTS[0], PROMPTS[1]])
    assert out == optimizer.optimize_batch(PROMPTS[:2])


def test_chain_streams_llm_tokens(bpo):
    llm = GenericFakeChatModel(messages=iter([AIMessage("one two three")]))
    chain = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")]) | bpo | llm
    chunks = [c.content for c in chain.stream({"question": PROMPTS[0]})]
    assert len(chunks) > 1 and "".join(chunks) == "one two three"


def test_chain_passes_rewrite_to_llm(bpo, optimizer):
    seen = []

    def llm(value):
        seen.append(value)
        return "answer"

    chain = PromptTemplate.from_template("{q}") | bpo | RunnableLambda(llm)
    assert chain.invoke({"q": PROMPTS[1]}) == "answer"
    assert seen[0].text == optimizer.optimize(PROMPTS[1])


def test_callbacks_see_the_step_and_rewrite(bpo):
    class Recorder(BaseCallbackHandler):
        def __init__(self):
            self.starts, self.events = [], []

        def on_chain_start(self, serialized, inputs, **kw):
            self.starts.append(kw.get("name"))

        def on_custom_event(self, name, data, **kw):
            self.events.append((name, data))

    rec = Recorder()
    bpo.invoke(PROMPTS[0], config={"callbacks": [rec]})
    assert "BPORunnable" in rec.starts
    assert rec.events and rec.events[0][0] == "bpo_rewrite"
    assert rec.events[0][1]["results"][0]["original"] == PROMPTS[0]


async def test_astream_events_shows_bpo(bpo):
    names = set()
    async for ev in bpo.astream_events(PROMPTS[0], version="v2"):
        names.add((ev["event"], ev["name"]))
    assert ("on_prompt_start", "BPORunnable") in names or ("on_chain_start", "BPORunnable") in names
    assert ("on_custom_event", "bpo_rewrite") in names


def test_fallbacks_and_retry(tmp_path):
    broken = BPOOptimizer.from_pretrained(str(tmp_path / "nope"), lazy=True)
    strict = BPORunnable(optimizer=broken, on_error="raise")
    chain = strict.with_fallbacks([RunnableLambda(lambda x: x)])
    assert chain.invoke("keep me") == "keep me"
    # the default (fallback) mode never breaks the chain
    assert BPORunnable(optimizer=broken).invoke("keep me too") == "keep me too"
    retried = strict.with_retry(stop_after_attempt=2)
    with pytest.raises(Exception, match="load"):
        retried.invoke("x")


def test_configurable_fields(optimizer):
    runnable = BPORunnable(optimizer=optimizer).configurable_fields(
        mode=ConfigurableField(id="bpo_mode"), rounds=ConfigurableField(id="bpo_rounds")
    )
    out = runnable.invoke(PROMPTS[2], config={"configurable": {"bpo_mode": "stable", "bpo_rounds": 1}})
    assert isinstance(out, str)
    with pytest.raises(ValueError, match="nonsense"):
        runnable.invoke(PROMPTS[2], config={"configurable": {"bpo_mode": "nonsense"}})
