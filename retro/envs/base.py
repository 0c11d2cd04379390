"""The environment protocol: tasks of a split, and episodes that take action strings.

An environment knows nothing of LLMs: it answers an action string with an observation, a reward and
whether the episode is over. Malformed actions are observations ("Invalid action ..."), never exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Task:
    """One task of a split; `question` is what the actor is asked, `answer` the gold (path) for scoring."""

    env: str
    split: str
    task_id: str
    question: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class StepResult:
    observation: str
    reward: float  # on the terminal step: the episode return G
    done: bool
    info: dict[str, Any] = field(default_factory=dict)  # "success": bool, "score": float, "invalid": bool


class Episode(Protocol):
    """One trial of one task: its own state, so many can run side by side in a batched runner."""

    def reset(self) -> str:
        """Start (or restart) the task and return the first observation (the task statement)."""

    def step(self, action: str) -> StepResult: ...

    def close(self) -> None: ...


class Environment(Protocol):
    name: str
    action_help: str  # the actor's instruction: what actions exist and what they do

    def splits(self) -> dict[str, int]:
        """Split name -> number of tasks."""

    def load_tasks(self, split: str) -> list[Task]:
        """Every task of a split, sorted by task_id (raises UnknownEnvError for an unknown split)."""

    def few_shot(self, task: Task | None = None) -> str:
        """Worked examples for the actor prompt, written by the program (not copied); `task` lets an
        environment pick examples like the task (ALFWorld: the same task type)."""

    def start(self, task: Task) -> Episode: ...
