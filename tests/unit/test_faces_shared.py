"""What the two faces share (bpo_core.faces): one optimizer check, one original-text key, per-call results."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bpo_core import BPOOptimizer
from bpo_core.faces import ORIGINAL_KEY, PerCall, resolve_optimizer
from tests.fakes import ScriptedBackend


def test_every_face_refuses_a_non_optimizer_with_the_same_message():
    from langchain_bpo import BPOMiddleware, BPORunnable
    from llamaindex_bpo import BPOQueryTransform
    from llamaindex_bpo.agents import BPOAgent

    message = "optimizer must be a bpo_core.BPOOptimizer, got str"
    for build in (
        lambda: BPOMiddleware(optimizer="x"),
        lambda: BPORunnable(optimizer="x").invoke("hi"),
        lambda: BPOQueryTransform("x"),
        lambda: BPOAgent(type("A", (), {"run": None})(), optimizer="x"),
    ):
        with pytest.raises(TypeError, match=message):
            build()
    opt = BPOOptimizer(ScriptedBackend(lambda v, s: ""))
    assert resolve_optimizer(opt) is opt


def test_both_faces_keep_the_original_under_one_key():
    import langchain_bpo
    from llamaindex_bpo import agents

    assert langchain_bpo.ORIGINAL_KEY == agents.ORIGINAL_KEY == ORIGINAL_KEY == "bpo_original_content"


class _EchoAgent:
    def run(self, user_msg=None, **kwargs):
        async def handler():
            await asyncio.sleep(0.01)
            return user_msg

        return handler()


def test_overlapping_agent_calls_each_see_their_own_last_result():
    from llamaindex_bpo.agents import BPOAgent

    opt = BPOOptimizer(ScriptedBackend(lambda view, style: "Explain the reasoning behind the answer."), cache=False)
    agent = BPOAgent(_EchoAgent(), optimizer=opt)

    async def one(prompt: str) -> str:
        await agent.arun(prompt)
        await asyncio.sleep(0.02)  # the other call finishes its rewrite meanwhile
        return agent.last_result.original

    async def both():
        return await asyncio.gather(one("How do tides work?"), one("Why is the sky blue?"))

    assert asyncio.run(both()) == ["How do tides work?", "Why is the sky blue?"]
    seen = {}

    def in_thread(prompt: str) -> None:
        asyncio.run(agent.run(prompt))  # run() rewrites at once and returns the agent's handler
        seen[prompt] = agent.last_result.original

    threads = [threading.Thread(target=in_thread, args=(p,)) for p in ("What is a lever?", "What is a pulley?")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen == {"What is a lever?": "What is a lever?", "What is a pulley?": "What is a pulley?"}
    assert agent.last_result is None  # this caller made no call


def test_per_call_values_do_not_leak_between_owners():
    a, b = PerCall[int]("a"), PerCall[int]("a")
    a.set(1)
    assert a.get() == 1 and b.get() is None
