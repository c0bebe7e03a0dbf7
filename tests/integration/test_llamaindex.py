"""llamaindex_bpo.BPOQueryTransform over the real embedded optimizer and a real VectorStoreIndex."""

from __future__ import annotations

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.query_engine import TransformQueryEngine
from llama_index.core.retrievers import TransformRetriever
from llama_index.core.schema import QueryBundle

from bpo_core import BPOOptimizer
from llamaindex_bpo import BPOQueryTransform
from llamaindex_bpo.testing import KeywordEmbedding
from tests.conftest import CountingBackend

QUESTION = "What are the benefits of regular exercise?"
DOCS = [
    "Regular exercise strengthens the heart, improves mood and helps people sleep better.",
    "The Pacific Ocean is the largest and deepest ocean on Earth.",
    "Bread is made from flour, water, yeast and salt, then baked in an oven.",
]


@pytest.fixture(scope="module")
def index():
    return VectorStoreIndex.from_documents([Document(text=t) for t in DOCS], embed_model=KeywordEmbedding())


def test_run_rewrites_query_and_keeps_original_for_retrieval(optimizer):
    transform = BPOQueryTransform(optimizer)
    bundle = transform.run(QUESTION)
    assert bundle.query_str == optimizer.optimize(QUESTION)
    assert bundle.custom_embedding_strs == [QUESTION]
    result = transform.result_for(QUESTION)
    assert result is not None and result.original == QUESTION


@pytest.mark.parametrize(
    ("embed_with", "expected"),
    [("optimized", lambda q, o: [o]), ("both", lambda q, o: [o] if o == q else [o, q])],
)
def test_embed_with(optimizer, embed_with, expected):
    bundle = BPOQueryTransform(optimizer, embed_with=embed_with).run(QueryBundle(QUESTION))
    assert bundle.custom_embedding_strs == expected(QUESTION, bundle.query_str)


def test_bad_options(optimizer):
    with pytest.raises(ValueError, match="embed_with"):
        BPOQueryTransform(optimizer, embed_with="nope")
    with pytest.raises(TypeError, match="BPOOptimizer"):
        BPOQueryTransform("not an optimizer")


def test_transform_query_engine_optimizes_once(backend, index):
    spy = CountingBackend(backend)
    transform = BPOQueryTransform(BPOOptimizer(spy, max_new_tokens=40, add_below=None))
    engine = TransformQueryEngine(index.as_query_engine(llm=MockLLM(), similarity_top_k=1), transform)
    nodes = engine.retrieve(QueryBundle(QUESTION))
    assert "exercise" in nodes[0].node.get_content()  # retrieval used the user's words
    response = engine.synthesize(QueryBundle(QUESTION), nodes)
    assert "Regular exercise strengthens the heart" in str(response)  # MockLLM answers with its prompt
    assert len(spy.calls) == 1  # retrieve + synthesize shared one rewrite
    engine.query(QUESTION)
    assert len(spy.calls) == 1


def test_query_engine_answers_with_rewritten_prompt(optimizer, index):
    transform = BPOQueryTransform(optimizer)
    captured = {}

    class RecordingLLM(MockLLM):
        def complete(self, prompt, formatted=False, **kwargs):
            captured["prompt"] = prompt
            return super().complete(prompt, formatted=formatted, **kwargs)

    engine = TransformQueryEngine(index.as_query_engine(llm=RecordingLLM(), similarity_top_k=1), transform)
    response = engine.query(QUESTION)
    assert str(response) == captured["prompt"]  # MockLLM answers with its prompt: the answer is what it was asked
    rewritten = transform.result_for(QUESTION).optimized
    assert rewritten in captured["prompt"]
    assert "Regular exercise strengthens the heart" in captured["prompt"]


def test_transform_retriever(optimizer, index):
    retriever = TransformRetriever(index.as_retriever(similarity_top_k=1), BPOQueryTransform(optimizer))
    nodes = retriever.retrieve(QUESTION)
    assert "exercise" in nodes[0].node.get_content()


def test_prompt_mixin(optimizer):
    transform = BPOQueryTransform(optimizer)
    prompts = transform.get_prompts()
    assert "bpo_prompt" in prompts
    assert "expert prompt engineer" in prompts["bpo_prompt"].get_template()
    transform.update_prompts({"bpo_prompt": PromptTemplate("You rewrite prompts to be clearer.")})
    assert transform.get_prompts()["bpo_prompt"].get_template() == "You rewrite prompts to be clearer."
    assert optimizer.fmt.template != "You rewrite prompts to be clearer."  # the shared optimizer is untouched


async def test_arun(optimizer):
    transform = BPOQueryTransform(optimizer)
    bundle = await transform.arun(QUESTION)
    assert bundle.query_str == optimizer.optimize(QUESTION)
