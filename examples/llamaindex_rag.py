"""BPO in a LlamaIndex RAG query engine, fully offline.

The user's words retrieve (they match the documents best); the BPO rewrite is what the LLM
answers. Run:  python examples/llamaindex_rag.py ["your question"]
"""

from __future__ import annotations

import sys
import time

from _local_llm import base_model_and_tokenizer
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.query_engine import TransformQueryEngine
from llama_index.llms.huggingface import HuggingFaceLLM

from llamaindex_bpo import BPOQueryTransform
from llamaindex_bpo.testing import KeywordEmbedding

DOCUMENTS = [
    "Regular exercise strengthens the heart and lungs, lowers blood pressure, improves mood, "
    "and helps people sleep better. Adults should aim for 150 minutes of moderate activity a week.",
    "Drinking enough water keeps the body temperature normal, cushions joints, and helps the kidneys "
    "remove waste. Thirst, dark urine and headaches are signs of dehydration.",
    "A balanced diet includes vegetables, fruit, whole grains, protein and healthy fats, and limits "
    "added sugar and salt.",
]
QUESTION = " ".join(sys.argv[1:]) or "How does regular exercise help the heart?"


def main() -> None:
    model, tokenizer = base_model_and_tokenizer()
    Settings.llm = HuggingFaceLLM(
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=96,
        generate_kwargs={"do_sample": False},
        is_chat_model=True,
    )
    Settings.embed_model = KeywordEmbedding()  # offline; use any real embedding model in practice

    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCUMENTS])
    bpo = BPOQueryTransform()  # embedded optimizer; retrieval keeps the original words
    engine = TransformQueryEngine(index.as_query_engine(similarity_top_k=1), query_transform=bpo)

    start = time.perf_counter()
    response = engine.query(QUESTION)
    result = bpo.result_for(QUESTION)
    print(f"question : {QUESTION}")
    if result.addition:  # augment: the question goes on verbatim, with this appended
        print(f"added    : {result.addition}")
    else:
        print(f"optimized: {result.optimized}" + (f"   (kept: {result.reason})" if result.reason else ""))
    print(f"retrieved: {response.source_nodes[0].node.get_content()[:80]}...")
    print(f"answer   : {str(response).strip()[:400]}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
