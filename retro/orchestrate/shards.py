"""One rollout over several workers: plan shards, run each into Parquet, commit them once.

  1. plan    - (one process) create the lake, pick the request's tasks and split them into shards
  2. run     - (each worker) load the models, build the run's spec over *all* tasks (so the run id is the
               one a single process would use), run the batched Runner on the shard's tasks into a
               StagingLake, seeded with what the lake already holds of them, and flush it to Parquet
  3. commit  - (one process) add every shard's files to the lake in one transaction, record the run's end

Workers read the lake (resume state, adapters) but never write it, so the catalog has one writer at a
time whatever the number of workers. A task's trials never depend on other tasks, so the rows equal
those of a single-process run of the same tasks (timings and timestamps aside). A failed shard is the
unit of retry: it reruns from what the lake held when it started.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retro.agent import spec as run_spec  # through the module: tests swap load_models for scripted LLMs
from retro.agent.request import RolloutRequest, pick_tasks
from retro.agent.runner import ProgressFn, Runner, RunResult
from retro.config import Settings, load_settings
from retro.envs import get_env
from retro.eval.metrics import success_by_trial
from retro.provenance import code_version
from retro.store import queries
from retro.store.lake import Lake
from retro.store.staging import StagingLake, commit_staged, shard_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardPlan:
    """What every worker needs: the resolved settings (so all hash the same config), the request, its tasks
    and the shards they are split into."""

    settings: dict[str, Any]  # Settings.model_dump(mode="json"); rebuilt with load_settings(**settings)
    request: RolloutRequest
    task_ids: tuple[str, ...]
    shards: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class ShardResult:
    run_id: str
    index: int
    staged: dict[str, int]  # rows per table in the shard's files
    folder: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    retried: int = 0  # model calls a served backend retried


def split_tasks(task_ids: list[str] | tuple[str, ...], n_shards: int) -> tuple[tuple[str, ...], ...]:
    """Round-robin into at most `n_shards` non-empty shards (neighbouring tasks, often alike, spread out)."""
    n = max(1, min(n_shards, len(task_ids)))
    return tuple(tuple(task_ids[i::n]) for i in range(n))


def plan_shards(settings: Settings, lake: Lake, request: RolloutRequest) -> ShardPlan:
    """Step 1, in the process that will commit: the request's tasks in `request.workers` shards."""
    lake.init()  # the only catalog write before the commit; workers open the lake read-only
    task_ids = tuple(pick_tasks(settings, get_env(request.env, settings), request))
    resolved = {**settings.model_dump(mode="json"), "home": str(settings.home.resolve())}  # same paths on workers
    return ShardPlan(resolved, request, task_ids, split_tasks(task_ids, request.workers))


def run_shard(plan: ShardPlan, index: int, flow_run_id: str | None = None,
              models: run_spec.Models | None = None, progress: ProgressFn | None = None) -> ShardResult:
    """Step 2, on a worker: run shard `index` of the plan into `<staging>/<run_id>/shard-NN/*.parquet`."""
    settings = load_settings(**plan.settings)
    lake = Lake(settings, create=False)
    request = plan.request
    environment = get_env(request.env, settings)
    models = models or run_spec.load_models(settings, request)
    spec = run_spec.make_spec(settings, models, request.mode, request.env, request.split, list(plan.task_ids),
                              request.trials, request.tag)
    shard = plan.shards[index]
    staging = StagingLake()
    try:
        resumed = staging.seed(lake, spec.run_id, shard)
        runner = Runner(staging, environment, models.actor, models.retro, spec, flow_run_id=flow_run_id,
                        config_json=settings.config_json(), config_hash=settings.config_hash(),
                        code_version=code_version(), shard=shard, progress=progress)
        result = runner.run()
        folder = shard_dir(settings.staging_dir / spec.run_id, index)
        staged = staging.flush(folder)
    finally:
        staging.close()
    log.info("run %s shard %d: %d tasks, %d trials resumed, %d new trials staged in %s", spec.run_id, index,
             len(shard), resumed, result.written["trials"], folder)
    return ShardResult(spec.run_id, index, staged, str(folder), result.prompt_tokens, result.completion_tokens,
                       result.seconds, result.retried)


def commit_shards(settings: Settings, lake: Lake, plan: ShardPlan, results: list[ShardResult]) -> RunResult:
    """Step 3, in one process: every shard's files into the lake in one transaction, then the run's end."""
    run_ids = {r.run_id for r in results}
    if len(run_ids) != 1 or len(results) != len(plan.shards):
        raise RuntimeError(f"shards disagree on the run ({sorted(run_ids)}) or are missing "
                           f"({len(results)} of {len(plan.shards)}): do the workers run the same code and models?")
    run_id = run_ids.pop()
    written = commit_staged(lake, Path(results[0].folder).parent)
    written = {name: written.get(name, 0) for name in ("trials", "steps", "reflections")}
    trials = plan.request.trials
    curve = success_by_trial(queries.committed_trials(lake, run_id), len(plan.task_ids), trials)
    retried = sum(r.retried for r in results)
    queries.record_run_end(lake, run_id, "completed",
                           {"success_by_trial": curve, "written": written, "retried": retried})
    log.info("run %s: %d shards committed, success by trial %s (%d new trials)", run_id, len(results),
             " ".join(f"{x:.2f}" for x in curve), written["trials"])
    return RunResult(run_id, len(plan.task_ids), trials, curve, written, sum(r.prompt_tokens for r in results),
                     sum(r.completion_tokens for r in results), max(r.seconds for r in results), retried)
