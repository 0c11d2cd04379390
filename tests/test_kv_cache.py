"""Decoding bookkeeping without a model: the batch layout, the row cache's rules, the sampler."""

from __future__ import annotations

import torch

from retro.llm.decode import Sampler
from retro.llm.kv_batch import Reuse, alone_above, build_batch, row_columns
from retro.llm.row_cache import RowCache


def kv(tokens: int, layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fake keys/values, 1 head of dim 1, whose values are their positions (to see where they land)."""
    pos = torch.arange(tokens, dtype=torch.float32).view(1, 1, tokens, 1)
    return [(pos.clone(), -pos.clone()) for _ in range(layers)]


def test_rows_are_laid_out_cached_part_right_aligned_new_part_left_padded():
    rows = [[1, 2, 3, 4, 5], [1, 2, 9], [7, 8]]
    reuses = [Reuse(3, kv(4)), Reuse(2, kv(2)), None]
    from transformers import LlamaConfig

    config = LlamaConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=1, num_key_value_heads=1)
    ids, mask, cache, width = build_batch(rows, reuses, pad_id=0, device="cpu", config=config, max_new_tokens=4)
    assert width == 3
    assert ids.tolist() == [[1, 2, 3, 4, 5], [0, 1, 2, 0, 9], [0, 0, 0, 7, 8]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 1], [0, 0, 0, 1, 1]]
    keys = cache.layers[0].keys[:, 0, :, 0]  # room for the cached, new and generated tokens
    assert keys.tolist() == [[0, 1, 2] + [0] * 6, [0, 0, 1] + [0] * 6, [0] * 9]  # each row's first n, right-aligned
    assert cache.get_seq_length() == 3
    # after generate, a row's own columns are its cached part, its new part and the fed completion
    assert row_columns(width, 2, 2, 1, 2, "cpu").tolist() == [1, 2, 4, 5, 6]


def test_a_prompt_reuses_the_longest_common_token_prefix_and_keeps_one_token_to_prefill():
    cache = RowCache(max_bytes=1 << 20)
    cache.add(None, [1, 2, 3, 4, 5], 3, kv(5))
    cache.add(None, [1, 2, 8], 2, kv(3))
    _, reuse = cache.match(None, [1, 2, 3, 4, 6, 7])
    assert reuse.n == 4
    assert cache.match(None, [1, 2, 3])[1].n == 2  # one token of its own left to prefill
    assert cache.match("adapter_x", [1, 2, 3, 4]) is None  # another adapter's keys differ
    assert cache.match(None, [9, 9]) is None


def test_an_entry_continued_past_its_prompt_is_replaced_a_partial_match_is_kept():
    cache = RowCache(max_bytes=1 << 20)
    cache.add(None, [1, 2, 3, 4, 5], 3, kv(5))
    key, reuse = cache.match(None, [1, 2, 9])
    cache.used(key, reuse.n)  # shares only 2 of its 3 prompt tokens: another prompt, keep it
    assert len(cache.entries) == 1
    key, reuse = cache.match(None, [1, 2, 3, 4, 7])
    cache.used(key, reuse.n)  # continues its whole prompt: the episode moved on
    assert len(cache.entries) == 0 and cache.nbytes == 0
    assert (cache.hits, cache.reused_tokens) == (2, 2 + 4)


def test_the_least_recently_used_entries_go_first_and_an_oversized_one_is_not_kept():
    one = 2 * 2 * 5 * 4  # 2 layers x (keys + values) x 5 positions x 4 bytes
    cache = RowCache(max_bytes=2 * one)
    for token in (1, 2):
        cache.begin_call()
        cache.add(None, [token] * 5, 5, kv(5))
    cache.begin_call()
    cache.used(cache.match(None, [1, 1, 7])[0], 2)  # touches the first entry
    cache.add(None, [3, 3, 3, 3, 3], 5, kv(5))
    assert [e.tokens[0] for e in cache.entries.values()] == [1, 3] and cache.nbytes == 2 * one
    cache.begin_call()
    cache.add(None, [4] * 20, 20, kv(20))
    assert [e.tokens[0] for e in cache.entries.values()] == [1, 3]


def test_rows_of_one_call_never_evict_each_other():
    one = 2 * 2 * 5 * 4
    cache = RowCache(max_bytes=2 * one)
    for rnd in range(3):  # three episodes cycling through a cache that holds two
        cache.begin_call()
        for episode in (1, 2, 3):
            found = cache.match(None, [episode] * 5 + [rnd])
            if found is not None:
                cache.used(found[0], found[1].n)
            cache.add(None, [episode] * 5 + [rnd], 5, kv(5))
    assert cache.hits == 2 * 2  # episodes 1 and 2 keep their entries; LRU would have missed every time
    assert [e.tokens[0] for e in cache.entries.values()] == [1, 2]


def test_a_row_that_adds_far_more_tokens_is_prefilled_alone():
    assert alone_above([30, 25, 28, 32, 400, 27]) == 32  # the observation paragraph goes alone
    assert alone_above([30, 25, 28, 32, 40, 27]) == 40  # a little padding is cheaper than a pass of its own
    assert alone_above([5]) == 5


def test_sampling_keeps_to_the_nucleus_and_greedy_takes_the_argmax():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    torch.manual_seed(0)
    picked = Sampler(temperature=1.0, top_p=0.7).pick(logits)
    assert set(picked.tolist()) == {0, 1}  # 0.5 + 0.3 crosses 0.7: the rest is never drawn
    assert 0.55 < (picked == 0).float().mean() < 0.70  # renormalized: 0.5 / 0.8
    assert Sampler().pick(logits[:1]).tolist() == [0]
