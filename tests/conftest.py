"""Shared fixtures: one real embedded optimizer model per test session."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bpo_core import BPOOptimizer
from bpo_core.default_model import shared_default_backend

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Real prompts from the BPO test split's style; short so tests generate little.
PROMPTS = [
    "how can I create a profile on Facebook?",
    "Give two good examples of customer service.",
    "Explain how a rainbow forms.",
    "What are the benefits of regular exercise?",
]


@pytest.fixture(scope="session")
def backend():
    """The embedded model (SmolLM2-135M + shipped BPO adapter), loaded once."""
    return shared_default_backend()


@pytest.fixture(scope="session")
def optimizer(backend) -> BPOOptimizer:
    """A greedy optimizer on the embedded model with a short generation budget."""
    return BPOOptimizer(backend, max_new_tokens=48)


@pytest.fixture(scope="session")
def bpo_test_records(shared_data):
    return json.loads((shared_data / "bpo" / "bpo_test.json").read_text(encoding="utf-8"))


class CountingBackend:
    """Wraps a real backend and counts ``generate`` calls and prompts (a spy, not a mock)."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.calls: list[list[str]] = []

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def generate(self, prompts, fmt, settings):
        self.calls.append(list(prompts))
        return self.inner.generate(prompts, fmt, settings)


@pytest.fixture
def counting(backend) -> CountingBackend:
    return CountingBackend(backend)


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn on a free loopback port; yields its ``/v1`` base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        srv.should_exit = True
        thread.join(10)
