"""BPO inside a LangChain chain, fully offline: ``prompt | BPORunnable() | llm``.

Run:  python examples/langchain_chain.py ["your question" ...]
"""

from __future__ import annotations

import sys
import time

from _local_llm import base_model_and_tokenizer
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline
from transformers import pipeline

from langchain_bpo import BPORunnable

QUESTIONS = sys.argv[1:] or [
    "Write python code to connect to a FTP server.",
    "How to deal with the repetition problems in NLP pre-trained models?",
    "Give two good examples of customer service.",
]


class ShowRewrite(BaseCallbackHandler):
    """Prints the ``bpo_rewrite`` event BPORunnable emits for each prompt."""

    def on_custom_event(self, name, data, **kwargs):
        for r in data["results"]:
            print(f"  original : {r['original']}")
            if r.get("addition"):  # augment: the prompt goes on verbatim, with this appended
                print(f"  added    : {r['addition']}")
            else:
                print(f"  optimized: {r['optimized']}" + (f"   (kept: {r['reason']})" if r["reason"] else ""))


def main() -> None:
    model, tokenizer = base_model_and_tokenizer()
    generate = pipeline(
        "text-generation", model=model, tokenizer=tokenizer, max_new_tokens=96, do_sample=False, return_full_text=False
    )
    llm = ChatHuggingFace(llm=HuggingFacePipeline(pipeline=generate), tokenizer=tokenizer)

    prompt = ChatPromptTemplate.from_messages([("system", "You are a helpful assistant."), ("human", "{question}")])
    chain = prompt | BPORunnable() | llm | StrOutputParser()

    for question in QUESTIONS:
        print(f"\n== {question}")
        start = time.perf_counter()
        answer = chain.invoke({"question": question}, config={"callbacks": [ShowRewrite()]})
        print(f"  answer   : {answer.strip()[:400]}")
        print(f"  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
