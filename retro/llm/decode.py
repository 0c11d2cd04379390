"""Batched decoding in which a row that has stopped leaves the batch.

transformers' generate() keeps every row until the last one stops, feeding the finished ones padding.
A ReAct call's completions end at a newline after anything from 5 to 30 tokens, so most of a batch's
late steps ran for rows already done, and each row costs a read of its whole context's keys/values at
every step (a 2,000-token HotPotQA context is ~90 MB of them in fp32 for SmolLM2-135M). Here a row that
stops (an end-of-sequence token, a stop string, or max_new_tokens) is handed to `on_leave` while its
keys/values are still in the cache, and the batch is compacted once enough rows have left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

LeaveFn = Callable[[int, int, list[int]], None]  # (row of the original batch, its index in the cache, tokens fed)


@dataclass(frozen=True)
class Sampler:
    """Greedy when temperature is 0, else temperature + nucleus (top-p) sampling; with `generators`
    (one per original row) each row draws from its own seeded stream, whatever else is in the batch."""

    temperature: float = 0.0
    top_p: float = 1.0
    generators: tuple[torch.Generator, ...] = ()

    def pick(self, logits: torch.Tensor, rows: list[int] | None = None) -> torch.Tensor:
        """The next token of each batch position; `rows` maps positions to original rows (-1: left)."""
        if self.temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > self.top_p  # keeps the token that crosses top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        if not self.generators:
            return torch.multinomial(probs, 1).squeeze(-1)
        rows = rows if rows is not None else list(range(probs.shape[0]))
        return torch.cat([torch.multinomial(p, 1, generator=self.generators[r]) if r >= 0 else p.argmax(-1, keepdim=True)
                          for p, r in zip(probs, rows)])


def stop_check(tokenizer: Any, stops: tuple[str, ...]) -> Callable[[list[int]], bool]:
    """Whether a completion's text contains a stop string yet (it is checked after every token, so only
    the last few tokens need decoding: a token is at least one character)."""
    if not stops:
        return lambda tokens: False
    tail = max(len(s) for s in stops) + 4
    return lambda tokens: any(s in tokenizer.decode(tokens[-tail:], skip_special_tokens=True) for s in stops)


def decode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Any, max_new_tokens: int,
           sampler: Sampler, ends: set[int], stopped: Callable[[list[int]], bool],
           on_leave: LeaveFn | None = None) -> list[list[int]]:
    """Each row's completion tokens (an end token excluded, a stop string's tokens included).

    `cache` holds the first cache.get_seq_length() columns of input_ids (a StaticCache with room for the
    rest and max_new_tokens more); the remaining columns are prefilled in one pass first.
    """
    rows = list(range(input_ids.shape[0]))  # the original row of each batch position
    out: list[list[int]] = [[] for _ in rows]
    mask = attention_mask
    start = int(cache.get_seq_length())
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids[:, start:], attention_mask=mask, position_ids=positions[:, start:],
                   cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    for fed in range(max_new_tokens):
        tokens = sampler.pick(logits, rows)
        for i, token in enumerate(tokens.tolist()):
            row = rows[i]
            if row < 0:  # already left, still in the cache until the next compaction
                continue
            if token not in ends:
                out[row].append(token)
            if token in ends or stopped(out[row]) or fed + 1 == max_new_tokens:
                if on_leave is not None:
                    on_leave(row, i, out[row][:fed])
                rows[i] = -1
        left = [i for i, row in enumerate(rows) if row < 0]
        if len(left) == len(rows):
            break
        if 4 * len(left) >= len(rows):  # compacting copies the cache: worth it once a quarter of the rows left
            keep = torch.tensor([i for i, row in enumerate(rows) if row >= 0], device=mask.device)
            _select_rows(cache, keep)
            rows, tokens, mask = [rows[i] for i in keep.tolist()], tokens[keep], mask[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                       cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    return out


def _select_rows(cache: Any, keep: torch.Tensor) -> None:
    """Keep only these batch rows of every layer's keys/values (a copy of what stays)."""
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, keep)
        layer.values = layer.values.index_select(0, keep)
        if hasattr(layer, "batch_size"):
            layer.batch_size = len(keep)
