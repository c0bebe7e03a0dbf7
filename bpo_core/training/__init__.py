"""Training a BPO optimizer: read (prompt -> optimized prompt) pairs, fine-tune a causal LM.

Needs the ``[train]`` extra for datasets support; ``peft`` and ``transformers`` are core deps.
"""

from bpo_core.training.data import Pair, load_pairs, pairs_from_records

__all__ = ["Pair", "load_pairs", "pairs_from_records"]
