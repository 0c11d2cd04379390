"""SDPA that keeps grouped-query attention grouped when a padded batch prefills several tokens.

With an attention mask and more than one query token, transformers' sdpa path repeats every key/value
head for its query heads (3 -> 9 copies on SmolLM2) because CUDA's fast kernels cannot take a mask and
grouped heads together; torch's CPU kernel can. On the CPU, a batch of 8 rows continuing 1,800 cached
tokens prefilled 6 new tokens each 1.7x faster without the copies, with the same logits. One-token
decoding steps and every other device keep transformers' own path.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

NAME = "retro_sdpa"


def sdpa_grouped(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    grouped = getattr(module, "num_key_value_groups", 1) > 1
    if not grouped or query.shape[2] == 1 or attention_mask is None or query.device.type != "cpu" \
            or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def use_grouped_sdpa(model: Any) -> None:
    """Switch a CPU model that runs transformers' sdpa attention to `sdpa_grouped` (same masks)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    AttentionInterface.register(NAME, sdpa_grouped)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, AttributeError) as err:  # an architecture that refuses custom attention keeps sdpa
        log.debug("keeping sdpa attention: %s", err)
