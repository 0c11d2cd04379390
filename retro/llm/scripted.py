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
    """Answers each prompt with `respond(prompt_text)`; tokens are counted as whitespace words."""

    def __init__(self, respond: Callable[[str], str], name: str = "scripted", context_window: int = 100_000):
        self.respond = respond
        self.name = name
        self.context_window = context_window
        self.calls = 0  # batched generate calls made (tests assert batching with it)

    def count_tokens(self, prompt: Prompt) -> int:
        return len(prompt_text(prompt).split())

    def generate(self, prompts: list[Prompt], params: GenParams) -> Generation:
        start = time.perf_counter()
        self.calls += 1
        texts = [cut_at_stop(self.respond(prompt_text(p)), params.stop) for p in prompts]
        return Generation(
            texts=texts,
            prompt_tokens=[self.count_tokens(p) for p in prompts],
            completion_tokens=[len(t.split()) for t in texts],
            seconds=time.perf_counter() - start,
        )
