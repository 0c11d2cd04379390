"""Evaluate: candidate adapter vs the incumbent on the held-out split; promote only if better.

    python -m flows.evaluate MODEL_ID  (or: prefect deployment run 'evaluate/evaluate' -p candidate=MODEL_ID)
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task

from flows.common import current_flow_run_id, open_lake, retry_transient
from retro.agent.request import held_out_request
from retro.orchestrate.promote import evaluate_candidate


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_transient)
def evaluate_task(candidate: str, env: str | None = None, tasks: int | None = None, trials: int | None = None,
                  tag: str = "", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The held-out request resolved here, at the evaluation's start; both arms run it."""
    settings, lake = open_lake(overrides)
    request = held_out_request(settings, lake, env=env, tasks=tasks, trials=trials, tag=tag)
    comparison = evaluate_candidate(settings, lake, request, candidate, flow_run_id=current_flow_run_id())
    get_run_logger().info(comparison.reason)
    return asdict(comparison)


@flow(name="evaluate")
def evaluate_flow(candidate: str, env: str | None = None, tasks: int | None = None, trials: int | None = None,
                  tag: str = "", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare a candidate with the promoted adapter (or the base model) and promote if it wins."""
    return evaluate_task(candidate, env, tasks, trials, tag, overrides)


if __name__ == "__main__":
    evaluate_flow(sys.argv[1])
