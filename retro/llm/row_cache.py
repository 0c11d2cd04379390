"""Keep the attention keys/values of recent prompts, so an episode's next call prefills only its new tokens.

A ReAct actor calls the model twice per step and every call's prompt is the previous one plus the
completion and a new observation: without this cache each call prefills the whole trajectory again,
and the cost of an episode grows with the square of its length. After a call, each row's prompt and
completion tokens are kept with their keys/values; a later prompt reuses the longest common token
prefix with any kept row (tokenization at the seam may differ, so the match is token by token, and
the rest is prefilled). An entry whose whole prompt was reused is dropped: its episode has moved on
to the new entry.

Bounded by bytes, least recently used dropped first (never a row of the same call). Per adapter: a
LoRA adapter changes the keys.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import count

import numpy as np

from retro.llm.kv_batch import KV, Reuse, kv_nbytes


@dataclass
class Entry:
    adapter: str | None
    tokens: np.ndarray  # the token ids the keys/values cover: a prompt, then its completion
    prompt_len: int
    kv: KV
    nbytes: int
    call: int  # the generate call that added it


def common_len(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the common prefix of two token arrays."""
    m = min(len(a), len(b))
    differ = np.flatnonzero(a[:m] != b[:m])
    return int(differ[0]) if differ.size else m


class RowCache:
    """Recent rows' keys/values, at most max_bytes of them."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[int, Entry] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.reused_tokens = 0
        self.call = 0
        self._ids = count()

    def begin_call(self) -> None:
        """A new generate call: what it adds is not evicted by what it adds later (see `add`)."""
        self.call += 1

    def match(self, adapter: str | None, row: list[int]) -> tuple[int, Reuse] | None:
        """(entry id, reuse) of the kept row sharing the longest token prefix with `row`, leaving the row
        at least one token to prefill; or None."""
        tokens = np.asarray(row)
        best: tuple[int, int] | None = None
        for key, entry in self.entries.items():
            if entry.adapter == adapter:
                n = min(common_len(tokens, entry.tokens), len(row) - 1)
                if n > 0 and (best is None or n > best[1]):
                    best = (key, n)
        if best is None:
            return None
        return best[0], Reuse(best[1], self.entries[best[0]].kv)

    def used(self, key: int, n: int) -> None:
        """An entry was reused for n tokens: count it, and drop it if the new prompt continues its whole
        prompt (the new call's row replaces it); else it is now the most recently used."""
        self.hits += 1
        self.reused_tokens += n
        entry = self.entries.get(key)
        if entry is None:
            return
        if n >= entry.prompt_len:
            del self.entries[key]
            self.nbytes -= entry.nbytes
        else:
            self.entries.move_to_end(key)

    def clear(self) -> None:
        self.entries.clear()
        self.nbytes = 0

    def add(self, adapter: str | None, tokens: list[int], prompt_len: int, kv: KV) -> None:
        """Keep a row, evicting the least recently used entries of earlier calls to make room. When the rows
        of one call do not all fit, the later ones are not kept: evicting this call's own rows would make a
        run whose episodes cycle through the cache miss on every one of them (LRU's cyclic worst case),
        where keeping some gives those some reuse."""
        nbytes = kv_nbytes(kv)
        if nbytes > self.max_bytes:
            return
        older = [key for key, entry in self.entries.items() if entry.call != self.call]
        while self.nbytes + nbytes > self.max_bytes and older:
            self.nbytes -= self.entries.pop(older.pop(0)).nbytes
        if self.nbytes + nbytes > self.max_bytes:
            return
        self.entries[next(self._ids)] = Entry(adapter, np.asarray(tokens), prompt_len, kv, nbytes, self.call)
        self.nbytes += nbytes
