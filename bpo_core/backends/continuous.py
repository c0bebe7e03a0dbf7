"""Continuous batching for greedy rewrites on :class:`~bpo_core.backends.lean_llama.LeanLlama`.

Rewrites vary in length (most BPO rewrites end after 10-30 tokens, a few run to the limit). With
fixed batches, a batch runs as long as its longest row, and the last steps carry one or two rows
while the weights are still read in full. Here rows leave the batch when they finish and waiting
prompts join it, so the batch stays full until the queue is empty.

Layout: all rows share one key/value buffer whose columns ("slots") are storage, not positions.
Slots ``[0, prefix)`` hold the template prefix shared by every row (computed once, see
``LeanLlama.prefix_state``). A joining group of prompts is right-aligned so that its last prompt
token sits just before the next slot to write; each row keeps its own positions and its own mask
of slots it may attend to. Slots no running row uses any more are squeezed out when the buffer
fills up.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bpo_core.backends.lean_llama import LeanLlama


def continuous_greedy(
    lean: LeanLlama,
    sequences: list[list[int]],
    *,
    prefix_length: int = 0,
    max_new_tokens: int,
    eos_ids: Collection[int],
    max_batch_size: int = 32,
    pad_id: int = 0,
    max_time: float | None = None,
) -> list[list[int]]:
    """Greedy continuation of every token sequence; returns the new ids of each (EOS excluded).

    The first ``prefix_length`` tokens must be shared by all sequences, and each sequence needs
    at least one token after them. At most ``max_batch_size`` rows decode at once. With
    ``max_time``, rows still unfinished when time runs out keep what they have (possibly nothing).
    """
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1")
    if not sequences or max_new_tokens <= 0:
        return [[] for _ in sequences]
    prefix = sequences[0][:prefix_length]
    if any(seq[:prefix_length] != prefix or len(seq) <= prefix_length for seq in sequences):
        raise ValueError("prefix_length must cover a prefix shared by every sequence and leave each one a token")
    return _Scheduler(lean, sequences, prefix, max_new_tokens, set(eos_ids), max_batch_size, pad_id, max_time).run()


class _Scheduler:
    def __init__(
        self,
        lean: LeanLlama,
        sequences: list[list[int]],
        prefix: list[int],
        max_new_tokens: int,
        eos: set[int],
        max_batch_size: int,
        pad_id: int,
        max_time: float | None,
    ) -> None:
        import torch

        self.lean, self.sequences, self.prefix = lean, sequences, prefix
        self.max_new_tokens, self.eos, self.max_batch, self.pad_id = max_new_tokens, eos, max_batch_size, pad_id
        self.deadline = None if max_time is None else time.monotonic() + max_time
        self.device = lean.device
        self.results: list[list[int]] = [[] for _ in sequences]
        self.waiting = deque(sorted(range(len(sequences)), key=lambda i: len(sequences[i])))
        widest = max(len(s) for s in sequences) - len(prefix)
        self.kv = lean.new_buffers(0, len(prefix) + widest + max_new_tokens)
        self.kv.length = len(prefix)
        self.valid = torch.zeros((0, self.kv.capacity), dtype=torch.bool, device=self.device)
        self.positions = torch.zeros((0, 1), dtype=torch.long, device=self.device)
        self.rows: list[int] = []  # the sequence each buffer row decodes
        self.running: list[bool] = []  # finished rows stay in the buffer until the next compaction
        # Joining costs a prefill pass; let a few rows free up before paying it.
        self.join_at = max(1, max_batch_size // 4)

    def run(self) -> list[list[int]]:
        import torch

        logits: Any = None
        while True:
            tokens = self._take(logits) if self.rows else None
            alive = sum(self.running)
            if (self.deadline is not None and time.monotonic() > self.deadline) or not (alive or self.waiting):
                return self.results
            free = self.max_batch - alive
            join = bool(self.waiting) and free >= min(self.join_at, len(self.waiting))
            finished = len(self.rows) - alive
            if finished and (join or finished * 4 >= len(self.rows)):
                tokens = self._compact(tokens)
            parts = []
            if self.rows:
                parts.append(self._step(tokens))
            if join:
                parts.append(self._join([self.waiting.popleft() for _ in range(min(free, len(self.waiting)))]))
            logits = torch.cat(parts) if len(parts) > 1 else parts[0]

    def _take(self, logits: Any) -> Any:
        # max().indices is argmax (first maximum on ties) and much faster than argmax in bfloat16.
        tokens = logits.max(-1).indices
        for j, token in enumerate(tokens.tolist()):
            if not self.running[j]:
                continue
            if token in self.eos:
                self.running[j] = False
                continue
            out = self.results[self.rows[j]]
            out.append(token)
            if len(out) >= self.max_new_tokens:
                self.running[j] = False
        return tokens

    def _compact(self, tokens: Any) -> Any:
        import torch

        keep = [j for j, r in enumerate(self.running) if r]
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.kv.select_rows(index)
        self.valid, self.positions = self.valid[index], self.positions[index]
        self.rows = [self.rows[j] for j in keep]
        self.running = [True] * len(keep)
        return tokens[index]

    def _step(self, tokens: Any) -> Any:
        """One decode step for the rows in the buffer."""
        self._reserve(1)
        slot = self.kv.length
        self.valid[:, slot] = True
        logits = self.lean.forward(tokens[:, None], self.positions, self.kv, self.valid[:, None, None, : slot + 1])
        self.positions = self.positions + 1
        return logits

    def _join(self, group: list[int]) -> Any:
        """Prefill ``group`` into new buffer rows; returns their next-token logits."""
        import torch

        p = len(self.prefix)
        rests = [self.sequences[i][p:] for i in group]
        width = max(len(r) for r in rests)
        end = self._reserve(0, p + width)
        first = self.kv.batch
        self.kv.add_rows(len(group))
        valid = torch.zeros((len(group), self.kv.capacity), dtype=torch.bool, device=self.device)
        valid[:, :p] = True
        ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
        for g, rest in enumerate(rests):
            ids[g, width - len(rest) :] = torch.tensor(rest, dtype=torch.long)
            valid[g, end - len(rest) : end] = True
        if p:
            keys, values = self.lean.prefix_state(self.prefix)
            for layer in range(len(keys)):
                self.kv.keys[layer][first:, :, :p] = keys[layer]
                self.kv.values[layer][first:, :, :p] = values[layer]
        view = self.kv.rows_from(first)
        view.length = end - width
        positions = (p + valid[:, end - width : end].long().cumsum(-1) - 1).clamp(min=0)
        query = torch.arange(end - width, end, device=self.device)[:, None]
        key = torch.arange(end, device=self.device)[None, :]
        # Causal and not padding; the diagonal keeps a padding query attending to something (no NaN).
        mask = ((key <= query)[None] & valid[:, None, :end]) | (key == query)[None]
        logits = self.lean.forward(ids.to(self.device), positions, view, mask[:, None])
        self.kv.length = end
        self.valid = torch.cat([self.valid, valid])
        self.positions = torch.cat([self.positions, positions[:, -1:] + 1])
        self.rows.extend(group)
        self.running.extend([True] * len(group))
        return logits

    def _reserve(self, width: int, min_end: int = 0) -> int:
        """Make room to write ``width`` slots after ``kv.length`` (ending at ``min_end`` or later); returns the end.

        May squeeze the buffer, which moves ``kv.length``.
        """
        end = max(self.kv.length + width, min_end)
        if end <= self.kv.capacity:
            return end
        self._squeeze()
        end = max(self.kv.length + width, min_end)
        if end > self.kv.capacity:
            import torch

            capacity = end + self.max_new_tokens
            extra = capacity - self.kv.capacity
            self.kv.grow(capacity)
            self.valid = torch.cat([self.valid, self.valid.new_zeros((self.valid.shape[0], extra))], dim=1)
        return end

    def _squeeze(self) -> None:
        """Drop the slots no row attends to (finished rows' and the gaps left by joins)."""
        import torch

        used = self.valid[:, : self.kv.length].any(0) if self.rows else self.valid.new_zeros(self.kv.length)
        used[: len(self.prefix)] = True
        index = used.nonzero().squeeze(1)
        self.kv.select_slots(index)
        valid = torch.zeros_like(self.valid)
        valid[:, : len(index)] = self.valid[:, index]
        self.valid = valid
