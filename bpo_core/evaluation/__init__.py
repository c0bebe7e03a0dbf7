"""Evaluating BPO optimizers: reference-based (intrinsic) figures and pairwise LLM judging."""
