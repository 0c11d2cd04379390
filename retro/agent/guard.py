"""Stop a run whose served actor cannot act at all, before it stores a night of junk.

A served model that sees the prompt in another shape than intended (a chat template that closes the
prefilled turn, a server that echoes it) answers every step with something that is no action: the issue
that led here stored 64 invalid actions out of 64, with no error. A weak model errs on some steps, never on
every one: so the guard judges each episode once, on its first `first_steps` steps, and stops the run when
the last `window` episodes judged made no valid action in them. At least 8 actions are judged, so a small
model that errs one step in ten stops a run about once in 10^8.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from retro.agent.actor import Step
from retro.errors import ConfigError

WINDOW = 8  # episodes judged together (fewer when the run has fewer tasks)
MIN_ACTIONS = 8  # actions judged in all: a run of 2 tasks judges 4 steps of each


class InvalidActionsError(ConfigError):
    """A served actor whose first actions are all invalid: the prompt reaches it in the wrong shape."""


class ActionGuard:
    """Fed each episode's steps after every step; raises InvalidActionsError when the rule above holds."""

    def __init__(self, window: int, first_steps: int, model: str = "the actor"):
        self.window, self.first_steps, self.model = window, first_steps, model
        self.judged: deque[bool] = deque(maxlen=window)  # per episode judged: its first steps all invalid

    @classmethod
    def for_run(cls, n_tasks: int, model: str = "the actor") -> ActionGuard:
        window = max(1, min(WINDOW, n_tasks))
        return cls(window, max(2, math.ceil(MIN_ACTIONS / window)), model)

    def observe(self, steps: Sequence[Step]) -> None:
        """One episode's trajectory after its latest step; it is judged when it has exactly `first_steps`."""
        if len(steps) != self.first_steps:
            return
        self.judged.append(not any(step.valid for step in steps))
        if len(self.judged) == self.window and all(self.judged):
            raise InvalidActionsError(
                f"stopped: {self.model} made no valid action in the first {self.first_steps} steps of the last "
                f"{self.window} episodes (the last one wrote {steps[-1].action[:60]!r}); the served model most "
                "likely gets the prompt in another format than intended (chat template, assistant prefill): "
                "check the server's chat template and the actor's PREFILL setting, then rerun to resume"
            )
