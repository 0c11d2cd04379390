"""retro's log lines in Prefect's run log (the UI) as a task goes: rounds of trials, training steps, skips.

retro/ knows nothing of Prefect: it logs with `logging` (the `retro` loggers) and reports a rollout's progress
to a callback. Prefect's own bridge (PREFECT_LOGGING_EXTRA_LOGGERS) takes effect only when set before Prefect
is first imported, and leaves the level to the root logger, which a served deployment's flow-run process
keeps at WARNING: there a night's INFO lines never reached the UI. So every task takes its logger here, which
attaches Prefect's API handler to the `retro` loggers itself (for records logged inside a flow or task run)
and lets their INFO lines through.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

from retro.agent.runner import ProgressFn

RETRO = logging.getLogger("retro")


class RunLogHandler(APILogHandler):
    """Prefect's API log handler for the records logged inside a flow or task run; the rest it leaves alone
    (retro's commands also log outside runs, where Prefect's handler would warn about each line)."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            super().emit(record)


def run_logger() -> Any:
    """This run's Prefect logger, with the `retro` loggers' INFO lines going to the same run log."""
    if not any(isinstance(handler, APILogHandler) for handler in RETRO.handlers):
        RETRO.addHandler(RunLogHandler())
    if RETRO.getEffectiveLevel() > logging.INFO:
        RETRO.setLevel(logging.INFO)
    return get_run_logger()


def progress_line(label: str, event: dict[str, Any]) -> str:
    """`rollout <label>: 12 of at most 40 episodes, 3/10 tasks solved so far, 41.2 tok/s`."""
    return (f"{label}: {event['episodes_done']} of at most {event['max_episodes']} episodes, "
            f"{event['successes']}/{event['n_tasks']} tasks solved so far, {event['tokens_per_second']:.1f} tok/s")


def rollout_progress(label: str) -> ProgressFn:
    """The runner's progress callback (retro/agent/runner.py) as run-log lines: one whenever episodes finished."""
    logger = run_logger()
    last = {"done": -1}

    def progress(event: dict[str, Any]) -> None:
        if event["episodes_done"] != last["done"]:
            last["done"] = event["episodes_done"]
            logger.info(progress_line(label, event))

    return progress
