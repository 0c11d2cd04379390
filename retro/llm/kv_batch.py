"""Batch prompts whose leading tokens already have cached attention keys/values.

A row that reuses a cache only prefills what comes after its cached tokens; a row that adds far more
than the others is prefilled on its own first (`alone_above`, `prefill_alone`). Rows have caches of
different lengths (a shared few-shot prefix, or the same episode's previous call), so each row is laid
out as [padding][cached tokens][padding][new tokens], every padding masked out: the cached part is
right-aligned in one batch cache and the new part is left-padded after it. The position ids are
computed from the attention mask, so each row's positions continue its own cached tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [1, kv heads, tokens, head dim]

# A forward pass of its own costs about what this many more padded tokens in the batch's prefill cost:
# one more read of all the weights plus a copy of the row's cache (2-core CPU, SmolLM2-135M fp32).
OWN_PASS_TOKENS = 64


@dataclass(frozen=True)
class Reuse:
    """The first n tokens of a row have cached keys/values: kv covers at least n tokens."""

    n: int
    kv: KV


def kv_nbytes(kv: KV) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)


def alone_above(new_tokens: list[int], own_pass: int = OWN_PASS_TOKENS) -> int:
    """The new-token count above which a row is prefilled on its own rather than padded in the batch: the
    cutoff c minimizing (rows with at most c new tokens) x c + for each longer row, its tokens + own_pass."""
    def cost(c: int) -> int:
        return sum(c if n <= c else n + own_pass for n in new_tokens)

    return min(sorted(set(new_tokens)), key=cost)


def prefill_alone(model: object, row: list[int], reuse: Reuse | None) -> Reuse | None:
    """Run a prompt's uncached tokens, all but the last, through the model on its own: the prompts of one
    call add very different numbers of tokens (one episode's new observation is a paragraph, another's
    is one line), and padding every row to the longest in the batch's prefill can cost more than the
    rest of the call. The batch then only decodes this row (see `alone_above` for which rows)."""
    from transformers import DynamicCache

    n = reuse.n if reuse is not None else 0
    if len(row) - n <= 1:
        return reuse
    past = DynamicCache(ddp_cache_data=[(k[:, :, :n], v[:, :, :n]) for k, v in reuse.kv]) if n else DynamicCache()
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([row[n:-1]], device=device), cache=past, use_cache=True, logits_to_keep=1)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    return Reuse(len(row) - 1, [(layer.keys, layer.values) for layer in cache.layers])


def build_batch(rows: list[list[int]], reuses: list[Reuse | None], pad_id: int, device: torch.device | str,
                config: object, max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor, object, int]:
    """Decoding inputs: (input_ids, attention_mask, cache, cache width). The cache holds every row's
    reused keys/values and room for the whole call: a StaticCache, filled in place while decoding, where a
    DynamicCache would copy all of it at every step (at batch 8 and 2,000 tokens of context that
    copy made a step 1.7x slower on the CPU)."""
    from transformers import StaticCache

    ns = [r.n if r is not None else 0 for r in reuses]
    width = max(ns)
    new_width = max(len(row) - n for row, n in zip(rows, ns))
    ids, mask = [], []
    for row, n in zip(rows, ns):
        pad_c, pad_n = width - n, new_width - (len(row) - n)
        ids.append([pad_id] * pad_c + row[:n] + [pad_id] * pad_n + row[n:])
        mask.append([0] * pad_c + [1] * n + [0] * pad_n + [1] * (len(row) - n))
    cache = StaticCache(config=config, max_cache_len=width + new_width + max_new_tokens)
    if width:
        _fill(cache, [(r.kv if r else None, n) for r, n in zip(reuses, ns)], width)
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device), cache, width


def _fill(cache: object, parts: list[tuple[KV | None, int]], width: int) -> None:
    """Write each row's first n cached keys/values, right-aligned, into columns 0..width-1 of every layer
    (zeros where a row has fewer: the mask hides them), straight into the cache's own tensors."""
    template = next(kv for kv, n in parts if n)
    for i, layer in enumerate(cache.layers):
        k0, v0 = template[i]
        layer.lazy_initialization(k0.expand(len(parts), -1, -1, -1), v0.expand(len(parts), -1, -1, -1))
        for r, (kv, n) in enumerate(parts):
            if n:
                layer.keys[r, :, width - n : width] = kv[i][0][0, :, :n]
                layer.values[r, :, width - n : width] = kv[i][1][0, :, :n]
        layer.cumulative_length.fill_(width)


def row_kv(cache: object, row: int, columns: torch.Tensor) -> KV:
    """One row's keys/values at `columns` of a batch cache, copied (so the batch tensors can be freed)."""
    return [(layer.keys[row : row + 1, :, columns], layer.values[row : row + 1, :, columns])
            for layer in cache.layers]  # indexing with a tensor copies


def row_columns(width: int, n: int, new_width: int, n_new: int, generated: int,
                device: torch.device | str) -> torch.Tensor:
    """The columns of a row's own tokens in the extended batch cache: its cached part, its new part,
    then its first `generated` fed completion tokens."""
    return torch.cat([
        torch.arange(width - n, width, device=device),
        torch.arange(width + new_width - n_new, width + new_width + generated, device=device),
    ])
