"""One rollout in this process: the request's tasks, the models for its mode, the batched runner."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from retro.agent import spec as run_spec  # through the module: tests swap load_models for scripted LLMs
from retro.agent.request import RolloutRequest, pick_tasks
from retro.agent.runner import ProgressFn, Runner, RunResult
from retro.config import Settings
from retro.envs import get_env
from retro.errors import LakeBusyError
from retro.provenance import code_version
from retro.store.lake import Lake
from retro.store.lock import file_lock
from retro.store.registry import record_serving

log = logging.getLogger(__name__)


def rollout(settings: Settings, lake: Lake, request: RolloutRequest, *, flow_run_id: str | None = None,
            models: run_spec.Models | None = None, progress: ProgressFn | None = None) -> RunResult:
    """Run the request's N tasks x K trials and commit everything to the lake (resumable, idempotent).

    `models` lets tests pass scripted LLMs.
    """
    environment = get_env(request.env, settings)
    task_ids = pick_tasks(settings, environment, request)
    if models is None:
        models = run_spec.load_models(settings, request)
        if request.mode == "retroformer":  # where the adapter answered from (a served one is recorded)
            record_serving(lake, request.adapter, models.retro)
    spec = run_spec.make_spec(settings, models, request.mode, request.env, request.split, task_ids,
                              request.trials, request.tag)
    runner = Runner(lake, environment, models.actor, models.retro, spec, flow_run_id=flow_run_id,
                    config_json=settings.config_json(), config_hash=settings.config_hash(),
                    code_version=code_version(), progress=progress)
    log.info("rollout %s: %s on %s/%s, %d tasks x %d trials", spec.run_id, request.mode, request.env,
             request.split, len(task_ids), request.trials)
    with run_lease(lake, spec.run_id):
        return runner.run()


@contextlib.contextmanager
def run_lease(lake: Lake, run_id: str) -> Iterator[None]:
    """One process at a time per run. Two processes running the same run would each commit their own
    trajectory of a trial, and the lake would keep parts of both (a trial's steps and reflection are keyed
    like the trial), so the second one stops at once; a LakeBusyError, which flows retry. It is the lake's
    own file lock (retro/store/lock.py), taken without waiting: the kernel drops it when its holder dies,
    SIGKILL included, so a crashed run resumes with no cleanup.
    A PostgreSQL catalog spans machines, where a file lock cannot reach: runs there go through the
    fan-out flow, which writes each run once.
    """
    if lake.shared_catalog:
        yield
        return
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(lake.dir / ".runs" / f"{run_id}.lock", exclusive=True, timeout_s=0))
        except LakeBusyError:
            raise LakeBusyError(
                f"run {run_id} is already running in another process: wait for it (rerunning then resumes the "
                "run), or make this a separate run with --tag"
            ) from None
        yield
