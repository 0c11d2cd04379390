"""A deterministic policy behind the LLM interface, so agent, flow and training tests run in seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

from retro.llm.base import Generation, GenParams, Prompt, cut_at_stop


def prompt_text(prompt: Prompt) -> str:
    """The prompt as one string (chat messages joined), for policies and token counts."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt)


class ScriptedLLM:
    """Answers each prompt with `respond(prompt_text)`, or `respond(prompt_text, seed)` when `seeded`: a
    model that samples, given its row's seed (GenParams.row_seed), or None when decoding is greedy.
    Tokens are counted as whitespace words."""

    def __init__(self, respond: Callable[..., str], name: str = "scripted", context_window: int = 100_000,
                 seeded: bool = False):
        self.respond = respond
        self.seeded = seeded
        self.name = name
        self.context_window = context_window
        self.calls = 0  # batched generate calls made (tests assert batching with it)

    def count_tokens(self, prompt: Prompt) -> int:
        return len(prompt_text(prompt).split())

    def generate(self, prompts: list[Prompt], params: GenParams) -> Generation:
        start = time.perf_counter()
        self.calls += 1
        def seed(i: int) -> int | None:
            return params.row_seed(i) if params.temperature > 0 else None

        answers = [self.respond(prompt_text(p), seed(i)) if self.seeded else self.respond(prompt_text(p))
                   for i, p in enumerate(prompts)]
        texts = [cut_at_stop(text, params.stop) for text in answers]
        return Generation(
            texts=texts,
            prompt_tokens=[self.count_tokens(p) for p in prompts],
            completion_tokens=[len(t.split()) for t in texts],
            seconds=time.perf_counter() - start,
        )
