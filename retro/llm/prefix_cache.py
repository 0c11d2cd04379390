"""Reuse the attention keys/values of a prompt prefix shared by many calls (vLLM's prefix caching, in small).

Every actor prompt of a run starts with the same instruction and few-shot examples (~700 tokens on
HotPotQA) and differs only in its memory, question and trajectory. On a CPU the prefill of those
shared tokens, repeated for every episode at every step, is most of the cost of a call. So the
shared prefix is run through the model once, its cache is kept, and each later call only prefills
what comes after it: rows are laid out as [prefix][padding][own tokens], with the padding masked
out, and the position ids (computed by generate from the attention mask) continue the prefix.

The greedy completions equal those without the cache (tests/test_llm_hf.py checks it).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch

MAX_ENTRIES = 4  # prefixes kept per base model (one per adapter and prompt family is typical)


def common_prefix_len(rows: list[list[int]]) -> int:
    """Length of the longest token prefix shared by every row."""
    shortest = min(len(r) for r in rows)
    first = rows[0]
    for i in range(shortest):
        if any(r[i] != first[i] for r in rows):
            return i
    return shortest


class PrefixCache:
    """A few (adapter, prefix tokens) -> model cache entries, least recently used dropped first."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[str | None, tuple[int, ...]], Any] = OrderedDict()
        self.hits = 0

    def find(self, adapter: str | None, rows: list[list[int]]) -> tuple[int, Any] | None:
        """(prefix length, cache for a batch of one) of the longest stored prefix of every row, leaving
        each row at least one token of its own; or None."""
        shortest = min(len(r) for r in rows)
        best = None
        for key in self.entries:
            name, prefix = key
            n = len(prefix)
            if name == adapter and n < shortest and (best is None or n > len(best[1])) \
                    and all(tuple(r[:n]) == prefix for r in rows):
                best = key
        if best is None:
            return None
        self.entries.move_to_end(best)
        self.hits += 1
        return len(best[1]), self.entries[best]

    def build(self, model: Any, adapter: str | None, rows: list[list[int]], min_tokens: int) -> tuple[int, Any] | None:
        """Run the rows' shared prefix through the model once and keep its cache; None if shorter than
        min_tokens (not worth an entry)."""
        from transformers import DynamicCache

        n = min(common_prefix_len(rows), min(len(r) for r in rows) - 1)
        if n < min_tokens:
            return None
        prefix = tuple(rows[0][:n])
        device = next(model.parameters()).device
        out = model(input_ids=torch.tensor([prefix], device=device), cache=DynamicCache(), use_cache=True)
        self.entries[(adapter, prefix)] = out.cache if hasattr(out, "cache") else out.past_key_values
        while len(self.entries) > MAX_ENTRIES:
            self.entries.popitem(last=False)
        return n, self.entries[(adapter, prefix)]


def batch_after_prefix(rows: list[list[int]], n: int, cache: Any, pad_id: int,
                       device: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Inputs for generate() that start from a cached prefix of length n: (input_ids, attention_mask, cache)."""
    width = max(len(r) for r in rows) - n
    ids, mask = [], []
    for r in rows:
        pad = width - (len(r) - n)
        ids.append(r[:n] + [pad_id] * pad + r[n:])
        mask.append([1] * n + [0] * pad + [1] * (len(r) - n))
    batch_cache = copy.deepcopy(cache)  # generate() extends the cache in place; the stored one stays clean
    batch_cache.batch_repeat_interleave(len(rows))
    return (torch.tensor(ids, device=device), torch.tensor(mask, device=device), batch_cache)
