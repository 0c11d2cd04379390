"""Guess the number: a small third-party environment for retroformer, in one file.

The environment knows nothing of LLMs: it reads its own action (`guess 42`) out of the actor's line, answers
"Higher." / "Lower." / "Right!", and says how many steps a trial gets. Installed, it is found through the
`retro.envs` entry point in pyproject.toml: `retro envs list` shows it, `retro rollout --env guess` plays it.
"""

from __future__ import annotations

import random
import re

from retro.envs.base import StepResult, Task
from retro.errors import UnknownEnvError

LOW, HIGH = 1, 100
TASKS = 20
_GUESS = re.compile(r"\bguess\s+(\d+)\b", re.IGNORECASE)

EXAMPLE = """Guess the number I think of, from 1 to 100.
Thought 1: I halve the range each time. I start in the middle.
Action 1: guess 50
Observation 1: Lower.
Thought 2: It is below 50, so I guess the middle of 1-49.
Action 2: guess 25
Observation 2: Higher.
Thought 3: It is between 26 and 49. I guess 37.
Action 3: guess 37
Observation 3: Right!"""


class GuessEpisode:
    """One game: the secret is the task's answer."""

    def __init__(self, task: Task):
        self.secret = int(task.answer)
        self.done = False

    def reset(self) -> str:
        self.done = False
        return f"Guess the number I think of, from {LOW} to {HIGH}."

    def step(self, action: str) -> StepResult:
        if self.done:
            return StepResult("The game is over.", 0.0, True, {"invalid": True})
        number = int(action.split()[1])
        if number == self.secret:
            self.done = True
            return StepResult("Right!", 1.0, True, {"success": True, "score": 1.0})
        hint = "Higher." if number < self.secret else "Lower."
        return StepResult(hint, 0.0, False, {"invalid": not LOW <= number <= HIGH})

    def close(self) -> None:
        pass


class Guess:
    """The environment: 20 games with seeded secrets in one split, `eval`."""

    name = "guess"
    action_help = "Find my number: write `guess N`; I answer Higher., Lower. or Right!"
    invalid_action = f"Invalid action: write guess N, with a whole number N from {LOW} to {HIGH}."
    max_steps = 7  # halving 1..100 finds any number in 7 guesses

    def __init__(self, settings):
        self.settings = settings

    def splits(self) -> dict[str, int]:
        return {"eval": TASKS}

    def load_tasks(self, split: str) -> list[Task]:
        if split != "eval":
            raise UnknownEnvError(f"guess has no split '{split}': choose eval")
        rng = random.Random(0)
        return [Task(self.name, split, f"game-{k:02d}", f"Guess the number I think of, from {LOW} to {HIGH}.",
                     str(rng.randint(LOW, HIGH))) for k in range(TASKS)]

    def parse_action(self, text: str) -> str | None:
        match = _GUESS.search(text)
        return f"guess {int(match.group(1))}" if match else None

    def few_shot(self, task: Task | None = None) -> str:
        return EXAMPLE

    def start(self, task: Task) -> GuessEpisode:
        return GuessEpisode(task)
