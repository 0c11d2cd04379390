"""Evaluate: candidate adapter vs the incumbent on the held-out split; promote only if better.

    python -m flows.evaluate MODEL_ID  (or: prefect deployment run 'evaluate/evaluate' -p candidate=MODEL_ID)
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task

from flows.common import current_flow_run_id, open_lake, retry_transient
from retro.eval.promote import evaluate_candidate


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_transient)
def evaluate_task(candidate: str, env: str | None = None, tag: str = "",
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    settings, lake = open_lake(overrides)
    comparison = evaluate_candidate(settings, lake, candidate, env=env, tag=tag, flow_run_id=current_flow_run_id())
    get_run_logger().info(comparison.reason)
    return asdict(comparison)


@flow(name="evaluate")
def evaluate_flow(candidate: str, env: str | None = None, tag: str = "",
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare a candidate with the promoted adapter (or the base model) and promote if it wins."""
    return evaluate_task(candidate, env, tag, overrides)


if __name__ == "__main__":
    evaluate_flow(sys.argv[1])
