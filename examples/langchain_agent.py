"""BPO in front of a LangChain 1.x agent, offline: ``create_agent(..., middleware=[BPOMiddleware()])``.

The optimizer is the real embedded model. The agent's chat model here is a scripted stand-in
that calls one tool (a 135M local model cannot call tools reliably): put your own chat model
(``init_chat_model("openai:gpt-4o")``, Ollama, ...) in its place.
"""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from langchain_bpo import ORIGINAL_KEY, BPOMiddleware


@tool
def get_weather(city: str) -> str:
    """Get the current weather of a city."""
    return f"It is 21°C and sunny in {city}."


class ScriptedToolModel(GenericFakeChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def main() -> None:
    model = ScriptedToolModel(
        messages=iter(
            [
                AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call-1"}]),
                AIMessage("It's 21°C and sunny in Paris — a light jacket is enough."),
            ]
        )
    )
    agent = create_agent(
        model, [get_weather], system_prompt="You are a travel assistant.", middleware=[BPOMiddleware()]
    )
    state = agent.invoke({"messages": [HumanMessage("what's the weather in paris today")]})
    for msg in state["messages"]:
        note = (
            f"   (original: {msg.additional_kwargs[ORIGINAL_KEY]!r})" if ORIGINAL_KEY in msg.additional_kwargs else ""
        )
        calls = f" tool_calls={[c['name'] for c in msg.tool_calls]}" if getattr(msg, "tool_calls", None) else ""
        print(f"{msg.type:>5}: {msg.text or ''}{calls}{note}")


if __name__ == "__main__":
    main()
