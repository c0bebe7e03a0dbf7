"""``bpo serve``: one optimizer model for many apps, behind an OpenAI-compatible API.

Endpoints:
* ``POST /v1/completions`` — OpenAI-compatible text completions (``prompt`` a string or a list);
  what :meth:`BPOOptimizer.from_openai_compatible` and other OpenAI clients call. Concurrent
  requests are micro-batched into one generation.
* ``POST /v1/optimize`` — the whole BPO pipeline server-side (segmentation, template, guard,
  cache): ``{"prompts": [...], "style": "augment", "mode": "greedy", "rounds": 1}`` ->
  ``{"results": [...]}`` (each with ``optimized``, ``style``, ``addition``, ``reason``).
* ``POST /v1/answers`` (when started with a target chat model): the target answers the original
  and the optimized prompt side by side, ``{"original": ..., "optimized": ...}`` ->
  ``{"original": {"answer" | "error", "seconds"}, "optimized": {...}}``.
* ``GET /``: the playground, a page to try the optimizer (word diff, style, reason, time, and the
  target's two answers when there is a target); no build step, no CDN: one HTML file shipped
  with the package.
* ``GET /v1/models``, ``GET /health`` (names the model and the target).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from bpo_core import waits
from bpo_core.backends.hf import HFBackend
from bpo_core.chat import ChatModel
from bpo_core.errors import BPOError, InvalidPromptError, OptimizerTimeoutError
from bpo_core.generation import GenerationSettings
from bpo_core.optimizer import BPOOptimizer

PLAYGROUND = Path(__file__).resolve().parent / "playground.html"


@dataclass(frozen=True)
class RawFormat:
    """Completion text as given: the client already rendered the optimizer template."""

    template: str = "{prompt}"

    def render(self, prompt: str, tokenizer: Any = None) -> str:
        return prompt

    def encode(self, prompt: str, tokenizer: Any) -> list[int]:
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def with_template(self, template: str) -> RawFormat:
        return self

    def with_history(self, history: Any) -> RawFormat:
        return self

    def with_style(self, style: str) -> RawFormat:
        return self


class CompletionRequest(BaseModel):
    model: str | None = None
    prompt: str | list[str]
    max_tokens: int = Field(default=128, gt=0, le=4096)
    temperature: float = Field(default=0.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None


class AnswersRequest(BaseModel):
    original: str
    optimized: str


class OptimizeRequest(BaseModel):
    prompts: list[str]
    mode: str | None = None
    rounds: int | None = Field(default=None, ge=1)
    style: str | None = None


def create_app(
    optimizer: BPOOptimizer,
    *,
    model_name: str = "bpo",
    max_wait_ms: float = 5.0,
    max_batch_size: int = 16,
    request_timeout_s: float | None = None,
    target: ChatModel | None = None,
    target_timeout_s: float = 120.0,
):
    """Build the FastAPI app serving ``optimizer`` (its backend must be local).

    ``target``: a chat model (see :func:`bpo_core.chat.as_chat_model`) that answers prompts for
    ``/v1/answers`` and the playground's side-by-side view; each answer waits at most
    ``target_timeout_s``.

    Every request gets a response: a completion that fails answers 503, one that passes
    ``request_timeout_s`` (or stalls, see ``bpo_core.waits``) answers 504, both with an
    OpenAI-style ``{"error": {...}}`` body; ``/v1/optimize`` falls back per prompt as the
    optimizer does. The server keeps serving either way.
    """
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, JSONResponse

    from bpo_core.batching import MicroBatcher

    backend = optimizer.backend
    if not isinstance(backend, HFBackend):
        raise TypeError("bpo serve needs a local model backend")
    raw = RawFormat()

    def run(settings: GenerationSettings, prompts: list[str]) -> list[str]:
        return backend.generate(prompts, raw, settings)

    batcher = MicroBatcher(run, max_wait_ms=max_wait_ms, max_batch_size=max_batch_size)
    app = FastAPI(title="bpo-prompt optimizer server")

    def error(status: int, kind: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def playground() -> str:
        """A page to try the optimizer: type a prompt, see the rewrite as a word diff and why."""
        return PLAYGROUND.read_text(encoding="utf-8")

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": backend.name, "target": target.name if target is not None else None}

    @app.post("/v1/answers")
    async def answers(req: AnswersRequest) -> Any:
        """The target's answers to the original and the optimized prompt, asked at the same time."""
        if target is None:
            return error(404, "no_target", "this server has no target model: start it with bpo serve --target SPEC")

        async def answer(prompt: str) -> dict[str, Any]:
            started = time.perf_counter()
            try:  # each side fails on its own: the other answer is still worth showing
                text = await asyncio.wait_for(target.acomplete([("user", prompt)]), target_timeout_s)
                out: dict[str, Any] = {"answer": text}
            except asyncio.TimeoutError:
                out = {"error": f"the target did not answer within {target_timeout_s:g} s"}
            except Exception as exc:
                out = {"error": f"{type(exc).__name__}: {exc}"}
            return {**out, "seconds": round(time.perf_counter() - started, 3)}

        if req.optimized == req.original:  # nothing to compare: one answer serves both sides
            one = await answer(req.original)
            return {"original": one, "optimized": one, "target": target.name}
        first, second = await asyncio.gather(answer(req.original), answer(req.optimized))
        return {"original": first, "optimized": second, "target": target.name}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "bpo-prompt"}]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> Any:
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise HTTPException(400, "prompt must not be empty")
        stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
        settings = GenerationSettings(
            mode="stable" if req.temperature > 0 else "greedy",
            max_new_tokens=req.max_tokens,
            do_sample=req.temperature > 0,
            temperature=req.temperature or 1.0,
            top_p=req.top_p,
            stop_at_newline="\n" in stops,
            seed=req.seed,
        )
        futures = [batcher.submit(settings, p) for p in prompts]
        deadline = waits.deadline_after(request_timeout_s)
        try:
            texts = [await waits.await_future(f, "the completion", deadline=deadline) for f in futures]
        except OptimizerTimeoutError as exc:
            for f in futures:
                f.cancel()
            return error(504, "timeout", str(exc))
        except Exception as exc:  # the model failed: this request gets an answer, the server lives on
            return error(503, "generation_error", f"{type(exc).__name__}: {exc}")
        choices = []
        for i, text in enumerate(texts):
            for stop in stops:  # honour other stop strings by cutting
                if stop and stop in text:
                    text = text[: text.index(stop)]
            choices.append({"index": i, "text": text, "finish_reason": "stop", "logprobs": None})
        return {
            "id": f"cmpl-{time.time_ns()}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": choices,
        }

    @app.post("/v1/optimize")
    async def optimize(req: OptimizeRequest) -> Any:
        try:
            target = optimizer.with_options(style=req.style) if req.style else optimizer
            results = await asyncio.wait_for(
                target.arewrite_batch(req.prompts, mode=req.mode, rounds=req.rounds), request_timeout_s
            )
        except (InvalidPromptError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc
        except (asyncio.TimeoutError, OptimizerTimeoutError) as exc:
            return error(504, "timeout", str(exc) or f"request_timeout_s={request_timeout_s} passed")
        except BPOError as exc:  # on_error="raise" optimizers
            return error(503, "optimizer_error", str(exc))
        return {"results": [r.to_dict() for r in results]}

    @app.on_event("shutdown")
    def _close() -> None:
        batcher.close()

    return app
