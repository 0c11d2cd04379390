"""Per-prompt grammars on the hf backend, through llguidance (the constrained-decoding library behind
llama.cpp's LLGuidance option and vLLM's guidance backend): a GBNF grammar per row, or None for a free row.

llguidance rather than xgrammar: its wheel is 3 MB with no dependencies, while xgrammar pulls triton (a
CUDA compiler) onto CPU-only machines. Its matcher follows the tokens a row takes and says, before each one,
which tokens keep the text inside the grammar; once the grammar is complete only an end token is allowed,
so the row stops there.
"""

from __future__ import annotations

from typing import Any

import llguidance
import llguidance.hf
import torch
from transformers import LogitsProcessor

from retro.errors import BackendRefusedError


def grammar_tokenizer(tokenizer: Any, vocab_size: int, ends: set[int]) -> llguidance.LLTokenizer:
    """llguidance's view of an HF fast tokenizer (~0.3 s for SmolLM2's, so the caller keeps it); `ends` are the
    tokens that end a completion, the ones a complete grammar allows."""
    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=sorted(ends))


def compile_grammar(tokenizer: llguidance.LLTokenizer, gbnf: str, row: int) -> llguidance.LLMatcher:
    """A matcher at the start of `gbnf` (llama.cpp's notation); a grammar llguidance cannot use is refused in one
    line (no retry helps it)."""
    try:
        grammar = llguidance.grammar_from("gbnf", gbnf)
        error = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
    except ValueError as err:
        error = str(err)
    if error:
        first = " ".join(error.split())[:200]
        raise BackendRefusedError(f"the hf backend cannot decode within the grammar of prompt {row} (llguidance: "
                                  f"{first}): fix the action space that made it, or turn actor.constrain_actions off")
    return llguidance.LLMatcher(tokenizer, grammar)


class GrammarMask(LogitsProcessor):
    """Masks each constrained row's logits to the tokens its grammar allows next; free rows are left alone.

    generate() calls it once per step with every row's tokens so far: from the second call on, each matcher
    first takes its row's newest token. A row that ended on a stop string goes on receiving padding, which
    its matcher rejects: from then on that row is left alone (generate discards what it samples).
    """

    def __init__(self, matchers: dict[int, llguidance.LLMatcher]):
        self.matchers = matchers  # row of the batch -> its grammar's matcher
        self.started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, matcher in self.matchers.items():
            if self.started:
                matcher.consume_token(int(input_ids[row, -1]))
            if matcher.is_error():
                continue
            allowed = torch.frombuffer(bytearray(matcher.compute_logit_bias()), dtype=torch.uint8)
            allowed = allowed.to(scores.device, non_blocking=True).bool()
            scores[row, : allowed.numel()].masked_fill_(~allowed, float("-inf"))
            scores[row, allowed.numel() :] = float("-inf")  # logits past the tokenizer's vocabulary
        self.started = True
        return scores
