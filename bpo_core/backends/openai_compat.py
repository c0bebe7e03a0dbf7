"""A backend for an optimizer model served behind an OpenAI-compatible completions endpoint.

This is how THUDM/BPO runs at scale: vLLM (tensor parallel, replicas behind a load balancer),
TGI, a llama.cpp server, or ``bpo serve``. The optimizer's template, modes, guard and cache run
here; the endpoint only completes text. A batch goes out as one request with a list of prompts
(split into chunks of ``max_batch_size``, up to ``concurrency`` requests in flight).

Note: a text-completion API tokenizes the whole rendered prompt, so special-token text inside a
user prompt reaches the model as special tokens; the local backend prevents that.
"""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from typing import Any

from bpo_core.backends import estimate_tokens
from bpo_core.errors import GenerationError
from bpo_core.formats import PromptFormat
from bpo_core.generation import GenerationSettings

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAICompatibleBackend:
    """Completes rendered optimizer prompts through ``POST {base_url}/completions``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        concurrency: int = 4,
        max_batch_size: int = 16,
        tokenizer: Any = None,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai-compatible:{self.base_url}:{model}"
        self.tokenizer = tokenizer
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_batch_size = max_batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="bpo-http")

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return estimate_tokens(text)  # the model's tokenizer is not known here

    def generate(self, prompts: list[str], fmt: PromptFormat, settings: GenerationSettings) -> list[str]:
        rendered = [fmt.render(p, self.tokenizer) for p in prompts]
        chunks = [rendered[i : i + self.max_batch_size] for i in range(0, len(rendered), self.max_batch_size)]
        futures = [self._pool.submit(self._complete, chunk, settings) for chunk in chunks]
        return [text for future in futures for text in future.result()]

    def _payload(self, prompts: list[str], settings: GenerationSettings) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": prompts,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature if settings.do_sample else 0.0,
            "top_p": settings.top_p if settings.do_sample else 1.0,
        }
        if settings.stop_at_newline:
            payload["stop"] = ["\n"]
        if settings.seed is not None:
            payload["seed"] = settings.seed
        return payload

    def _complete(self, prompts: list[str], settings: GenerationSettings) -> list[str]:
        import httpx

        payload = self._payload(prompts, settings)
        last: Exception | None = None
        with self._slots:
            for attempt in range(self.max_retries + 1):
                try:
                    response = self._client.post("/completions", json=payload)
                    if response.status_code in RETRY_STATUS:
                        raise httpx.HTTPStatusError(
                            f"HTTP {response.status_code}", request=response.request, response=response
                        )
                    response.raise_for_status()
                    choices = sorted(response.json()["choices"], key=lambda c: c.get("index", 0))
                    if len(choices) != len(prompts):
                        raise GenerationError(
                            f"endpoint returned {len(choices)} completions for {len(prompts)} prompts"
                        )
                    return [c.get("text") or "" for c in choices]
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    last = exc
                    status = getattr(getattr(exc, "response", None), "status_code", None)
                    if status is not None and status not in RETRY_STATUS:
                        break
                    if attempt < self.max_retries:  # exponential backoff with jitter
                        time.sleep(self.backoff_s * (2**attempt) * (0.5 + random.random()))
                except (KeyError, ValueError, TypeError) as exc:
                    raise GenerationError(f"unexpected response from {self.base_url}/completions: {exc}") from exc
        raise GenerationError(f"completions request to {self.base_url} failed: {last}")

    def close(self) -> None:
        self._client.close()
        self._pool.shutdown(wait=False)
