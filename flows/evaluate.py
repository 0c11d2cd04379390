"""Evaluate: candidate adapter vs the incumbent on the held-out split; promote only if better.

    python -m flows.evaluate MODEL_ID  (or: prefect deployment run 'evaluate/evaluate' -p candidate=MODEL_ID)
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

from prefect import flow, task

from flows.artifacts import publish_evaluation
from flows.common import current_flow_run_id, open_lake, retry_transient
from flows.logs import rollout_progress, run_logger
from retro.agent.request import held_out_request
from retro.eval.paired import compare_arms
from retro.eval.report import comparison_table
from retro.orchestrate.promote import evaluate_candidate


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_transient)
def evaluate_task(candidate: str, env: str | None = None, tasks: int | None = None, trials: int | None = None,
                  tag: str = "", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The held-out request resolved here, at the evaluation's start; both arms run it, their progress in the
    run log as they go. The comparison with its CIs and the promotion are the `evaluation` artifact."""
    log = run_logger()
    settings, lake = open_lake(overrides)
    request = held_out_request(settings, lake, env=env, tasks=tasks, trials=trials, tag=tag)
    comparison = evaluate_candidate(settings, lake, request, candidate, flow_run_id=current_flow_run_id(),
                                    progress=rollout_progress(f"evaluation {request.env}/{request.split}"))
    log.info(comparison.reason)
    incumbent = f"incumbent {comparison.incumbent}"
    arms = {incumbent: comparison.incumbent_run, f"candidate {comparison.candidate}": comparison.candidate_run}
    result = {**asdict(comparison), "reason": comparison.reason}
    publish_evaluation(result, comparison_table(compare_arms(lake, arms, baseline=incumbent), "incumbent").to_dicts())
    return result


@flow(name="evaluate")
def evaluate_flow(candidate: str, env: str | None = None, tasks: int | None = None, trials: int | None = None,
                  tag: str = "", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare a candidate with the promoted adapter (or the base model) and promote if it wins."""
    return evaluate_task(candidate, env, tasks, trials, tag, overrides)


if __name__ == "__main__":
    evaluate_flow(sys.argv[1])
