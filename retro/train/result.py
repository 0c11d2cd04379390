"""What a training stage returns when it has nothing to learn from (a normal outcome, not an error)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("retro.train")


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
