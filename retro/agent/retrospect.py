"""Retrospection: after a failed trial the retrospective model reads (task, trajectory, return) and
writes a reflection (root cause + plan) for the next trial's long-term memory."""

from __future__ import annotations

import re

from retro.agent import prompts
from retro.agent.actor import Trajectory, fit_steps
from retro.llm.base import LLM, Prompt

SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")  # a full stop, maybe closing quotes or brackets


def reflection_input(question: str, trajectory: Trajectory, episode_return: float, stop_reason: str,
                     error: str | None = None, first_step: int = 0) -> str:
    """The exact text the retrospective model reads (stored in `reflections.prompt`, trained on later);
    `first_step` > 0 leaves out that many of the oldest steps, saying so."""
    if error:
        outcome = prompts.OUTCOME_ERROR.format(error=error)
    elif stop_reason == "finished":
        outcome = prompts.OUTCOME_WRONG_ANSWER
    elif stop_reason == "no_actions":  # the environment offered nothing: not the same lesson as running out
        outcome = prompts.OUTCOME_NO_ACTIONS
    else:
        outcome = prompts.OUTCOME_NO_ANSWER
    return prompts.REFLECTION_INSTRUCTION.format(
        episode_return=episode_return,
        question=question.strip(),
        trajectory=trajectory.render(first_step) or "(no steps)",
        outcome=outcome,
    )


def fit_reflection_input(llm: LLM, trajectory: Trajectory, episode_return: float, stop_reason: str,
                         error: str | None, max_new_tokens: int) -> str:
    """The reflection input that fits the retrospective model's window with room for the reflection: a WebShop
    trial of 15 pages can be twice the window, which a server refuses outright (llama.cpp: HTTP 400)."""
    prompt, _ = fit_steps(llm, trajectory, max_new_tokens, lambda first: reflection_prompt(reflection_input(
        trajectory.question, trajectory, episode_return, stop_reason, error, first)))
    return prompt[0]["content"]


def reflection_prompt(text: str) -> Prompt:
    """The chat sent to the retrospective model: the reflection input as the user turn."""
    return [{"role": "user", "content": text}]


def clean_reflection(text: str) -> str:
    """A reflection as stored and remembered: no leading label, at most one paragraph, and no sentence cut
    off by the token budget (the text ends at its last complete sentence, when it has one)."""
    text = text.strip()
    if text.lower().startswith(prompts.REFLECTION_PREFIX.lower()):
        text = text[len(prompts.REFLECTION_PREFIX):].strip()
    text = text.split("\n\n", 1)[0].strip()
    ends = list(SENTENCE_END.finditer(text))
    return text[:ends[-1].end()] if ends else text
