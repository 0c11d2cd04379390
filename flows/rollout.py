"""Rollout: N tasks x K trials of one mode into the lake.

    python -m flows.rollout            (or: prefect deployment run 'rollout/rollout')
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.common import current_flow_run_id, open_lake, retry_transient
from retro.agent.rollout import rollout


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_transient)
def rollout_task(env: str | None = None, split: str | None = None, mode: str | None = None,
                 tasks: int | None = None, trials: int | None = None, adapter: str | None = None,
                 tag: str = "", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A batch of episodes (the whole run): resumable, so a retry continues where the last try stopped."""
    settings, lake = open_lake(overrides)
    result = rollout(settings, lake, env=env, split=split, mode=mode, tasks=tasks, trials=trials,
                     adapter=adapter, tag=tag, flow_run_id=current_flow_run_id())
    get_run_logger().info("run %s: success by trial %s, %s new rows, %.1f tok/s", result.run_id,
                          [round(x, 3) for x in result.success_by_trial], result.written, result.tokens_per_second)
    return {"run_id": result.run_id, "success_by_trial": result.success_by_trial, "written": result.written}


@flow(name="rollout")
def rollout_flow(env: str | None = None, split: str | None = None, mode: str | None = None,
                 tasks: int | None = None, trials: int | None = None, adapter: str | None = None,
                 tag: str = "", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Roll out one mode on one split; None parameters come from the settings."""
    return rollout_task(env, split, mode, tasks, trials, adapter, tag, overrides)


if __name__ == "__main__":
    rollout_flow()
