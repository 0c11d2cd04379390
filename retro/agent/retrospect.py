"""Retrospection: after a failed trial the retrospective model reads (task, trajectory, return) and
writes a reflection (root cause + plan) for the next trial's long-term memory."""

from __future__ import annotations

import re

from retro.agent import prompts
from retro.agent.actor import Trajectory
from retro.llm.base import Prompt

SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")  # a full stop, maybe closing quotes or brackets


def reflection_input(question: str, trajectory: Trajectory, episode_return: float, stop_reason: str,
                     error: str | None = None) -> str:
    """The exact text the retrospective model reads (stored in `reflections.prompt`, trained on later)."""
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
        trajectory=trajectory.render() or "(no steps)",
        outcome=outcome,
    )


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
