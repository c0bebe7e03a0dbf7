"""LlamaIndex face of bpo-prompt: a query transform for TransformQueryEngine / TransformRetriever."""

from llamaindex_bpo.query_transform import BPOQueryTransform

__all__ = ["BPOQueryTransform"]
