"""Reuse the attention keys/values of a prompt prefix shared by many calls (vLLM's prefix caching, in small).

Every actor prompt of a run starts with the same instruction and few-shot examples (~700 tokens on
HotPotQA) and differs only in its memory, question and trajectory. On a CPU the prefill of those
shared tokens, repeated for every episode, is most of the cost of its first call. So the shared
prefix is run through the model once, its keys/values are kept, and each later prompt that starts
with it only prefills what comes after it (retro.llm.kv_batch lays out the batch).

The greedy completions equal those without the cache (tests/test_llm_hf.py checks it).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from retro.llm.kv_batch import KV, Reuse, prefill_alone

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
    """A few (adapter, prefix tokens) -> keys/values entries, least recently used dropped first."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[str | None, tuple[int, ...]], KV] = OrderedDict()
        self.hits = 0
        self.reused_tokens = 0

    def match(self, adapter: str | None, row: list[int]) -> Reuse | None:
        """The longest stored prefix of `row`, leaving the row at least one token of its own; or None."""
        best = None
        for key in self.entries:
            name, prefix = key
            n = len(prefix)
            if name == adapter and n < len(row) and (best is None or n > len(best[1])) and tuple(row[:n]) == prefix:
                best = key
        if best is None:
            return None
        self.entries.move_to_end(best)
        self.hits += 1
        self.reused_tokens += len(best[1])
        return Reuse(len(best[1]), self.entries[best])

    def build(self, model: Any, adapter: str | None, rows: list[list[int]], min_tokens: int) -> bool:
        """Run the rows' shared prefix through the model once and keep its keys/values; False if it is
        shorter than min_tokens (not worth an entry)."""
        n = min(common_prefix_len(rows), min(len(r) for r in rows) - 1)
        if n < min_tokens:
            return False
        prefilled = prefill_alone(model, rows[0][: n + 1], None)  # runs all but the last: the n prefix tokens
        self.entries[(adapter, tuple(rows[0][:n]))] = prefilled.kv
        while len(self.entries) > MAX_ENTRIES:
            self.entries.popitem(last=False)
        return True
