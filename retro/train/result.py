"""What a training stage returns when it has nothing to learn from (a normal outcome, not an error)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("retro.train")

NEXT_STEP = {  # what to change when a stage trains nothing: the settings that give it data
    "sft": "no reflection was rated above dataset.positive_threshold: play more training tasks (rollout.tasks, "
           "or the nightly's tasks parameter) or write more reflections per failure (nightly.reflections_per_failure)",
    "rm": "no two reflections of one prompt were rated apart and the ratings are one class: more training tasks "
          "or more reflections per failure (nightly.reflections_per_failure) give pairs",
    "policy": "the policy stage needs a reward model (see the reward model's line), or train.reward=environment "
              "with train.trainer grpo or rloo",
}


@dataclass(frozen=True)
class Skipped:
    """A stage that did not train: `reason` is the one sentence the log shows (counts, dataset version)."""

    stage: str  # sft | rm | ppo
    reason: str

    def __str__(self) -> str:
        return self.reason


def skip(stage: str, reason: str) -> Skipped:
    """Log the reason once and return it as a Skipped result."""
    log.info(reason)
    return Skipped(stage, reason)
