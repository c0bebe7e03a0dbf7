"""The authors' BPO pipeline as library code: feedback -> optimized-prompt pairs (``construct``),
with the pieces long API runs need (bounded concurrency, retries, rate limits, resumable journals)."""
