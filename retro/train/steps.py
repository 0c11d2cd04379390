"""What a trainer logs at each step: one log line as it goes (a flow's run logger shows it in Prefect's UI,
the terminal in `retro train`), and the per-step history kept in the model's metrics for the report's curves.

trl names the values as it logs them: `loss` (SFT, reward model, GRPO/RLOO), `reward` and `kl` (GRPO/RLOO),
`objective/scores`, `objective/kl` and `loss/policy_avg` (PPO).
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)

SHOWN = ("loss", "reward", "kl", "objective/scores", "objective/kl", "loss/policy_avg")  # the log line's values
SUMMARY_KEYS = ("train_runtime", "train_loss")  # the Trainer's closing entry: totals, not a step


def step_history(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The trainer's per-step entries, numbers only (finite), with their step; its closing summary left out."""
    steps = []
    for entry in log_history:
        if any(key in entry for key in SUMMARY_KEYS) or "step" not in entry:
            continue
        values = {key: float(value) for key, value in entry.items()
                  if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)}
        if len(values) > 1:  # more than the step itself
            steps.append(values)
    return steps


def step_line(stage: str, step: int, max_steps: int, values: dict[str, Any]) -> str:
    """`sft step 3/10: loss 0.5123`: the values a person watches, as plain text."""
    shown = ", ".join(f"{key} {float(values[key]):.4g}" for key in SHOWN
                      if isinstance(values.get(key), int | float))
    return f"{stage} step {step}/{max_steps}" + (f": {shown}" if shown else "")


def step_logger(stage: str):
    """A transformers TrainerCallback that logs each logged step of `stage` (one line, retro.train.steps)."""
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and not any(key in logs for key in SUMMARY_KEYS):
                log.info(step_line(stage, state.global_step, state.max_steps, logs))

    return StepLogger()
