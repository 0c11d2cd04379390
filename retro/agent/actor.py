"""The ReAct actor's prompts: instruction + examples + memory + trajectory, cut to the context window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from retro.agent import prompts
from retro.llm.base import LLM, Prompt


@dataclass
class Step:
    thought: str
    action: str
    observation: str
    reward: float = 0.0
    valid: bool = True


@dataclass
class Trajectory:
    """The short-term memory of one trial."""

    question: str
    steps: list[Step] = field(default_factory=list)

    def render(self, first: int = 0) -> str:
        """The steps as a prompt shows them; `first` > 0 leaves out that many of the oldest, saying so."""
        lines = [prompts.OMITTED_STEPS.format(n=first)] if first else []
        lines += [prompts.format_step(i + 1, s.thought, s.action, s.observation)
                  for i, s in enumerate(self.steps) if i >= first]
        return "\n".join(lines)


def long_term_memory(reflections: list[str], memory_size: int) -> list[str]:
    """The reflections a trial starts with: the newest `memory_size`, newest last."""
    return reflections[-memory_size:] if memory_size > 0 else []


def actor_prompt(instruction: str, trajectory: Trajectory, tail: str, first_step: int = 0) -> Prompt:
    """A chat whose assistant turn is the trajectory so far plus `tail` (e.g. 'Thought 3:'), continued."""
    body = trajectory.render(first_step)
    assistant = (body + "\n" if body else "") + tail
    return [{"role": "user", "content": instruction}, {"role": "assistant", "content": assistant}]


def fit_steps(llm: LLM, trajectory: Trajectory, max_new_tokens: int,
              build: Callable[[int], Prompt]) -> tuple[Prompt, int]:
    """The longest `build(first_step)` that fits the model's window with room for `max_new_tokens`, dropping the
    oldest steps (the last ones are where the trial stands or failed); returns (prompt, dropped)."""
    budget = llm.context_window - max_new_tokens
    dropped = 0
    prompt = build(0)
    while dropped < len(trajectory.steps) and llm.count_tokens(prompt) > budget:
        dropped += 1
        prompt = build(dropped)
    return prompt, dropped


def fit_prompt(llm: LLM, instruction: str, trajectory: Trajectory, tail: str, max_new_tokens: int) -> tuple[Prompt, int]:
    """The longest actor prompt that fits the model's window, dropping the oldest steps; returns (prompt, dropped)."""
    return fit_steps(llm, trajectory, max_new_tokens, lambda first: actor_prompt(instruction, trajectory, tail, first))


def instruction_for(action_help: str, few_shot: str, memory: list[str], question: str) -> str:
    return prompts.ACTOR_INSTRUCTION.format(
        action_help=action_help.strip(),
        few_shot=few_shot.strip(),
        memory=prompts.format_memory(memory),
        question=question.strip(),
    )
