"""Rollout: N tasks x K trials of one mode into the lake, in this process or fanned out over Dask workers.

    python -m flows.rollout            (or: prefect deployment run 'rollout/rollout' -p workers=4)

The flow's parameters are plain values; its first task resolves them, with the settings, into one
RolloutRequest (retro.agent.request) that every later task takes. With `workers` > 1 (or settings
rollout.workers) the tasks are split into shards; each Dask worker runs the batched runner on its shard into
Parquet files, and one commit step adds them to the lake. The Dask cluster is a local one of `workers`
processes, or the scheduler at settings rollout.dask_address.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task, unmapped

from flows.artifacts import publish_rollout
from flows.common import current_flow_run_id, open_lake, retry_transient
from flows.logs import rollout_progress, run_logger
from retro.agent.request import RolloutRequest, rollout_request
from retro.config import Settings
from retro.orchestrate.rollout import rollout
from retro.orchestrate.shards import ShardPlan, ShardResult, commit_shards, plan_shards, run_shard


def _summary(result) -> dict[str, Any]:
    """The run's result as small values, logged and published as the run's `rollout` artifact."""
    run_logger().info("run %s: success by trial %s, %s new rows, %.1f tok/s", result.run_id,
                      [round(x, 3) for x in result.success_by_trial], result.written, result.tokens_per_second)
    summary = {"run_id": result.run_id, "success_by_trial": result.success_by_trial, "written": result.written,
               "tokens_per_second": result.tokens_per_second}
    publish_rollout(summary)
    return summary


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)
def request_task(options: dict[str, Any], overrides: dict[str, Any] | None = None) -> RolloutRequest:
    """The flow's parameters resolved once (auto mode and the adapter pinned; reads the registry)."""
    settings, lake = open_lake(overrides)
    return rollout_request(settings, lake, **options)


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_transient)
def rollout_task(request: RolloutRequest, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A batch of episodes (the whole run): resumable, so a retry continues where the last try stopped. Its
    progress (episodes, tasks solved so far, tok/s) and each finished round go to the run log as it plays."""
    settings, lake = open_lake(overrides)
    progress = rollout_progress(f"rollout {request.mode} {request.env}/{request.split}")
    return _summary(rollout(settings, lake, request, flow_run_id=current_flow_run_id(), progress=progress))


# -- fan-out ----------------------------------------------------------------------------------------------
@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)
def plan_shards_task(request: RolloutRequest, overrides: dict[str, Any] | None = None) -> ShardPlan:
    settings, lake = open_lake(overrides)
    return plan_shards(settings, lake, request)


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_transient)
def rollout_shard_task(plan: ShardPlan, index: int, flow_run_id: str | None) -> ShardResult:
    """One shard on one Dask worker, into Parquet files; reads the lake, never writes it."""
    return run_shard(plan, index, flow_run_id, progress=rollout_progress(f"shard {index}"))


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)
def commit_shards_task(plan: ShardPlan, results: list[ShardResult],
                       overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    settings, lake = open_lake(overrides)
    return _summary(commit_shards(settings, lake, plan, results))


@flow(name="rollout-fanout")
def rollout_fanout_flow(request: RolloutRequest, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plan shards here, run them on the flow's task runner (Dask), commit them here in one transaction."""
    plan = plan_shards_task(request, overrides)
    shards = rollout_shard_task.map(unmapped(plan), range(len(plan.shards)), unmapped(current_flow_run_id()))
    return commit_shards_task(plan, [shard.result() for shard in shards], overrides)


def dask_task_runner(settings: Settings, workers: int):
    """The scheduler at rollout.dask_address, else a local cluster of `workers` single-threaded processes."""
    from prefect_dask import DaskTaskRunner  # the `scale` extra; only fan-outs need it

    if settings.rollout.dask_address:
        return DaskTaskRunner(address=settings.rollout.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def run_rollout(options: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Inside a flow: resolve the request, then one rollout task, or the fan-out subflow for several workers."""
    request = request_task(options, overrides)
    if request.workers <= 1:
        return rollout_task(request, overrides)
    settings, _ = open_lake(overrides)
    fanout = rollout_fanout_flow.with_options(task_runner=dask_task_runner(settings, request.workers))
    return fanout(request, overrides)


@flow(name="rollout")
def rollout_flow(env: str | None = None, split: str | None = None, mode: str | None = None,
                 tasks: int | None = None, task_ids: list[str] | None = None, sample: int | None = None,
                 trials: int | None = None, adapter: str | None = None, tag: str = "", workers: int | None = None,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Roll out one mode on one split; None parameters come from the settings."""
    options = {"env": env, "split": split, "mode": mode, "tasks": tasks, "task_ids": task_ids, "sample": sample,
               "trials": trials, "adapter": adapter, "tag": tag, "workers": workers}
    return run_rollout(options, overrides)


if __name__ == "__main__":
    rollout_flow()
